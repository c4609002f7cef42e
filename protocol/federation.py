"""The federation's genesis document: who founded it, its rules, and its id.

A genesis document is the JSON object ``{"body": {...}, "signatures": {pubkey: sig}}``.
The body holds the protocol version, the federation name, the admission threshold, the
label taxonomy and the founders (name, key, role), sorted by key. Every founder signs
``b"hashmesh/genesis/v1\\n" + JCS(body)``; the federation id is SHA-256(JCS(body)) in hex.
A document is valid only when every founder's signature is present and verifies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from protocol.encoding import JsonValue, decode_canonical, encode_canonical
from protocol.errors import GenesisError, RemoteProtocolError, SchemaError
from protocol.keys import SigningKey, is_public_key, is_signature, verify_signature
from protocol.labels import DEFAULT_TAXONOMY, check_taxonomy

GENESIS_DOMAIN = b"hashmesh/genesis/v1\n"
MAX_GENESIS_BYTES = 1024 * 1024
MAX_NAME_CHARS = 100
ROLES = ("member", "auditor")


def check_name(name: object, field: str = "name") -> str:
    """A display name: 1..100 characters, no control characters, no surrounding space."""
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= MAX_NAME_CHARS
        or name != name.strip()
        or any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name)
    ):
        raise SchemaError(
            f"a name is 1..{MAX_NAME_CHARS} printable characters", field=field, actual=name
        )
    return name


def check_role(role: object) -> str:
    if role not in ROLES:
        raise SchemaError("unknown role", field="role", expected="|".join(ROLES), actual=role)
    assert isinstance(role, str)
    return role


@dataclass(frozen=True, slots=True)
class Founder:
    name: str
    key: str
    role: str

    def __post_init__(self) -> None:
        check_name(self.name)
        check_role(self.role)
        if not is_public_key(self.key):
            raise SchemaError("a key is 64 lowercase hex characters", field="key", actual=self.key)

    def to_json(self) -> dict[str, JsonValue]:
        return {"key": self.key, "name": self.name, "role": self.role}


@dataclass(frozen=True, slots=True)
class Federation:
    """A verified genesis: the federation's identity and founding rules."""

    name: str
    threshold: int
    founders: tuple[Founder, ...]
    taxonomy: tuple[str, ...]
    signatures: Mapping[str, str]
    id: str

    @property
    def body(self) -> dict[str, JsonValue]:
        return genesis_body(self.name, self.threshold, self.founders, self.taxonomy)

    def founder(self, key: str) -> Founder | None:
        return next((f for f in self.founders if f.key == key), None)

    def to_json(self) -> dict[str, JsonValue]:
        return {"body": self.body, "signatures": dict(sorted(self.signatures.items()))}

    def to_bytes(self) -> bytes:
        return encode_canonical(self.to_json())


def genesis_body(
    name: str, threshold: int, founders: Sequence[Founder], taxonomy: Sequence[str]
) -> dict[str, JsonValue]:
    return {
        "v": 1,
        "name": name,
        "threshold": threshold,
        "members": [f.to_json() for f in sorted(founders, key=lambda f: f.key)],
        "taxonomy": list(taxonomy),
    }


def federation_id(body: Mapping[str, JsonValue]) -> str:
    return hashlib.sha256(encode_canonical(body)).hexdigest()


def genesis_signing_input(body: Mapping[str, JsonValue]) -> bytes:
    return GENESIS_DOMAIN + encode_canonical(body)


def draft_genesis(
    name: str,
    threshold: int,
    founders: Sequence[Founder],
    taxonomy: Sequence[str] = DEFAULT_TAXONOMY,
) -> dict[str, JsonValue]:
    """An unsigned genesis document; every founder then adds a signature with sign_genesis."""
    body = genesis_body(name, threshold, founders, taxonomy)
    _check_body(body)
    return {"body": body, "signatures": {}}


def sign_genesis(document: Mapping[str, JsonValue], key: SigningKey) -> dict[str, JsonValue]:
    """The document with key's signature added; key must be one of its founders."""
    body = document["body"]
    if not isinstance(body, dict):
        raise GenesisError("genesis document has no body object", field="body")
    founders = _check_body(body)
    if key.public not in {f.key for f in founders}:
        raise GenesisError("this key is not a founder of the federation", actual=key.public)
    signatures = dict(_check_signature_map(document.get("signatures", {})))
    signatures[key.public] = key.sign(genesis_signing_input(body))
    return {"body": body, "signatures": dict(sorted(signatures.items()))}


def missing_signatures(document: Mapping[str, JsonValue]) -> list[str]:
    """The founder keys that have not signed yet (signatures are not checked here)."""
    body = document.get("body")
    if not isinstance(body, dict):
        raise GenesisError("genesis document has no body object", field="body")
    signed = _check_signature_map(document.get("signatures", {}))
    return [f.key for f in _check_body(body) if f.key not in signed]


def parse_genesis(data: bytes) -> Federation:
    """Parse and fully verify a genesis document given as canonical JSON bytes."""
    value = decode_canonical(data, max_bytes=MAX_GENESIS_BYTES)
    if not isinstance(value, dict):
        raise GenesisError("genesis document must be an object")
    return verify_genesis(value)


def verify_genesis(document: Mapping[str, JsonValue]) -> Federation:
    """Check a genesis document's shape and every founder's signature."""
    if set(document) != {"body", "signatures"}:
        raise GenesisError("genesis keys must be body and signatures", actual=sorted(document))
    body = document["body"]
    if not isinstance(body, dict):
        raise GenesisError("genesis body must be an object", field="body")
    founders = _check_body(body)
    signatures = _check_signature_map(document["signatures"])
    message = genesis_signing_input(body)
    for founder in founders:
        if founder.key not in signatures:
            raise GenesisError("a founder has not signed", author=founder.key, field="signatures")
        verify_signature(founder.key, message, signatures[founder.key])
    extra = set(signatures) - {f.key for f in founders}
    if extra:
        raise GenesisError("signature from a key that is not a founder", actual=sorted(extra)[0])
    assert isinstance(body["name"], str) and isinstance(body["threshold"], int)
    taxonomy = check_taxonomy(body["taxonomy"])
    return Federation(
        name=body["name"],
        threshold=body["threshold"],
        founders=founders,
        taxonomy=taxonomy,
        signatures=dict(sorted(signatures.items())),
        id=federation_id(body),
    )


def _check_body(body: Mapping[str, JsonValue]) -> tuple[Founder, ...]:
    if set(body) != {"v", "name", "threshold", "members", "taxonomy"}:
        raise GenesisError(
            "genesis body keys must be v, name, threshold, members, taxonomy", actual=sorted(body)
        )
    if type(body["v"]) is not int or body["v"] != 1:  # true == 1 in Python
        raise GenesisError("unsupported genesis version", field="v", expected=1, actual=body["v"])
    try:
        check_name(body["name"])
        check_taxonomy(body["taxonomy"])
        founders = tuple(_parse_founder(m) for m in _as_list(body["members"]))
    except RemoteProtocolError as e:
        raise GenesisError(f"invalid genesis: {e}", field=e.context.field) from e
    keys = [f.key for f in founders]
    if not keys or keys != sorted(set(keys)):
        raise GenesisError("members must be non-empty, sorted by key and distinct", field="members")
    voters = sum(1 for f in founders if f.role == "member")
    threshold = body["threshold"]
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise GenesisError("threshold must be a positive integer", field="threshold")
    if voters == 0 or threshold > voters:
        raise GenesisError(
            "threshold exceeds the number of founding members with role member",
            field="threshold",
            expected=f"<= {voters}",
            actual=threshold,
        )
    return founders


def _as_list(value: JsonValue) -> list[JsonValue]:
    if not isinstance(value, list):
        raise GenesisError("members must be a list", field="members")
    return value


def _parse_founder(value: JsonValue) -> Founder:
    if not isinstance(value, dict) or set(value) != {"key", "name", "role"}:
        raise GenesisError("a member is an object with key, name and role", field="members")
    key, name, role = value["key"], value["name"], value["role"]
    if not (isinstance(key, str) and isinstance(name, str) and isinstance(role, str)):
        raise GenesisError("member key, name and role must be strings", field="members")
    return Founder(name=name, key=key, role=role)


def _check_signature_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise GenesisError("signatures must be an object", field="signatures")
    for k, v in value.items():
        if not is_public_key(k) or not is_signature(v):
            raise GenesisError("signatures map public keys to 128-hex signatures", field=k)
    return dict(value)
