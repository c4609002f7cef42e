"""TLS between nodes, pinned by the members' signed ``announce`` records (SPEC section 10.5).

No certificate authority is involved. A node's certificate is self-signed (``hashmesh init``
makes one: ECDSA P-256, ``HOME/tls.crt`` and ``HOME/tls.key`` with mode 0600) or the
operator's own; what peers trust is the SHA-256 of its SubjectPublicKeyInfo (the *SPKI
fingerprint*, 64 hex), which the member announces in a record signed with its member key.

Client side, every ``https://`` peer connection is pinned: the handshake runs without chain or
host name verification, then ``SpkiPin.check`` compares the SPKI of the certificate the peer
presented with the pin before a single request byte is sent, and closes the connection on a
mismatch. A certificate that a public CA signed is refused like any other: only the pin counts.
We pin the SPKI rather than the whole certificate (what ``aiohttp.Fingerprint`` does) so that a
certificate renewed over the same key keeps its pin; ``SpkiPin`` plugs into aiohttp as a
``Fingerprint`` (the connector calls ``check(transport)`` right after the handshake).

Where a pin comes from, strongest first: the peer member's latest ``announce`` (``tls``), the
seed URL in config (``https://host:7400/#spki=<hex>``), trust on first use when
``[tls] tofu = true`` (off by default). With none of these an ``https`` peer is not contacted.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import http.client
import ipaddress
import logging
import os
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yarl import URL

from node.config import NodeConfig, TlsConfig, is_loopback_host
from node.errors import ConfigError, PeerError

log = logging.getLogger("hashmesh.tls")

CERT_VALIDITY_DAYS = 3650  # expiry is not checked by pinning peers; rotate by announcing
SPKI_HEX_CHARS = 64


class TlsRefusedError(PeerError):
    """A peer connection refused for transport security: a pin mismatch, no pin, plain HTTP.

    ``reason`` is one of ``mismatch``, ``no_pin``, ``plain_http`` (the metrics label).
    """

    title = "TLS refused"

    def __init__(
        self, message: str, *, reason: str, expected: str | None = None, got: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.expected = expected
        self.got = got


# ---- certificates --------------------------------------------------------------------------


def spki_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER SubjectPublicKeyInfo, 64 lowercase hex."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def spki_fingerprint_der(der: bytes) -> str:
    return spki_fingerprint(x509.load_der_x509_certificate(der))


def load_certificate(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the TLS certificate {path}: {e}") from e
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise ConfigError(f"{path} is not a PEM certificate: {e}") from e


def create_certificate(
    cert_path: Path,
    key_path: Path,
    *,
    name: str,
    hosts: Sequence[str] = (),
    now: datetime.datetime,
) -> str:
    """A new P-256 key (file mode 0600, never overwritten) and a self-signed certificate.

    hosts become subjectAltNames (IP or DNS) for tools like curl; peers ignore them.
    Returns the SPKI fingerprint.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hashmesh node {name}"[:64])])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    names = _alt_names(hosts)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(key, hashes.SHA256())
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem_key)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return spki_fingerprint(certificate)


def _alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h for h in hosts if h and h not in ("0.0.0.0", "::")):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


# ---- this node's TLS -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeTls:
    """This node's transport settings, resolved from config and the certificate files."""

    config: TlsConfig
    cert_path: Path
    key_path: Path
    spki: str | None  # the fingerprint this member announces (None: nothing to pin)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def server_context(self) -> ssl.SSLContext | None:
        """The HTTPS server context, or None when TLS is off (plain HTTP)."""
        if not self.enabled:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_path, self.key_path)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"cannot load the TLS certificate {self.cert_path} with key {self.key_path}: {e}"
            ) from e
        return context


def load_node_tls(config: NodeConfig, *, now: datetime.datetime) -> NodeTls:
    """This node's TLS; creates the default certificate pair if TLS is on and both are missing.

    With TLS off, ``proxy_cert`` (the certificate a TLS-terminating proxy presents) is what the
    member announces; without it the announce carries no fingerprint.
    """
    tls = config.tls
    cert_path, key_path = config.tls_cert_path, config.tls_key_path
    if not tls.enabled:
        return NodeTls(tls, cert_path, key_path, card_spki(config))
    defaults = TlsConfig()
    if (tls.cert, tls.key) == (defaults.cert, defaults.key) and not (
        cert_path.exists() or key_path.exists()
    ):
        hosts = [config.host, *url_hosts(config.url)]
        create_certificate(cert_path, key_path, name=config.name, hosts=hosts, now=now)
        log.warning("created a new TLS certificate %s (none was found)", cert_path)
    if not key_path.exists():
        raise ConfigError(f"the TLS key {key_path} does not exist (see [tls] in config.toml)")
    return NodeTls(tls, cert_path, key_path, spki_fingerprint(load_certificate(cert_path)))


def url_hosts(url: str) -> list[str]:
    host = URL(url).host
    return [host] if host else []


def card_spki(config: NodeConfig) -> str | None:
    """The fingerprint this node announces, read from its files without creating any."""
    tls = config.tls
    if tls.enabled and config.tls_cert_path.exists():
        return spki_fingerprint(load_certificate(config.tls_cert_path))
    if not tls.enabled and tls.proxy_cert:
        return spki_fingerprint(load_certificate(config.home / tls.proxy_cert))
    return None


def seed_url(url: str, spki: str | None) -> str:
    """The URL other members put in their ``peers`` to reach this node, pinned."""
    return f"{url}#spki={spki}" if spki and url.startswith("https://") else url


def loopback_only(listen_host: str, url: str | None) -> bool:
    """Is a node listening on listen_host and announcing url reachable from this host only?"""
    return is_loopback_host(listen_host) and (
        url is None or all(map(is_loopback_host, url_hosts(url)))
    )


# ---- pinning peers -------------------------------------------------------------------------


def announced_pins(endpoints: Iterable[Mapping[str, object]]) -> dict[str, str]:
    """URL -> the SPKI fingerprint its member announces (``Store.endpoints()`` rows), for the
    URLs announced with exactly one fingerprint (SPEC 10.5: of two members announcing one URL
    with different keys, at most one tells the truth, so neither pins it)."""
    seen: dict[str, set[str | None]] = {}
    for endpoint in endpoints:
        tls = endpoint.get("tls")
        urls = endpoint.get("urls")
        for url in urls if isinstance(urls, list) else []:
            seen.setdefault(str(url), set()).add(tls if isinstance(tls, str) else None)
    return {url: pin for url, pins in seen.items() if len(pins) == 1 and (pin := next(iter(pins)))}


class SpkiPin(aiohttp.Fingerprint):
    """An aiohttp ``ssl=`` value that accepts only a certificate with this SPKI fingerprint.

    aiohttp connects with an unverified context when ``ssl`` is a ``Fingerprint`` and calls
    ``check`` on the new transport before it sends anything; a mismatch closes the connection.
    Keep one object per pin (aiohttp keys its connection pool by it) so connections are reused.
    """

    def __init__(self, spki: str, on_seen: Callable[[str], None] | None = None) -> None:
        super().__init__(bytes.fromhex(spki))
        self.spki = spki
        self.on_seen = on_seen  # trust on first use: record, do not compare

    def __repr__(self) -> str:  # aiohttp puts it into connection error messages
        return "TLS trust on first use" if self.on_seen else f"TLS pinned to SPKI {self.spki}"

    def check(self, transport: asyncio.Transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        got = spki_fingerprint_der(der) if der else "0" * SPKI_HEX_CHARS
        if self.on_seen is not None:
            self.on_seen(got)
            return
        if got != self.spki:
            host, port, *_ = transport.get_extra_info("peername") or ("?", 0)
            raise aiohttp.ServerFingerprintMismatch(
                bytes.fromhex(self.spki), bytes.fromhex(got), host, port
            )


def describe_mismatch(url: str, error: aiohttp.ServerFingerprintMismatch) -> TlsRefusedError:
    expected, got = error.expected.hex(), error.got.hex()
    return TlsRefusedError(
        f"TLS pin mismatch at {url}: the peer presented a certificate with SPKI sha256 {got}, "
        f"pinned is {expected}; connection refused",
        reason="mismatch",
        expected=expected,
        got=got,
    )


def connect_pinned(
    host: str, port: int, spki: str, *, timeout: float = 10.0
) -> http.client.HTTPSConnection:
    """A blocking HTTPS connection to a node, refused unless its key is ``spki`` (for tools
    that are not the gossip client, e.g. auditing a live node)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pin below is the verification
    connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    connection.connect()
    sock = connection.sock
    der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
    got = spki_fingerprint_der(der) if der else "0" * SPKI_HEX_CHARS
    if got != spki:
        connection.close()
        raise TlsRefusedError(
            f"TLS pin mismatch at {host}:{port}: SPKI sha256 {got}, pinned is {spki}",
            reason="mismatch",
            expected=spki,
            got=got,
        )
    return connection
