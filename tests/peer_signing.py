"""Peer request signatures that keep to the SPEC 10.1 profile but for one part, for tests.

``sign_deviant(key, method, url, body, deviation, now_s=...)`` signs like ``node.net.httpsig``
does except for the named deviation (``DEVIATIONS``); "none" is a conforming signature made
independently of ``node.net.httpsig`` (so it also checks that the node's profile is the SPEC's).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms

from protocol.keys import SigningKey

COVERED = ("@method", "@target-uri", "content-digest")


@dataclass
class Message:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


class _Keys(HTTPSignatureKeyResolver):
    def __init__(self, key: SigningKey) -> None:
        self.key = key

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.key.seed)

    def resolve_public_key(self, key_id: str) -> None:
        raise AssertionError("signing only")


def digest(body: bytes, algorithm: str = "sha-256") -> str:
    value = hashlib.new(algorithm.replace("-", ""), body).digest()
    return f"{algorithm}=:{base64.b64encode(value).decode()}:"


# name -> (sign() keyword changes, Content-Digest value or None for sha-256 of the body)
DEVIATIONS: dict[str, tuple[dict[str, Any], Any]] = {
    "none": ({}, None),
    "label": ({"label": "sig1"}, None),
    "no-digest-covered": ({"covered_component_ids": COVERED[:2]}, None),
    "extra-component": ({"covered_component_ids": ("@method", "@authority", *COVERED[1:])}, None),
    "components-reordered": ({"covered_component_ids": (COVERED[1], COVERED[0], COVERED[2])}, None),
    "no-nonce": ({"nonce": None}, None),
    "short-nonce": ({"nonce": "abc123"}, None),
    "long-nonce": ({"nonce": "n" * 129}, None),
    "no-tag": ({"tag": None}, None),
    "other-tag": ({"tag": "other"}, None),
    "no-alg": ({"include_alg": False}, None),
    "expires": ({"expires": "+60"}, None),
    "sha-512-digest": ({}, lambda body: digest(body, "sha-512")),
    "two-digests": ({}, lambda body: f"{digest(body)}, {digest(body, 'sha-512')}"),
    "two-signatures": ({"second_label": "hm2"}, None),
}


def sign_deviant(
    key: SigningKey, method: str, url: str, body: bytes, deviation: str, *, now_s: float
) -> dict[str, str]:
    """Signature headers for this request, off the profile in the named way."""
    changes, make_digest = DEVIATIONS[deviation]
    changes = dict(changes)
    second = changes.pop("second_label", None)
    created = datetime.datetime.fromtimestamp(int(now_s), tz=datetime.UTC)
    if changes.get("expires") == "+60":
        changes["expires"] = created + datetime.timedelta(seconds=60)
    message = Message(method.upper(), url)
    message.headers["Content-Digest"] = (make_digest or digest)(body)
    options: dict[str, Any] = {
        "key_id": key.public,
        "created": created,
        "nonce": secrets.token_urlsafe(12),
        "tag": "hashmesh",
        "label": "hm",
        "covered_component_ids": COVERED,
        "use_existing_digest": True,
    } | changes
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_Keys(key))
    signer.sign(message, **options)
    if second:
        options |= {"label": second, "nonce": secrets.token_urlsafe(12)}
        signer.sign(message, append_if_signature_exists=True, **options)
    return message.headers
