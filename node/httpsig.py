"""Signed peer requests: RFC 9421 HTTP Message Signatures with the member's Ed25519 key.

Every peer request covers ``@method``, ``@target-uri`` and ``content-digest`` (RFC 9530,
SHA-256 of the body, present even for an empty body), with ``created``, ``keyid`` (the
member's public key, hex), ``alg="ed25519"``, a random ``nonce`` and ``tag="hashmesh"``.
The verifier refuses: no signature; an unknown or non-member key; ``created`` more than
``WINDOW_S`` seconds away from its clock (either way); a body that does not match its
digest; and any signature it has already accepted within the window (replay cache).
The signing and verification are the ``http-message-signatures`` package's; this module
supplies keys, policy and the replay cache. Wall-clock time is a parameter.
"""

from __future__ import annotations

import datetime
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from node.errors import NodeError, PeerError
from protocol.keys import SigningKey, is_public_key

WINDOW_S = 300
TAG = "hashmesh"
COVERED = ("@method", "@target-uri", "content-digest")
MAX_REPLAY_ENTRIES = 200_000


class SignatureRefusedError(NodeError):
    """A peer request whose signature is missing, invalid, stale, replayed or not a member's."""

    status = 401
    title = "request signature refused"


class NotAMemberError(SignatureRefusedError):
    status = 403
    title = "not a federation member"


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
            created=datetime.datetime.fromtimestamp(now_s, tz=datetime.UTC),
            nonce=secrets.token_urlsafe(12),
            tag=TAG,
            label="hm",
            covered_component_ids=COVERED[:2],
            body=body,
        )
    except HTTPMessageSignaturesException as e:  # a URL it cannot sign: that peer fails
        raise PeerError(f"cannot sign a request to {url}: {e}") from e
    return message.headers


class RequestVerifier:
    """Checks signed peer requests; remembers accepted signatures for the replay window."""

    def __init__(self, *, window_s: int = WINDOW_S) -> None:
        self.window_s = window_s
        self._seen: OrderedDict[str, float] = OrderedDict()

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
        if "signature" not in {k.lower() for k in headers}:
            raise SignatureRefusedError("request is not signed (RFC 9421 Signature header missing)")
        message = _Message(method.upper(), url, {k: v for k, v in headers.items()})
        verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=_Keys())
        try:
            results = verifier.verify(
                message,
                max_age=None,
                expect_tag=TAG,
                require_components=COVERED,
                body=body,
            )
        except HTTPMessageSignaturesException as e:
            raise SignatureRefusedError(f"signature does not verify: {e}") from e
        params = results[0].parameters
        created = params.get("created")
        if not isinstance(created, int) or abs(now_s - created) > self.window_s:
            raise SignatureRefusedError(
                f"signature created {created} is outside +-{self.window_s} s of now"
            )
        key_id = str(params.get("keyid", ""))
        if not is_member(key_id):
            raise NotAMemberError(f"key {key_id[:16]}… is not a current member or auditor")
        self._remember(headers, now_s)
        return key_id

    def _remember(self, headers: Mapping[str, str], now_s: float) -> None:
        signature = next(v for k, v in headers.items() if k.lower() == "signature")
        while self._seen and (
            next(iter(self._seen.values())) < now_s - self.window_s
            or len(self._seen) > MAX_REPLAY_ENTRIES
        ):
            self._seen.popitem(last=False)
        if signature in self._seen:
            raise SignatureRefusedError("replayed request: this signature was already used")
        self._seen[signature] = now_s
