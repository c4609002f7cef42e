"""deploy/ (issue 8): what must hold of the Dockerfile, compose.yaml, the founding script, the
systemd unit and the example config. No Docker daemon is needed: the files are parsed and
checked; the founding script and the example config are run for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from harness import found_federation

from node.config import (
    TOP_KEYS,
    GossipConfig,
    LimitsConfig,
    ModerationConfig,
    NodeConfig,
    TlsConfig,
    load_config,
    split_listen,
)
from node.net.tls import load_certificate, spki_fingerprint, spki_fingerprint_der

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
HOME = "/var/lib/hashmesh"
NODES = ("alpha", "beta", "gamma")


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
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return dict(parsed)
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
    assert set(services) == {"init", *NODES}
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
    finally:
        node.stop()


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
