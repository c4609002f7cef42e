"""Real networks for federation tests: one Linux network namespace per node, a switch between.

``Lab`` creates, for one test run, a *switch* namespace holding two bridges and one namespace
per host, each host linked to the switch by a veth pair (``eth0`` in the host, ``pN`` on the
switch) with an address in 10.77.0.0/24. Nothing is created in the namespace the tests run
in, so no traffic leaves the namespaces the lab made, and every run has its own names
(``hmt-<pid>-<random>-…``): parallel runs and leftovers of a killed run do not clash.
Deleting the namespaces removes every link and bridge with them.

A partition is made at the link layer, the way a failed switch makes it: ``partition`` moves
the switch ports of all but the first group onto other bridges, so frames between groups
are dropped without an answer (no RST, no ICMP), and ``heal`` puts every port back on the
first bridge. Only iproute2 is needed, no firewall.

The tests talk to a node's loopback-only local API from outside its namespace through
``ns_connect``: a short-lived thread enters the namespace (``setns`` changes the network
namespace of the calling thread only) and opens the TCP connection there; the socket stays
in that namespace after the thread ends.

``unavailable()`` says why a machine cannot run this (not Linux, not root, no ``ip``, or
creating a namespace failed), so the tests can skip with that reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import REPO, wait_until

from node.home import NodeHome, init_home
from protocol.federation import Federation, Founder, draft_genesis, sign_genesis, verify_genesis

PREFIX = "hmt-"
SUBNET = "10.77.0"
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


# root's PATH has /usr/sbin; a CI runner's may not
IP = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin") or "ip"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; a failure raises with ip's own message."""
    result = subprocess.run([IP, *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (run as root, e.g. in CI)"
    if not os.path.isabs(IP):
        return "the ip command (Debian package iproute2) is not installed"
    probe = f"{PREFIX}{os.getpid()}-probe-{secrets.token_hex(2)}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:  # what a lab needs inside it: a veth pair and a bridge
        for link in (["v0", "type", "veth", "peer", "name", "v1"], ["br0", "type", "bridge"]):
            made = ip("-n", probe, "link", "add", *link, check=False)
            if made.returncode != 0:
                return f"cannot create a {link[2]} link in a namespace: {made.stderr.strip()}"
    finally:
        ip("netns", "del", probe, check=False)
    return None


def remove_stale() -> None:
    """Delete the namespaces of lab runs whose process is gone (a run killed mid-test)."""
    listing = ip("netns", "list", check=False).stdout.split()
    for name in listing:
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            ip("netns", "del", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ns_connect(ns: str, address: tuple[str, int], timeout: float) -> socket.socket:
    """A TCP connection to address, made from inside network namespace ns."""
    outcome: dict[str, Any] = {}

    def connect() -> None:
        try:
            with (NETNS_DIR / ns).open("rb") as handle:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns into {ns}: {os.strerror(errno)}")
            outcome["socket"] = socket.create_connection(address, timeout=timeout)
        except OSError as e:
            outcome["error"] = e

    thread = threading.Thread(target=connect, name=f"connect in {ns}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    sock: socket.socket = outcome["socket"]
    return sock


class _NsConnection(http.client.HTTPConnection):
    def __init__(self, ns: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.ns = ns

    def connect(self) -> None:
        self.sock = ns_connect(self.ns, (self.host, self.port), self.timeout or 10.0)


class ApiError(AssertionError):
    """The local API answered 4xx/5xx."""


class Lab:
    """Namespaces for one test run: a switch with bridges, and hosts wired to it."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.switch = f"{self.tag}-sw"
        self.hosts: list[str] = []
        self.bridges = 1

    def __enter__(self) -> Lab:
        remove_stale()
        try:
            ip("netns", "add", self.switch)
            self._up(self.switch, "lo")
            self._bridge(0)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _bridge(self, index: int) -> None:
        ip("-n", self.switch, "link", "add", f"br{index}", "type", "bridge")
        self._up(self.switch, f"br{index}")

    @staticmethod
    def _up(ns: str, device: str) -> None:
        ip("-n", ns, "link", "set", device, "up")

    def add_host(self, label: str) -> tuple[str, str]:
        """A new namespace wired to the switch's first bridge: (its name, its address)."""
        index = len(self.hosts)
        ns, address = f"{self.tag}-{label}", f"{SUBNET}.{index + 1}"
        ip("netns", "add", ns)
        self.hosts.append(ns)
        port = f"p{index}"
        ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
           "netns", self.switch)  # fmt: skip
        ip("-n", self.switch, "link", "set", port, "master", "br0")
        self._up(self.switch, port)
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        self._up(ns, "eth0")
        self._up(ns, "lo")
        return ns, address

    def partition(self, groups: Sequence[Iterable[str]]) -> None:
        """Put each group of hosts (namespace names) on its own bridge; hosts named in no
        group stay with the first."""
        while self.bridges < len(groups):
            self._bridge(self.bridges)
            self.bridges += 1
        for bridge, group in enumerate(groups):
            for ns in group:
                port = f"p{self.hosts.index(ns)}"
                ip("-n", self.switch, "link", "set", port, "master", f"br{bridge}")

    def heal(self) -> None:
        self.partition([self.hosts])

    def close(self) -> None:
        for ns in [*self.hosts, self.switch]:
            ip("netns", "del", ns, check=False)
        self.hosts = []


@dataclass
class NsNode:
    """A ``hashmesh serve`` process inside a lab namespace, serving HTTPS on the namespace's
    address and its local API on the namespace's loopback (port + 1, plain HTTP)."""

    name: str
    ns: str
    address: str
    home: Path
    port: int = 7400
    peers: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.port}/"

    @property
    def key(self) -> str:
        return NodeHome(self.home).key().public

    @property
    def seed(self) -> str:
        from node.net.tls import load_certificate, spki_fingerprint

        return f"{self.url}#spki={spki_fingerprint(load_certificate(self.home / 'tls.crt'))}"

    @property
    def log_path(self) -> Path:
        return self.home / "serve.log"

    def write_config(self, gossip: dict[str, float]) -> None:
        peers = ", ".join(f'"{p}"' for p in self.peers)
        lines = [
            f'name = "{self.name}"',
            f'listen = "{self.address}:{self.port}"',
            f'url = "{self.url}"',
            f"peers = [{peers}]",
            f'api_listen = "127.0.0.1:{self.port + 1}"',
            "[gossip]",
            *(f"{k} = {v}" for k, v in gossip.items()),
            "[tls]",
            "enabled = true",
        ]
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    def launch(self) -> None:
        """Start serving (returns at once; ``ready`` says when it answers)."""
        env = os.environ | {"HASHMESH_HOME": str(self.home), "PYTHONPATH": str(REPO)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [IP, "netns", "exec", self.ns, sys.executable, "-m", "node", "serve",
                 "--home", str(self.home)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
            )  # fmt: skip

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.process.returncode}:\n{self.log()}")
        try:
            return self._request("GET", "/readyz", None, timeout=2)[0] == 200
        except OSError:
            return False

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """The local API (bearer token) over the namespace's loopback; parsed JSON."""
        status, answer = self._request(method, path, body, timeout=30)
        if status >= 400:
            raise ApiError(f"{self.name}: {method} {path} -> {status}: {answer[:500]!r}")
        return json.loads(answer or b"null")

    def _request(self, method: str, path: str, body: Any, timeout: float) -> tuple[int, bytes]:
        headers = {
            "Authorization": f"Bearer {NodeHome(self.home).token()}",
            "Content-Type": "application/json",
        }
        data = None if body is None else json.dumps(body).encode()
        connection = _NsConnection(self.ns, "127.0.0.1", self.port + 1, timeout)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self, tail: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-tail:]
        return ""


def start_all(nodes: Sequence[NsNode], timeout: float = 30) -> None:
    """Launch every node at once, then wait until each answers."""
    for node in nodes:
        node.launch()
    for node in nodes:
        wait_until(node.ready, timeout=timeout)


def logs(nodes: Iterable[NsNode]) -> str:
    return "\n".join(f"---- {n.name} ({n.address}) log:\n{n.log()}" for n in nodes)


def found_federation(
    lab: Lab, root: Path, names: Sequence[str], gossip: dict[str, float], threshold: int = 2
) -> tuple[Federation, list[NsNode]]:
    """A host in lab for every name, a node home there, a genesis signed by all founders and
    installed everywhere, every node seeded with the others' pinned URLs (not started)."""
    nodes = []
    for name in names:
        ns, address = lab.add_host(name)
        node = NsNode(name, ns, address, root / name)
        init_home(node.home, name=name, listen=f"{address}:{node.port}", url=node.url)
        nodes.append(node)
    document = draft_genesis("netns federation", threshold,
                             [Founder(n.name, n.key, "member") for n in nodes])  # fmt: skip
    for node in nodes:
        document = sign_genesis(document, NodeHome(node.home).key())
    federation = verify_genesis(document)
    for node in nodes:
        NodeHome(node.home).install_federation(federation)
        node.peers = [n.seed for n in nodes if n is not node]
        node.write_config(gossip)
    return federation, nodes
