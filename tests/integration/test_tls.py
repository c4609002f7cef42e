"""Transport security (issue 8): federations over HTTPS, pinned by signed announce records.

Real ``hashmesh serve`` processes on 127.0.0.1. An impostor holding a certificate that a CA
the nodes' TLS library trusts has signed is refused: only the announced key fingerprint counts.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from harness import NodeProc, found_federation, wait_until, write_config
from prometheus_client.parser import text_string_to_metric_families

from node.config import load_config, split_seed
from node.errors import ConfigError
from node.net.tls import TlsRefusedError, connect_pinned, load_certificate, spki_fingerprint

PDQ = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22"
NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture
def stop_all() -> Iterator[list[NodeProc]]:
    started: list[NodeProc] = []
    yield started
    for node in started:
        node.stop()


def start(
    nodes: list[NodeProc], started: list[NodeProc], env: dict[str, str] | None = None
) -> None:
    for node in nodes:
        node.start(env)
        started.append(node)


def peer(node: NodeProc, url: str) -> dict[str, Any]:
    peers = {p["url"]: p for p in node.api("GET", "/v1/status")["peers"]}
    return dict(peers.get(url, {}))


def pinned_by_announce(node: NodeProc, other: NodeProc, spki: str | None = None) -> bool:
    tls = peer(node, other.url).get("tls") or {}
    return tls == {"pin": spki or other.spki, "source": "announce"}


def active_ids(node: NodeProc) -> set[str]:
    return {s["id"] for s in node.api("GET", "/v1/signals?active=true&limit=100")["signals"]}


def metric(node: NodeProc, name: str, **labels: str) -> float:
    url = f"http://127.0.0.1:{node.local_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0


# ---- an impostor signed by a "public" CA ----------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_signed_cert(root: Path) -> tuple[Path, Path, Path]:
    """A CA (ca.pem) and a certificate for 127.0.0.1 it signed (cert.pem, key.pem)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Test Public CA"))
        .issuer_name(_name("Test Public CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = root / "ca.pem", root / "impostor.pem", root / "impostor.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class Impostor:
    """An HTTPS server on a node's port that answers everything and counts requests."""

    def __init__(self, port: int, cert: Path, key: Path) -> None:
        self.requests = 0
        impostor = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                impostor.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def do_POST(self) -> None:
                self.do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- tests -------------------------------------------------------------------------------


def test_federation_over_pinned_tls_converges_and_refuses_an_impostor(
    tmp_path: Path, stop_all: list[NodeProc]
) -> None:
    _, nodes = found_federation(tmp_path, ["a", "b", "c"], tls=True)
    a, c = nodes[0], nodes[2]
    ca, impostor_cert, impostor_key = make_ca_signed_cert(tmp_path)
    # the nodes' TLS library trusts the impostor's CA: only the pin can refuse it
    start(nodes, stop_all, env={"SSL_CERT_FILE": str(ca)})
    assert all(n.url.startswith("https://") for n in nodes)

    added = a.api("POST", "/v1/signals", {"type": "pdq", "value": PDQ, "labels": ["entity:x"]})
    wait_until(lambda: all(added["id"] in active_ids(n) for n in nodes), timeout=20)
    # every member announced its key, and every node pins its peers by those announces
    wait_until(lambda: all(pinned_by_announce(n, o) for n in nodes for o in nodes if o is not n))
    with pytest.raises(OSError):  # the peer port speaks only TLS (no plain HTTP answer)
        urllib.request.urlopen(f"http://127.0.0.1:{a.port}/healthz", timeout=5).close()
    connection = connect_pinned("127.0.0.1", a.port, a.spki)  # a presents its announced key
    connection.request("GET", "/healthz")
    assert connection.getresponse().status == 200
    connection.close()
    with pytest.raises(TlsRefusedError):
        connect_pinned("127.0.0.1", a.port, c.spki)

    c.stop()
    stop_all.remove(c)
    impostor = Impostor(c.port, impostor_cert, impostor_key)
    try:
        before = metric(a, "hashmesh_tls_pin_failures_total", peer=c.url, reason="mismatch")
        reply = a.api("POST", "/v1/sync", {"peer": c.url})
        assert [e["peer"] for e in reply["errors"]] == [c.url]
        assert "TLS pin mismatch" in reply["errors"][0]["error"]
        error = peer(a, c.url)["last_error"]
        assert error.startswith("TLS refused (mismatch)") and c.spki in error
        after = metric(a, "hashmesh_tls_pin_failures_total", peer=c.url, reason="mismatch")
        # at least this sync's refusal; the background gossip round may have met the impostor too
        assert after >= before + 1
        assert "refused peer" in a.log() and "TLS pin mismatch" in a.log()
        assert impostor.requests == 0  # refused in the handshake: no signed request leaked
    finally:
        impostor.close()


def test_rotated_certificate_is_announced_and_re_pinned(
    tmp_path: Path, stop_all: list[NodeProc]
) -> None:
    _, nodes = found_federation(tmp_path, ["a", "b"], tls=True)
    a, b = nodes
    start(nodes, stop_all)
    wait_until(lambda: pinned_by_announce(a, b) and pinned_by_announce(b, a))
    old = b.spki
    b.stop()
    (b.home / "tls.crt").unlink()
    (b.home / "tls.key").unlink()
    b.start()  # a new key pair is created and announced
    assert b.spki != old
    wait_until(lambda: pinned_by_announce(a, b, b.spki), timeout=20)
    wait_until(lambda: a.api("POST", "/v1/sync", {"peer": b.url})["errors"] == [])
    assert peer(a, b.url)["last_error"] is None


def test_unpinned_and_plain_seeds_are_refused_until_an_announce_pins_them(
    tmp_path: Path, stop_all: list[NodeProc]
) -> None:
    _, nodes = found_federation(tmp_path, ["a", "b"], tls=True)
    a, b = nodes
    plain = "http://127.0.0.1:9/"
    a.peers = [b.url, plain]  # b without #spki=, and a plain-HTTP URL
    write_config(a)
    start([a], stop_all)
    reply = a.api("POST", "/v1/sync", {})
    errors = {e["peer"]: e["error"] for e in reply["errors"]}
    assert "no TLS pin" in errors[b.url] and "plain HTTP" in errors[plain]
    assert metric(a, "hashmesh_tls_pin_failures_total", peer=b.url, reason="no_pin") == 1
    assert metric(a, "hashmesh_tls_pin_failures_total", peer=plain, reason="plain_http") == 1
    start([b], stop_all)  # b seeds a pinned, pushes its announce, and a pins b from it
    wait_until(lambda: pinned_by_announce(a, b), timeout=20)
    wait_until(lambda: a.api("POST", "/v1/sync", {"peer": b.url})["errors"] == [])


def test_seed_pins_and_tls_config(tmp_path: Path) -> None:
    pin = "ab" * 32
    assert split_seed(f"https://Node.Example:7400/#spki={pin.upper()}") == (
        "https://node.example:7400/",
        pin,
    )
    assert split_seed("https://node.example/") == ("https://node.example/", None)
    for bad in (f"http://x/#spki={pin}", "https://x/#spki=12", f"https://x/#sha={pin}"):
        with pytest.raises(ConfigError):
            split_seed(bad)
    home = tmp_path / "n"
    home.mkdir()
    config = home / "config.toml"
    config.write_text(f'name = "n"\npeers = ["https://p.example/#spki={pin}"]\n')
    loaded = load_config(home, env={})
    assert loaded.tls.enabled and loaded.url == "https://127.0.0.1:7400/"
    assert loaded.seed_pins == {"https://p.example/": pin}
    assert loaded.api_address == ("127.0.0.1", 7401)
    for text, message in (
        ('name = "n"\nurl = "http://n.example/"\n', "not https"),
        ('name = "n"\n[tls]\nenabled = "false"\n', "not a value of its type"),
        ('name = "n"\napi_listen = "0.0.0.0:7401"\n', "loopback"),
    ):
        config.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(home, env={})


def test_announced_pins_need_exactly_one_fingerprint_per_url() -> None:
    from node.net.tls import announced_pins

    one, two = "ab" * 32, "cd" * 32
    endpoints = [
        {"member": "m1", "urls": ["https://a.example/", "https://shared.example/"], "tls": one},
        {"member": "m2", "urls": ["https://b.example/", "https://shared.example/"], "tls": two},
        {"member": "m3", "urls": ["https://c.example/"], "tls": None},
    ]
    assert announced_pins(endpoints) == {"https://a.example/": one, "https://b.example/": two}


def test_init_chooses_tls_unless_loopback_only(tmp_path: Path) -> None:
    from node.home import init_home
    from node.net.tls import card_spki, load_certificate

    public = init_home(tmp_path / "p", name="p", listen="0.0.0.0:7400", url="https://p.example/")
    local = init_home(tmp_path / "l", name="l", listen="127.0.0.1:7400")
    assert load_config(public.path, env={}).tls.enabled
    assert not load_config(local.path, env={}).tls.enabled
    key = public.path / "tls.key"
    assert key.stat().st_mode & 0o777 == 0o600
    certificate = load_certificate(public.path / "tls.crt")
    assert card_spki(load_config(public.path, env={})) == spki_fingerprint(certificate)
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["p.example"]
    with pytest.raises(ConfigError, match="plain HTTP"):  # a public node announcing http://
        init_home(tmp_path / "h", name="h", listen="0.0.0.0:7400", url="http://h.example/")
    assert not (tmp_path / "h").exists()


def test_behind_a_tls_terminating_proxy_signed_https_requests_verify(tmp_path: Path) -> None:
    """TLS off, url https (a proxy terminates TLS): peers sign https:// target URIs, and the
    node sees plain HTTP from the proxy; it must verify them as https, and announce the
    proxy certificate's key."""
    import asyncio
    import time

    from aiohttp.test_utils import TestClient, TestServer

    from node.home import NodeHome
    from node.net.app import make_app
    from node.net.context import NODE
    from node.net.httpsig import sign_request

    _, [a, b] = found_federation(tmp_path, ["a", "b"])
    _, proxy_cert, _ = make_ca_signed_cert(tmp_path)
    text = (a.home / "config.toml").read_text().replace(a.url, "https://hashmesh.example/")
    (a.home / "config.toml").write_text(text + f'proxy_cert = "{proxy_cert}"\n')
    config = load_config(a.home, env={})
    member = NodeHome(b.home).key()

    async def exchange() -> tuple[int, int, int, str | None]:
        app = make_app(config)
        async with TestClient(TestServer(app)) as client:
            proxied = {"Host": "hashmesh.example"}  # the proxy forwards Host unchanged
            signed = sign_request(
                member, "GET", "https://hashmesh.example/v1/heads", b"", now_s=time.time()
            )
            good = await client.get("/v1/heads", headers=signed | proxied)
            signed = sign_request(
                member, "GET", "http://hashmesh.example/v1/heads", b"", now_s=time.time()
            )
            plain = await client.get("/v1/heads", headers=signed | proxied)
            authority = f"{client.host}:{client.port}"  # the node's own socket, not its URL
            signed = sign_request(
                member, "GET", f"https://{authority}/v1/heads", b"", now_s=time.time()
            )
            direct = await client.get("/v1/heads", headers=signed)
            return good.status, plain.status, direct.status, app[NODE].tls.spki

    good, plain, direct, announced = asyncio.run(exchange())
    assert (good, plain, direct) == (200, 401, 421)
    assert announced == spki_fingerprint(load_certificate(proxy_cert))
