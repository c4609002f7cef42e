"""Signed peer requests: RFC 9421 HTTP Message Signatures with the member's Ed25519 key.

The profile (SPEC 10.1) is fixed: one signature, label ``hm``, covering exactly
``"@method" "@target-uri" "content-digest"`` in that order, with exactly the parameters
``created``, ``keyid`` (the member's public key, hex), ``alg="ed25519"``, a random ``nonce``
(16-128 characters) and ``tag="hashmesh"``; ``Content-Digest`` is one RFC 9530 SHA-256
member (present even for an empty body). The verifier refuses:

- anything outside that profile, no signature, a signature or digest that does not verify
  (401);
- ``created`` more than ``WINDOW_S`` seconds away from its clock, in either direction (401);
- a ``keyid``/``nonce`` pair it has already accepted: each is remembered until ``created`` +
  ``WINDOW_S`` has passed, the last moment it could verify again (401);
- a request signed for another node: the signed ``@target-uri`` must name one of the origins
  this node answers to (its ``url`` and ``aliases``; 421);
- a key that is not a current member's or auditor's (403).

The signing and verification are the ``http-message-signatures`` package's; this module
supplies keys, the profile, the clock window and the replay cache. Wall-clock time is a
parameter: the package's own clock check is switched off.
"""

from __future__ import annotations

import datetime
import heapq
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from yarl import URL

from node.errors import NodeError, PeerError
from protocol.keys import SigningKey, is_public_key

WINDOW_S = 300
TAG = "hashmesh"
LABEL = "hm"
ALG = "ed25519"
COVERED = ("@method", "@target-uri", "content-digest")
PARAMETERS = frozenset({"created", "keyid", "alg", "nonce", "tag"})
NONCE_CHARS = (16, 128)
SIGNATURE_FIELDS = ("signature", "signature-input", "content-digest")
MAX_REPLAY_ENTRIES = 200_000
_COVERED_IDS = [f'"{c}"' for c in COVERED]
_SHA256_DIGEST = re.compile(r"sha-256=:[A-Za-z0-9+/]{43}=:")

Origin = tuple[str, str, int]  # scheme, host, port


class SignatureRefusedError(NodeError):
    """A peer request whose signature is missing, invalid, stale, replayed or not a member's."""

    status = 401
    title = "request signature refused"


class NotAMemberError(SignatureRefusedError):
    status = 403
    title = "not a federation member"


class MisdirectedRequestError(SignatureRefusedError):
    """Signed for a URL this node does not answer to (another node's, or a made-up one)."""

    status = 421
    title = "request signed for another node"


class ReplayCacheFullError(SignatureRefusedError):
    """Every replay-cache slot holds a signature that could still verify: refuse, not forget."""

    status = 503
    title = "too many signed requests"


@dataclass(slots=True)
class _Message:
    method: str
    url: str
    headers: dict[str, str]


class _Keys(HTTPSignatureKeyResolver):
    def __init__(self, private: SigningKey | None = None) -> None:
        self.private = private

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        assert self.private is not None and key_id == self.private.public
        return Ed25519PrivateKey.from_private_bytes(self.private.seed)

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        if not is_public_key(key_id):
            return None
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_id))


class _Verifier(HTTPMessageVerifier):
    """The package's verifier without its wall-clock check (``RequestVerifier`` checks
    ``created`` against the time it is given, with the window the SPEC sets)."""

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


def sign_request(
    key: SigningKey, method: str, url: str, body: bytes, *, now_s: float
) -> dict[str, str]:
    """The headers (Content-Digest, Signature-Input, Signature) that sign this request."""
    message = _Message(method.upper(), url, {})
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_Keys(key))
    try:
        signer.sign(
            message,
            key_id=key.public,
            created=datetime.datetime.fromtimestamp(int(now_s), tz=datetime.UTC),
            nonce=secrets.token_urlsafe(12),
            tag=TAG,
            label=LABEL,
            covered_component_ids=COVERED[:2],
            body=body,
        )
    except HTTPMessageSignaturesException as e:  # a URL it cannot sign: that peer fails
        raise PeerError(f"cannot sign a request to {url}: {e}") from e
    return message.headers


def origin_of(url: str) -> Origin:
    """(scheme, host, port) of an absolute URL, the port made explicit, names lowercased."""
    parsed = URL(url)
    if not parsed.absolute or parsed.host is None or parsed.port is None:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    return parsed.scheme.lower(), parsed.host.lower(), parsed.port


def render_origin(origin: Origin) -> str:
    return str(URL.build(scheme=origin[0], host=origin[1], port=origin[2]))


class RequestVerifier:
    """Checks signed peer requests for this node; remembers accepted nonces while they could
    verify again. ``authorities`` are the URLs this node answers to (only their origins
    count); a verifier with none refuses every request."""

    def __init__(
        self,
        authorities: Iterable[str] = (),
        *,
        window_s: int = WINDOW_S,
        max_entries: int = MAX_REPLAY_ENTRIES,
    ) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self.origins = frozenset(origin_of(u) for u in authorities)
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[float, tuple[str, str]]] = []  # heap of (created + window, key)

    def __len__(self) -> int:
        return len(self._seen)

    def verify(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        now_s: float,
        is_member: Callable[[str], bool],
    ) -> str:
        """The verified member key that signed this request; raises SignatureRefusedError."""
        self._forget(now_s)
        fields = _signature_fields(headers)
        self._check_authority(url)
        message = _Message(method.upper(), url, fields)
        verifier = _Verifier(signature_algorithm=algorithms.ED25519, key_resolver=_Keys())
        try:
            [result] = verifier.verify(message, max_age=None, body=body)
        except (HTTPMessageSignaturesException, ValueError) as e:
            raise SignatureRefusedError(f"signature does not verify: {e}") from e
        params = _check_profile(result.label, result.covered_components, result.parameters)
        created = params["created"]
        assert isinstance(created, int)  # _check_profile
        if abs(now_s - created) > self.window_s:
            raise SignatureRefusedError(
                f"signature created {created} is outside +-{self.window_s} s of now "
                f"({int(now_s)}): check this host's and the peer's clocks"
            )
        key_id = str(params["keyid"])
        if not is_member(key_id):
            raise NotAMemberError(f"key {key_id[:16]}… is not a current member or auditor")
        self._remember((key_id, str(params["nonce"])), created + self.window_s)
        return key_id

    def _check_authority(self, url: str) -> None:
        try:
            origin = origin_of(url)
        except ValueError as e:
            raise MisdirectedRequestError(f"cannot tell which node {url!r} is for") from e
        if origin not in self.origins:
            mine = ", ".join(sorted(render_origin(o) for o in self.origins)) or "nothing"
            raise MisdirectedRequestError(
                f"a request for {render_origin(origin)}, but this node answers only to {mine} "
                "(its url and aliases in config.toml)"
            )

    def _forget(self, now_s: float) -> None:
        """Drop the entries whose requests can no longer verify (created + window passed)."""
        while self._expiry and self._expiry[0][0] < now_s:
            self._seen.discard(heapq.heappop(self._expiry)[1])

    def _remember(self, key: tuple[str, str], until_s: float) -> None:
        if key in self._seen:
            raise SignatureRefusedError(
                "replayed request: this key already used this nonce within the window"
            )
        if len(self._seen) >= self.max_entries:
            raise ReplayCacheFullError(
                f"{len(self._seen)} signed requests could still be replayed; retry later"
            )
        self._seen.add(key)
        heapq.heappush(self._expiry, (until_s, key))


def _signature_fields(headers: Mapping[str, str]) -> dict[str, str]:
    """The request's header fields, each signature field present exactly once."""
    counts = dict.fromkeys(SIGNATURE_FIELDS, 0)
    for name, _ in headers.items():  # every field line (a multidict's keys() are distinct)
        if name.lower() in counts:
            counts[name.lower()] += 1
    if not counts["signature"]:
        raise SignatureRefusedError("request is not signed (RFC 9421 Signature header missing)")
    repeated = [name for name, n in counts.items() if n > 1]
    if repeated:
        raise SignatureRefusedError(f"header {repeated[0]} appears more than once")
    return {k: v for k, v in headers.items()}


def _check_profile(
    label: str, covered: Mapping[str, str], params: Mapping[str, int | str]
) -> Mapping[str, int | str]:
    """The verified signature's parameters, if it keeps to the SPEC 10.1 profile."""
    if label != LABEL:
        raise SignatureRefusedError(f"signature label must be {LABEL!r}, got {label!r}")
    components = [c for c in covered if c != '"@signature-params"']
    if components != _COVERED_IDS:
        raise SignatureRefusedError(
            f"signature must cover exactly {' '.join(_COVERED_IDS)}, got {' '.join(components)}"
        )
    if not _SHA256_DIGEST.fullmatch(covered['"content-digest"']):
        raise SignatureRefusedError("Content-Digest must be exactly one sha-256 digest")
    if set(params) != PARAMETERS:
        missing, extra = sorted(PARAMETERS - set(params)), sorted(set(params) - PARAMETERS)
        raise SignatureRefusedError(
            f"signature parameters must be exactly {', '.join(sorted(PARAMETERS))}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else "")
        )
    if params["alg"] != ALG or params["tag"] != TAG:
        raise SignatureRefusedError(f'signature must have alg="{ALG}" and tag="{TAG}"')
    nonce = params["nonce"]
    if not isinstance(nonce, str) or not NONCE_CHARS[0] <= len(nonce) <= NONCE_CHARS[1]:
        raise SignatureRefusedError(
            f"signature nonce must be {NONCE_CHARS[0]} to {NONCE_CHARS[1]} characters"
        )
    if type(params["created"]) is not int:
        raise SignatureRefusedError("signature created must be an integer")
    return params
