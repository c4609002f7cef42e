"""Real federations for tests: node homes, a signed genesis, `hashmesh serve` processes.

Nothing is mocked: each node is a separate OS process with its own SQLite file, talking
signed HTTP to the others on 127.0.0.1. Waiting is always on a condition with a deadline.

By default nodes talk plain HTTP (``[tls] enabled = false``). With ``tls=True`` they serve
HTTPS with their home's certificate, seed each other with pinned URLs
(``https://127.0.0.1:PORT/#spki=…``), and tests reach the local API on the plain loopback
``api_listen`` port.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.home import NodeHome, init_home
from protocol.federation import Federation, Founder, draft_genesis, sign_genesis, verify_genesis

REPO = Path(__file__).resolve().parents[1]
FAST_GOSSIP = {"interval_s": 0.3, "timeout_s": 5.0, "backoff_max_s": 2.0}


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one handed out before in this process: a node is given
    its port before it binds it, and a forwarder bound meanwhile must not take it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, step: float = 0.05) -> Any:
    """Poll condition until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


@dataclass
class NodeProc:
    name: str
    home: Path
    port: int
    peers: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    tls: bool = False
    api_port: int | None = None  # plain loopback local API (TLS nodes)
    serve_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    @property
    def local_port(self) -> int:
        return self.api_port or self.port

    @property
    def key(self) -> str:
        return NodeHome(self.home).key().public

    @property
    def spki(self) -> str:
        from node.net.tls import load_certificate, spki_fingerprint

        return spki_fingerprint(load_certificate(self.home / "tls.crt"))

    @property
    def seed(self) -> str:
        """The URL other nodes put in their peers: pinned when TLS is on."""
        return f"{self.url}#spki={self.spki}" if self.tls else self.url

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        self.log_path = self.home / "serve.log"
        env = os.environ | {"HASHMESH_HOME": str(self.home)} | (extra_env or {})
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node", "serve", "--home", str(self.home), *self.serve_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        log.close()
        wait_until(self.ready, timeout=30)

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.process.returncode}:\n{self.log()}")
        try:
            ready_url = f"http://127.0.0.1:{self.local_port}/readyz"
            with urllib.request.urlopen(ready_url, timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path else ""

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """The local API; returns parsed JSON, raises HTTPError on 4xx/5xx."""
        return call(self.local_port, NodeHome(self.home).token(), method, path, body)


def call(port: int, token: str | None, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def hm(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `hashmesh ARGS` as a user would (no HASHMESH_HOME in the environment), with this
    checkout's code from any working directory."""
    base = {k: v for k, v in os.environ.items() if k != "HASHMESH_HOME"}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "node", *map(str, args)],
        capture_output=True, text=True, env=base | (env or {}), cwd=cwd, timeout=timeout,
        check=False,
    )  # fmt: skip


def ok(*args: str | Path) -> str:
    """`hashmesh ARGS`' standard output; the command must succeed."""
    result = hm(*args)
    assert result.returncode == 0, (
        f"hashmesh {' '.join(map(str, args))}:\n{result.stdout}{result.stderr}"
    )
    return result.stdout


def ok_json(*args: str | Path) -> Any:
    return json.loads(ok(*args, "--json"))


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The result failed with exit 2 and exactly one stderr line, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hashmesh: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def write_config(
    node: NodeProc,
    gossip: dict[str, Any] | None = None,
    *,
    url: str | None = None,
    source_address: str = "",
) -> None:
    settings = FAST_GOSSIP | (gossip or {})
    peers = ", ".join(f'"{p}"' for p in node.peers)
    api = [f'api_listen = "127.0.0.1:{node.api_port}"'] if node.api_port else []
    lines = [
        f'name = "{node.name}"',
        f'listen = "127.0.0.1:{node.port}"',
        f'url = "{url or node.url}"',
        f"peers = [{peers}]",
        *api,
        f'source_address = "{source_address}"',
        "[gossip]",
        *(f"{k} = {v}" for k, v in settings.items()),
        "[tls]",
        f"enabled = {'true' if node.tls else 'false'}",
    ]
    (node.home / "config.toml").write_text("\n".join(lines) + "\n")


def found_federation(
    root: Path,
    names: Sequence[str],
    *,
    threshold: int = 2,
    topology: str = "mesh",
    gossip: dict[str, Any] | None = None,
    auditors: Sequence[str] = (),
    tls: bool = False,
) -> tuple[Federation, list[NodeProc]]:
    """Homes for every name, a genesis signed by all, installed everywhere (not started).

    topology "mesh": every node seeds every other; "line": each seeds only its neighbours.
    tls: serve HTTPS, seeds pinned by their certificates' key fingerprints.
    """
    nodes = [
        NodeProc(n, root / n, free_port(), tls=tls, api_port=free_port() if tls else None)
        for n in [*names, *auditors]
    ]
    for node in nodes:
        init_home(node.home, name=node.name, listen=f"127.0.0.1:{node.port}", url=node.url, tls=tls)
    founders = [
        Founder(n.name, n.key, "auditor" if n.name in auditors else "member") for n in nodes
    ]
    document = draft_genesis("test federation", threshold, founders)
    for node in nodes:
        document = sign_genesis(document, NodeHome(node.home).key())
    federation = verify_genesis(document)
    for i, node in enumerate(nodes):
        NodeHome(node.home).install_federation(federation)
        if topology == "mesh":
            node.peers = [n.seed for n in nodes if n is not node]
        else:
            node.peers = [nodes[j].seed for j in (i - 1, i + 1) if 0 <= j < len(nodes)]
        write_config(node, gossip)
    return federation, nodes


class Link:
    """A TCP forwarder in front of a node that can refuse chosen source addresses.

    Every node's outgoing peer connections come from its own loopback address
    (``source_address``), and every node is reached through its Link (its announced URL),
    so blocking a set of source addresses at a set of Links partitions the federation the
    way a failed network would: open connections are closed and new ones refused.
    """

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", free_port()))
        self.server.listen(64)
        self.port = int(self.server.getsockname()[1])
        self.blocked: set[str] = set()
        self.bytes = 0  # payload bytes forwarded, both directions (HTTP incl. headers)
        self.conns: dict[socket.socket, str] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, (source, _) = self.server.accept()
            except OSError:
                return
            if source in self.blocked:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns[client] = self.conns[upstream] = source
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                with self.lock:
                    self.bytes += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                _close(s)
            with self.lock:
                self.conns.pop(src, None)
                self.conns.pop(dst, None)

    def block(self, sources: set[str]) -> None:
        with self.lock:
            self.blocked = set(sources)
            doomed = [c for c, source in self.conns.items() if source in sources]
        for conn in doomed:
            _close(conn)

    def close(self) -> None:
        self.server.close()
        self.block({source for source in self.conns.values()})


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


def with_bad_signature(canonical: bytes, sig: str) -> bytes:
    """A record's bytes with the last hex digit of its signature changed (always changed: a
    fixed replacement would leave a signature that already ends in it valid)."""
    last = "0" if sig[-1] != "0" else "1"
    return canonical.replace(sig.encode(), (sig[:-1] + last).encode())
