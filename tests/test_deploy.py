"""deploy/ (issue 8): what must hold of the Dockerfile, compose.yaml, the founding script, the
systemd unit and the example config. No Docker daemon is needed: the files are parsed and
checked; the founding script and the example config are run for real."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tomllib
import urllib.request
from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from harness import found_federation

from node.config import (
    TOP_KEYS,
    GossipConfig,
    LimitsConfig,
    ModerationConfig,
    NodeConfig,
    TlsConfig,
    is_loopback_host,
    load_config,
    split_listen,
)
from node.net.tls import load_certificate, spki_fingerprint, spki_fingerprint_der

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
HOME = "/var/lib/hashmesh"
NODES = ("alpha", "beta", "gamma")
REPLICAS = ("replica-1", "replica-2")  # compose's match replicas, following alpha
REPLICA_PORT = 8471


# ---- a tiny YAML reader (the subset compose.yaml is written in) ----------------------------


def parse_yaml(text: str) -> Any:
    """Block mappings and sequences, plain or quoted scalars, JSON-style flow sequences."""
    lines = [
        (len(raw) - len(raw.lstrip(" ")), raw.strip())
        for raw in text.splitlines()
        if raw.strip() and not raw.strip().startswith("#")
    ]
    value, end = _block(lines, 0, lines[0][0])
    assert end == len(lines), f"unparsed YAML from line {lines[end]}"
    return value


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1].startswith("- "):
        items = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            items.append(_scalar(lines[i][1][2:]))
            i += 1
        return items, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        key, sep, rest = lines[i][1].partition(":")
        assert sep and key not in mapping, f"not a new mapping key: {lines[i][1]!r}"
        i += 1
        if rest.strip():
            mapping[key] = _scalar(rest.strip())
        elif i < len(lines) and lines[i][0] > indent:
            mapping[key], i = _block(lines, i, lines[i][0])
        else:
            mapping[key] = None
    return mapping, i


def _scalar(text: str) -> Any:
    if text.startswith(("[", '"')):
        return json.loads(text)
    if text.startswith("'"):
        return text.strip("'")
    return {"true": True, "false": False}.get(text, int(text) if text.isdigit() else text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    text = (DEPLOY / "compose.yaml").read_text()
    parsed = parse_yaml(text)
    assert parsed == yaml.safe_load(text)  # the tiny reader agrees with a real one
    return dict(parsed)


# ---- Dockerfile ----------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_runs_a_non_root_node_with_its_home_on_a_volume() -> None:
    instructions = dockerfile()
    stages = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    final = instructions[stages[-1] :]
    assert all(re.match(r"python:\S*slim", arg) for op, arg in instructions if op == "FROM")
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(arg for op, arg in final if op == "ENV")))
    assert env["HASHMESH_HOME"] == HOME
    volumes = [json.loads(arg) for op, arg in final if op == "VOLUME"]
    assert [HOME] in volumes
    [healthcheck] = [arg for op, arg in final if op == "HEALTHCHECK"]
    api_port = split_listen(env["HASHMESH_API_LISTEN"])[1]
    assert f"http://127.0.0.1:{api_port}/healthz" in healthcheck
    [entrypoint] = [json.loads(arg) for op, arg in final if op == "ENTRYPOINT"]
    [command] = [json.loads(arg) for op, arg in final if op == "CMD"]
    assert entrypoint == ["hashmesh"] and command[0] == "serve"
    assert ("EXPOSE", "7400") in final
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for op, arg in instructions:  # everything copied from the context exists and is not ignored
        if op == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                assert (DEPLOY.parent / source).exists(), source
                assert f"!{source.rstrip('/')}" in ignore, source


# ---- compose.yaml and the founding script --------------------------------------------------


def test_compose_founds_then_runs_three_nodes_with_distinct_homes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"init", *NODES, *REPLICAS}
    homes = {}
    for name in NODES:
        node = services[name]
        mounts = [v for v in node["volumes"] if v.endswith(f":{HOME}")]
        assert len(mounts) == 1, name
        homes[name] = mounts[0].split(":")[0]
        assert node["command"][0] == "serve" and "user" not in node  # the image's non-root user
        assert node["depends_on"]["init"]["condition"] == "service_completed_successfully"
        check = node["healthcheck"]
        assert check["test"][0] == "CMD" and "127.0.0.1:7401/readyz" in " ".join(check["test"])
        assert {"interval", "timeout", "retries"} <= check.keys()
        assert node["read_only"] is True and node["cap_drop"] == ["ALL"]
        assert all(p.startswith("127.0.0.1:") for p in node["ports"])
    assert len(set(homes.values())) == 3, "three distinct home volumes"
    assert set(homes.values()) <= set(compose["volumes"])
    ports = [services[n]["ports"][0].split(":")[1] for n in NODES]
    assert len(set(ports)) == 3

    init = services["init"]
    assert init["entrypoint"] == ["/bin/sh", "/deploy/found.sh"]
    assert "./found.sh:/deploy/found.sh:ro" in init["volumes"]
    for name in NODES:  # init writes each home where its node will find it
        assert f"{homes[name]}:/homes/{name}" in init["volumes"]
    assert init["environment"]["MEMBERS"].split() == list(NODES)


def test_compose_runs_two_replicas_following_the_first_node(compose: dict[str, Any]) -> None:
    services = compose["services"]
    init = services["init"]
    assert init["environment"]["REPLICAS"].split() == list(REPLICAS)
    replica_dir = init["environment"]["REPLICA_DIR"]
    [shared] = [v.split(":")[0] for v in init["volumes"] if v.endswith(f":{replica_dir}")]
    host_ports = []
    for name in REPLICAS:
        replica = services[name]
        assert replica["volumes"] == [f"{shared}:{replica_dir}:ro"]  # tokens and node URL
        assert replica["image"] == services["alpha"]["image"] and "user" not in replica
        assert replica["depends_on"] == {"alpha": {"condition": "service_healthy"}}
        shell, dash_c, script = replica["entrypoint"]
        assert (shell, dash_c) == ("/bin/sh", "-c") and script.startswith("exec hashmesh replica ")
        args = shlex.split(script.replace("$$", "$"))[3:]
        options = dict(zip(args[::2], args[1::2], strict=True))
        assert options["--node"] == f"$(cat {replica_dir}/node.url)"
        assert options["--token-file"] == f"{replica_dir}/{name}.token"
        assert options["--host"] == "0.0.0.0" and options["--port"] == str(REPLICA_PORT)
        check = " ".join(replica["healthcheck"]["test"])
        assert f"127.0.0.1:{REPLICA_PORT}/readyz" in check
        assert replica["read_only"] is True and replica["cap_drop"] == ["ALL"]
        [port] = replica["ports"]
        assert port.startswith("127.0.0.1:") and port.endswith(f":{REPLICA_PORT}")
        host_ports.append(port.split(":")[1])
        replica_command = cli_command("replica")
        if replica_command is not None:  # the options are `hashmesh replica`'s own
            replica_command.make_context("replica", [*args[:1], "https://alpha:7400/", *args[2:]])
    assert len(set(host_ports)) == len(REPLICAS)
    assert shared in compose["volumes"]


def cli_command(name: str) -> Any:
    from node.cli.main import cli

    return cli.commands.get(name)


def test_found_sh_founds_a_federation_with_pinned_seeds(tmp_path: Path) -> None:
    script = DEPLOY / "found.sh"
    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
    members = ["alpha", "beta"]  # two members keep the test short; compose founds three
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOMES": str(tmp_path / "homes"),
        "FOUNDING": str(tmp_path / "founding"),
        "MEMBERS": " ".join(members),
        "OWNER": "",
    }
    replicas = cli_command("tokens") is not None  # `hashmesh tokens` comes with issue 21
    if replicas:
        env |= {"REPLICAS": "r1 r2", "REPLICA_DIR": str(tmp_path / "replica")}
    run = subprocess.run(
        ["sh", str(script)], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr + run.stdout
    assert (tmp_path / "founding/federation.json").exists()
    homes = {m: tmp_path / "homes" / m for m in members}
    spki = {m: spki_fingerprint(load_certificate(h / "tls.crt")) for m, h in homes.items()}
    for me, home in homes.items():
        config = load_config(home, env={})
        assert config.tls.enabled and config.url == f"https://{me}:7400/"
        other = next(m for m in members if m != me)
        assert config.seed_pins == {f"https://{other}:7400/": spki[other]}
        assert (home / "federation.json").exists()
    again = subprocess.run(
        ["sh", str(script)], check=False, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0 and "already founded" in again.stdout
    if not replicas:
        assert not (tmp_path / "replica").exists()
        return
    replica_dir = tmp_path / "replica"
    node_url = (replica_dir / "node.url").read_text().strip()
    assert node_url == f"https://alpha:7400/#spki={spki['alpha']}"
    tokens = {r: (replica_dir / f"{r}.token").read_text().strip() for r in ("r1", "r2")}
    assert len(set(tokens.values())) == 2
    assert all(re.fullmatch(r"hmr_[A-Za-z0-9_-]{43}", t) for t in tokens.values()), tokens
    assert all((replica_dir / f"{r}.token").stat().st_mode & 0o077 == 0 for r in tokens)
    listed = subprocess.run(
        ["hashmesh", "tokens", "list", "--home", str(homes["alpha"])],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert "r1" in listed and "r2" in listed


# ---- systemd -------------------------------------------------------------------------------


def _unit_for_this_checkout(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at this checkout's hashmesh (verify checks
    that the executable exists); nothing else changes."""
    text = (DEPLOY / "hashmesh.service").read_text()
    exe = Path(sys.executable).parent / "hashmesh"
    assert "ExecStart=/opt/hashmesh/bin/hashmesh " in text
    unit = tmp_path / "hashmesh.service"
    unit.write_text(text.replace("/opt/hashmesh/bin/hashmesh", str(exe)))
    return unit


def test_systemd_unit_is_hardened() -> None:
    settings: dict[str, list[str]] = {}
    for line in (DEPLOY / "hashmesh.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    assert settings["User"] == ["hashmesh"] or settings.get("DynamicUser") == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["ReadWritePaths"] == [HOME]
    assert settings["Environment"] == [f"HASHMESH_HOME={HOME}"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert settings[key] == ["yes"], key
    assert settings["CapabilityBoundingSet"] == [""]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _unit_for_this_checkout(tmp_path)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if security.returncode != 0 and "offline" in security.stderr:
        return  # systemd < 250 has no offline security analysis
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
    assert match and float(match.group(1)) <= 2.0, security.stdout[-2000:]


# ---- the example config ----------------------------------------------------------------------


def test_example_config_names_every_key_with_its_default() -> None:
    data = tomllib.loads((DEPLOY / "config.example.toml").read_text())
    assert set(data) == TOP_KEYS
    top = {f.name for f in fields(NodeConfig)} - {"home", "seed_pins", "gossip", "limits", "tls"}
    assert top <= set(data)
    for section, cls in (("gossip", GossipConfig), ("limits", LimitsConfig), ("tls", TlsConfig),
                         ("moderation", ModerationConfig)):  # fmt: skip
        defaults = {f.name: getattr(cls(), f.name) for f in fields(cls)}
        assert data[section] == {k: list(v) if isinstance(v, tuple) else v
                                 for k, v in defaults.items()}, section  # fmt: skip


def test_example_config_starts_a_node(tmp_path: Path) -> None:
    _, [node] = found_federation(tmp_path, ["example"], threshold=1, tls=True)
    shutil.copy(DEPLOY / "config.example.toml", node.home / "config.toml")
    config = load_config(node.home, env={})
    assert config.name == "Example Platform Trust & Safety" and config.tls.enabled
    [(seed, pin)] = config.seed_pins.items()
    assert node.api_port is not None
    overrides = {  # free ports instead of 7400/7401; everything else as in the file
        "HASHMESH_LISTEN": f"127.0.0.1:{node.port}",
        "HASHMESH_URL": node.url,
        "HASHMESH_API_LISTEN": f"127.0.0.1:{node.api_port}",
    }
    node.start(overrides)
    try:
        status = node.api("GET", "/v1/status")
        assert status["node"]["url"] == node.url
        assert status["node"]["name"] == config.name
        [peer] = [p for p in status["peers"] if p["url"] == seed]
        assert peer["tls"] == {"pin": pin, "source": "seed"}
        served = ssl.get_server_certificate(("127.0.0.1", node.port), timeout=10)
        assert spki_fingerprint_der(ssl.PEM_cert_to_DER_cert(served)) == node.spki
        for path, answer in kubelet_probes(node.port).items():  # deploy/k8s/node.yaml
            assert answer["status"] in ("ok", "ready"), path
    finally:
        node.stop()


def kubelet_probes(port: int) -> dict[str, Any]:
    """GET every HTTP probe of the node's StatefulSet as the kubelet does: on the peer port,
    HTTPS without verifying the certificate; each must answer 200."""
    [_, _, statefulset] = k8s_documents(DEPLOY / "k8s" / "node.yaml")
    [node] = statefulset["spec"]["template"]["spec"]["containers"]
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    answers = {}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = node[kind]["httpGet"]
        assert get["scheme"] == "HTTPS" and get["port"] == "peer"
        url = f"https://127.0.0.1:{port}{get['path']}"
        timeout = node[kind]["timeoutSeconds"]
        with urllib.request.urlopen(url, timeout=timeout, context=insecure) as answer:
            assert answer.status == 200, url
            answers[get["path"]] = json.loads(answer.read())
    return answers


def test_systemd_unit_header_installs_as_the_readme_does() -> None:
    """The unit's own install steps are deploy/README.md's, in the same order: the home is
    made and initialised before the service is enabled (a node cannot start on an empty home)."""
    header = [
        line.removeprefix("#").strip()
        for line in (DEPLOY / "hashmesh.service").read_text().split("[Unit]")[0].splitlines()
    ]
    readme = (DEPLOY / "README.md").read_text().split("## systemd", 1)[1]
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    steps = [line.strip() for line in block.splitlines() if not line.startswith("journalctl")]
    assert [s for s in steps if s] == [s for s in header if s in steps]
    order = [
        s.split()[0] + " " + s.split()[1] for s in steps if s and not s.startswith(("#", "--"))
    ]
    assert order.index("sudo -u") < order.index("systemctl daemon-reload")


# ---- Kubernetes (deploy/k8s) and the replica sizing -----------------------------------------

K8S = DEPLOY / "k8s"
K8S_FLOOR = "1.29"  # the oldest Kubernetes deploy/README.md supports


def _load_sizing() -> Any:
    spec = importlib.util.spec_from_file_location("hashmesh_sizing", DEPLOY / "sizing.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


sizing = _load_sizing()


def k8s_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object kustomization.yaml applies, by (kind, name)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in k8s_documents(K8S / name):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, key
            objects[key] = doc
    return objects


def pod_specs(k8s: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: doc["spec"]["template"]["spec"]
        for (kind, name), doc in k8s.items()
        if kind in ("StatefulSet", "Deployment")
    }


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def project_version() -> str:
    return str(tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["version"])


def _final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    return instructions[[i for i, (op, _) in enumerate(instructions) if op == "FROM"][-1] :]


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_k8s_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    """Strict: an unknown or misspelt field fails too. Offline: the package bundles the
    schemas of every Kubernetes release it knows; checked at the floor and the newest."""
    if path.name == "kustomization.yaml":
        return  # not a Kubernetes object (checked by the next test)
    documents = k8s_documents(path)
    assert documents
    newest = kubernetes_validate.utils.major_minor(kubernetes_validate.utils.latest_version())
    for version in sorted({K8S_FLOOR, newest}):
        for doc in documents:
            assert kubernetes_validate.validate(doc, version, strict=True) == version


def test_k8s_validation_refuses_a_misspelt_field() -> None:
    [_, deployment, *_] = k8s_documents(K8S / "replica.yaml")
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["httpGet"]["paht"] = probe["httpGet"]["path"]
    with pytest.raises(kubernetes_validate.ValidationError, match="'paht' was unexpected") as e:
        kubernetes_validate.validate(deployment, K8S_FLOOR, strict=True)
    assert list(e.value.path)[-2:] == ["readinessProbe", "httpGet"]


def test_k8s_kustomization_applies_every_manifest_with_the_project_image(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    examples = {name for name in manifests if name.endswith(".example.yaml")}
    assert set(kustomization["resources"]) == manifests - examples
    assert [kind for kind, _ in k8s if kind == "Secret"] == []  # never applied over a real one
    [namespace] = [name for kind, name in k8s if kind == "Namespace"]
    assert kustomization["namespace"] == namespace
    image = f"hashmesh:{project_version()}"
    assert kustomization["images"] == [{"name": "hashmesh", "newTag": project_version()}]
    for name, pod in pod_specs(k8s).items():
        assert {c["image"] for c in containers(pod)} == {image}, name


def test_k8s_pods_run_restricted_with_resources_on_every_container(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """The Pod Security "restricted" profile the namespace enforces, as the Dockerfile's
    user, with a writable /tmp beside the read-only root (the image's MPLCONFIGDIR)."""
    [(user, group)] = [arg.split(":") for op, arg in _final_stage() if op == "USER"]
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for op, a in _final_stage() if op == "ENV")))
    [namespace] = [doc for (kind, _), doc in k8s.items() if kind == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, pod in pod_specs(k8s).items():
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert (str(security["runAsUser"]), str(security["runAsGroup"])) == (user, group)
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for volume in volumes.values():
            assert volume.keys() & {"emptyDir", "secret"}, volume
        for container in containers(pod):
            where = f"{name}/{container['name']}"
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, where
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                request = quantity(resources["requests"][kind])
                assert 0 < request <= quantity(resources["limits"][kind]), where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert env["MPLCONFIGDIR"].startswith("/tmp/")
            assert "emptyDir" in volumes[mounts["/tmp"]], where


def quantity(text: str | int) -> float:
    """A Kubernetes quantity ("500m", "2", "4Gi", "1920Mi") as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|Ti)?", str(text))
    assert match, text
    return float(match.group(1)) * units.get(match.group(2) or "", 1)


def test_k8s_services_reach_named_ports_of_the_pods_they_select(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    pods = {
        name: (doc["spec"]["template"]["metadata"]["labels"], doc["spec"]["template"]["spec"])
        for (kind, name), doc in k8s.items()
        if kind in ("StatefulSet", "Deployment")
    }
    exposed = {}
    for (kind, name), doc in k8s.items():
        if kind != "Service":
            continue
        selector = doc["spec"]["selector"]
        [(pod_name, pod)] = [
            (n, spec) for n, (labels, spec) in pods.items() if selector.items() <= labels.items()
        ]
        ports = {p["name"]: p["containerPort"] for c in pod["containers"] for p in c["ports"]}
        for port in doc["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"], (name, port)
        exposed[name] = (doc["spec"].get("type", "ClusterIP"), pod_name)
    assert exposed == {
        "hashmesh-node": ("ClusterIP", "hashmesh-node"),  # headless, for replicas
        "hashmesh-node-public": ("LoadBalancer", "hashmesh-node"),  # the peer port
        "hashmesh-replica": ("ClusterIP", "hashmesh-replica"),
    }
    assert k8s["Service", "hashmesh-node"]["spec"]["clusterIP"] == "None"
    assert k8s["StatefulSet", "hashmesh-node"]["spec"]["serviceName"] == "hashmesh-node"


def test_k8s_node_runs_the_image_as_the_dockerfile_does_with_its_home_on_a_claim(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    final = _final_stage()
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for op, a in final if op == "ENV")))
    [command] = [json.loads(arg) for op, arg in final if op == "CMD"]
    [exposed] = [int(arg) for op, arg in final if op == "EXPOSE"]
    statefulset = k8s["StatefulSet", "hashmesh-node"]
    assert statefulset["spec"]["replicas"] == 1  # one process per home, ever
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 20 * 2**30
    pod = statefulset["spec"]["template"]["spec"]
    [node] = pod["containers"]
    assert node["args"] == command
    node_env = {e["name"]: e["value"] for e in node["env"]}
    assert node_env["HASHMESH_HOME"] == env["HASHMESH_HOME"] == HOME
    assert node_env["HASHMESH_API_LISTEN"] == env["HASHMESH_API_LISTEN"]
    assert is_loopback_host(split_listen(node_env["HASHMESH_API_LISTEN"])[0])
    assert split_listen(node_env["HASHMESH_LISTEN"]) == ("0.0.0.0", exposed)
    assert [p["containerPort"] for p in node["ports"]] == [exposed]
    for container in containers(pod):  # the init container waits on the same home
        assert {"name": claim["metadata"]["name"], "mountPath": HOME} in container["volumeMounts"]
    [wait] = pod["initContainers"]
    assert "federation.json" in " ".join(wait["command"])
    kinds = ("startup", "liveness", "readiness")
    probes = {kind: node[f"{kind}Probe"]["httpGet"] for kind in kinds}
    assert {kind: p["path"] for kind, p in probes.items()} == {
        "startup": "/healthz",
        "liveness": "/healthz",
        "readiness": "/readyz",
    }
    assert {(p["port"], p["scheme"]) for p in probes.values()} == {("peer", "HTTPS")}
    startup = node["startupProbe"]  # as long as the Dockerfile's health check start period
    [health] = [arg for op, arg in final if op == "HEALTHCHECK"]
    start_period = int(re.search(r"--start-period=(\d+)s", health).group(1))  # type: ignore[union-attr]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= start_period


def test_k8s_replicas_scale_on_cpu_without_a_stampede(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    deployment = k8s["Deployment", "hashmesh-replica"]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = k8s["HorizontalPodAutoscaler", "hashmesh-replica"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "hashmesh-replica",
    }
    [metric] = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    target = metric["resource"]["target"]
    assert target["averageUtilization"] == round(sizing.HPA_TARGET_UTILISATION * 100)
    assert hpa["minReplicas"] == sizing.MIN_REPLICAS < hpa["maxReplicas"]
    [up] = hpa["behavior"]["scaleUp"]["policies"]  # bootstraps from the node, a few at a time
    assert up["type"] == "Pods" and up["value"] <= 2
    pdb = k8s["PodDisruptionBudget", "hashmesh-replica"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["maxUnavailable"] < sizing.MIN_REPLICAS


def test_k8s_replica_is_sized_by_deploy_sizing_py(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    [replica] = k8s["Deployment", "hashmesh-replica"]["spec"]["template"]["spec"]["containers"]
    planned = sizing.size(sizing.PLANNED_SIGNALS, sizing.TABLE_QPS)
    request, limit = f"{planned.memory_request_mib}Mi", f"{planned.memory_limit_mib}Mi"
    assert replica["resources"] == {
        "requests": {"cpu": str(sizing.CPU_REQUEST_CORES), "memory": request},
        "limits": {"cpu": str(sizing.CPU_LIMIT_CORES), "memory": limit},
    }
    startup = replica["startupProbe"]  # a first load at the planned size fits in it
    assert startup["periodSeconds"] * startup["failureThreshold"] >= planned.ready_s


def test_sizing_table_in_the_readme_is_what_sizing_py_prints() -> None:
    run = subprocess.run(
        [sys.executable, str(DEPLOY / "sizing.py")], check=True, capture_output=True, text=True
    )
    table = sizing.table()
    assert run.stdout.startswith(table + "\n")
    readme = (DEPLOY / "README.md").read_text()
    assert table in readme
    assert sizing.FIGURES.source in " ".join(readme.split())  # and says where it comes from
    one = subprocess.run(
        [sys.executable, str(DEPLOY / "sizing.py"), "--signals", "1e7", "--qps", "10000"],
        check=True,
        capture_output=True,
        text=True,
    )
    ten_million = sizing.size(10_000_000, 10_000)
    assert f"{ten_million.replicas} replicas" in one.stdout and ten_million.replicas > 2
    assert f"memory {ten_million.memory_request_mib}Mi" in one.stdout


def test_sizing_grows_with_the_list_and_the_load() -> None:
    small, large = sizing.size(1_000_000, 10_000), sizing.size(10_000_000, 10_000)
    assert small.memory_request_mib < large.memory_request_mib < large.memory_limit_mib
    assert small.qps_per_replica > large.qps_per_replica and small.replicas <= large.replicas
    assert sizing.size(10_000_000, 40_000).replicas > large.replicas
    assert sizing.size(1_000, 1).replicas == sizing.MIN_REPLICAS
    for signals, measured in sizing.FIGURES.hashes_per_cpu_s.items():  # through the figures
        assert sizing.hashes_per_cpu_s(signals) == pytest.approx(measured)
    assert small.ready_s < large.ready_s


def test_k8s_replica_runs_hashmesh_replica_as_the_pod_provides(
    k8s: dict[tuple[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Deployment's args parse with `hashmesh replica`'s own options; what they name
    (node URL variable, token file, port) is what the pod provides; the Secret's node URL
    is the node pod's in-cluster name, pinned; the probes are routes the replica serves."""
    replica_command = cli_command("replica")
    if replica_command is None:
        pytest.skip("`hashmesh replica` is not in this tree yet (issue 21, branch replica)")
    from node.replica.app import make_app
    from node.replica.settings import ReplicaSettings

    pod = k8s["Deployment", "hashmesh-replica"]["spec"]["template"]["spec"]
    [replica] = pod["containers"]
    [node_env] = replica["env"]
    secret = node_env["valueFrom"]["secretKeyRef"]
    [example] = k8s_documents(K8S / "replica-secret.example.yaml")
    assert example["metadata"]["name"] == secret["name"]
    pin = "ab" * 32
    node_url = re.sub(r"<[^>]*>", pin, example["stringData"][secret["key"]])
    node_pod = k8s["StatefulSet", "hashmesh-node"]
    peer = k8s["Service", "hashmesh-node"]["spec"]["ports"][0]["port"]
    host = f"{node_pod['metadata']['name']}-0.{node_pod['spec']['serviceName']}:{peer}"
    assert node_url == f"https://{host}/#spki={pin}"
    monkeypatch.setenv(node_env["name"], node_url)

    assert replica["args"][0] == "replica"
    params = replica_command.make_context("replica", list(replica["args"][1:])).params
    [node_option] = [p for p in replica_command.params if "--node" in p.opts]
    assert params[node_option.name] == node_url  # from the Secret, through the env variable
    assert params["host"] == "0.0.0.0" and params["port"] == REPLICA_PORT
    assert [p["containerPort"] for p in replica["ports"]] == [REPLICA_PORT]
    mounts = {m["name"]: m["mountPath"] for m in replica["volumeMounts"]}
    [token_volume] = [v for v in pod["volumes"] if "secret" in v]
    assert token_volume["secret"]["secretName"] == secret["name"]
    [item] = token_volume["secret"]["items"]
    assert str(params["token_file"]) == f"{mounts[token_volume['name']]}/{item['path']}"
    assert {secret["key"], item["key"]} == set(example["stringData"])

    options = ("host", "port", "max_lag_s", "stale")
    settings = ReplicaSettings.for_node(
        node_url, "hmr_example", **{name: params[name] for name in options}
    )
    assert settings.pin == pin and settings.node_url == f"https://{host}"
    served = {r.resource.canonical for r in make_app(settings).router.routes() if r.method == "GET"}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = replica[kind]["httpGet"]
        assert get["path"] in served and get["port"] == "http", kind
    assert replica["readinessProbe"]["httpGet"]["path"] == "/readyz"
