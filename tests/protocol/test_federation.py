"""The genesis document: drafting, signing, parsing, the federation id, and every rejection."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from protocol import (
    Founder,
    RemoteProtocolError,
    SigningKey,
    decode_canonical,
    draft_genesis,
    encode_canonical,
    parse_genesis,
    sign_genesis,
)
from protocol.errors import GenesisError, NonCanonicalError, SignatureError
from protocol.federation import (
    GENESIS_DOMAIN,
    MAX_GENESIS_BYTES,
    missing_signatures,
    verify_genesis,
)
from protocol.labels import DEFAULT_TAXONOMY


def key(name: str) -> SigningKey:
    return SigningKey(hashlib.sha256(f"test_federation {name}".encode()).digest())


A, B, C, AUDITOR, OUTSIDER = (key(n) for n in ("a", "b", "c", "auditor", "outsider"))
FOUNDERS = [
    Founder("Alpha", A.public, "member"),
    Founder("Beta", B.public, "member"),
    Founder("Gamma", C.public, "member"),
    Founder("Watcher", AUDITOR.public, "auditor"),
]


def signed_document(
    threshold: int = 2,
    founders: list[Founder] | None = None,
    signers: list[SigningKey] | None = None,
) -> dict[str, Any]:
    founders = FOUNDERS if founders is None else founders
    document: dict[str, Any] = draft_genesis("Test federation", threshold, founders)
    for signer in [A, B, C, AUDITOR] if signers is None else signers:
        document = sign_genesis(document, signer)
    return document


DOCUMENT = signed_document()


def test_draft_has_the_documented_body() -> None:
    draft = draft_genesis("Test federation", 2, list(reversed(FOUNDERS)))
    body = draft["body"]
    assert isinstance(body, dict)
    assert body == {
        "v": 1,
        "name": "Test federation",
        "threshold": 2,
        "members": [f.to_json() for f in sorted(FOUNDERS, key=lambda f: f.key)],
        "taxonomy": list(DEFAULT_TAXONOMY),
    }
    assert draft["signatures"] == {}


def test_parse_verifies_and_computes_the_id() -> None:
    federation = parse_genesis(encode_canonical(DOCUMENT))
    assert federation.id == hashlib.sha256(encode_canonical(DOCUMENT["body"])).hexdigest()
    assert federation.name == "Test federation"
    assert federation.threshold == 2
    assert federation.founders == tuple(sorted(FOUNDERS, key=lambda f: f.key))
    assert federation.taxonomy == DEFAULT_TAXONOMY
    assert federation.founder(AUDITOR.public) == FOUNDERS[3]
    assert federation.founder(OUTSIDER.public) is None
    assert federation.to_json() == DOCUMENT
    assert parse_genesis(federation.to_bytes()) == federation


def test_founders_sign_the_domain_separated_body() -> None:
    from protocol import verify_signature

    message = GENESIS_DOMAIN + encode_canonical(DOCUMENT["body"])
    for signer in (A, B, C, AUDITOR):
        verify_signature(signer.public, message, DOCUMENT["signatures"][signer.public])


def test_signing_order_does_not_matter() -> None:
    assert signed_document(signers=[AUDITOR, C, A, B]) == DOCUMENT


def test_the_id_depends_on_the_body_only() -> None:
    other = signed_document(threshold=3)
    assert parse_genesis(encode_canonical(other)).id != parse_genesis(encode_canonical(DOCUMENT)).id


def test_missing_signatures() -> None:
    partial = signed_document(signers=[A, C])
    assert missing_signatures(partial) == sorted([B.public, AUDITOR.public])
    assert missing_signatures(DOCUMENT) == []


def test_sign_genesis_by_a_non_founder_is_refused() -> None:
    with pytest.raises(GenesisError):
        sign_genesis(DOCUMENT, OUTSIDER)


def _with(path: list[str | int], value: Any, document: dict[str, Any] = DOCUMENT) -> dict[str, Any]:
    out = copy.deepcopy(document)
    target: Any = out
    for step in path[:-1]:
        target = target[step]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


_DELETE = object()


def _resigned(body_path: list[str | int], value: Any) -> dict[str, Any]:
    """A body change that every founder has signed (so only the change is wrong)."""
    document = _with(["body", *body_path], value, {"body": DOCUMENT["body"], "signatures": {}})
    body = document["body"]
    message = GENESIS_DOMAIN + encode_canonical(body)
    members = body.get("members")
    keys = (
        {m.get("key") for m in members if isinstance(m, dict)}
        if isinstance(members, list)
        else set()
    )
    document["signatures"] = {
        k.public: k.sign(message) for k in (A, B, C, AUDITOR) if k.public in keys
    }
    return document


REJECTED: list[tuple[str, Any, type[RemoteProtocolError]]] = [
    ("tampered name", _with(["body", "name"], "Other"), SignatureError),
    ("tampered threshold", _with(["body", "threshold"], 1), SignatureError),
    ("tampered member role", _with(["body", "members", 0, "role"], "auditor"), SignatureError),
    (
        "signature swapped",
        _with(["signatures", A.public], DOCUMENT["signatures"][B.public]),
        SignatureError,
    ),
    ("missing signature", _with(["signatures", B.public], _DELETE), GenesisError),
    ("auditor signature missing", _with(["signatures", AUDITOR.public], _DELETE), GenesisError),
    ("non-founder signature", _with(["signatures", OUTSIDER.public], "00" * 64), GenesisError),
    (
        "valid non-founder signature",
        _with(
            ["signatures", OUTSIDER.public],
            OUTSIDER.sign(GENESIS_DOMAIN + encode_canonical(DOCUMENT["body"])),
        ),
        GenesisError,
    ),
    ("signature not hex", _with(["signatures", A.public], "zz" * 64), GenesisError),
    ("signatures not an object", _with(["signatures"], []), GenesisError),
    ("extra top-level key", _with(["extra"], 1), GenesisError),
    ("no body", _with(["body"], _DELETE), GenesisError),
    ("body not an object", _with(["body"], []), GenesisError),
    ("threshold above founders", _resigned(["threshold"], 5), GenesisError),
    ("threshold counts only role member", _resigned(["threshold"], 4), GenesisError),
    ("threshold 0", _resigned(["threshold"], 0), GenesisError),
    ("threshold true", _resigned(["threshold"], True), GenesisError),
    ("threshold string", _resigned(["threshold"], "2"), GenesisError),
    ("version 2", _resigned(["v"], 2), GenesisError),
    ("version true", _resigned(["v"], True), GenesisError),
    ("extra body key", _resigned(["extra"], 1), GenesisError),
    ("empty name", _resigned(["name"], ""), GenesisError),
    ("no members", _resigned(["members"], []), GenesisError),
    (
        "members unsorted",
        _resigned(["members"], list(reversed(DOCUMENT["body"]["members"]))),
        GenesisError,
    ),
    ("duplicate member", _resigned(["members"], DOCUMENT["body"]["members"][:1] * 2), GenesisError),
    ("member bad key", _resigned(["members", 0, "key"], "A" * 64), GenesisError),
    ("member bad role", _resigned(["members", 0, "role"], "owner"), GenesisError),
    ("member extra field", _resigned(["members", 0, "x"], 1), GenesisError),
    ("member not an object", _resigned(["members", 0], "x"), GenesisError),
    ("taxonomy unsorted", _resigned(["taxonomy"], ["incident:", "entity:"]), GenesisError),
    ("taxonomy bad entry", _resigned(["taxonomy"], ["Entity:"]), GenesisError),
]


@pytest.mark.parametrize(
    ("document", "error"), [(d, e) for _, d, e in REJECTED], ids=[n for n, _, _ in REJECTED]
)
def test_invalid_genesis_is_rejected(document: Any, error: type[RemoteProtocolError]) -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        parse_genesis(encode_canonical(document))
    assert type(raised.value) is error
    with pytest.raises(error):
        verify_genesis(document)


def test_threshold_limits() -> None:
    with pytest.raises(GenesisError):  # three founders have role member; the auditor does not vote
        draft_genesis("Test federation", 4, FOUNDERS)
    assert parse_genesis(encode_canonical(signed_document(threshold=3))).threshold == 3
    with pytest.raises(GenesisError):
        draft_genesis("Auditors only", 1, [FOUNDERS[3]])
    solo = signed_document(threshold=1, founders=FOUNDERS[:1], signers=[A])
    assert parse_genesis(encode_canonical(solo)).threshold == 1


def test_duplicate_founders_are_rejected() -> None:
    with pytest.raises(GenesisError):
        draft_genesis("Test federation", 1, [FOUNDERS[0], FOUNDERS[0]])


def test_genesis_bytes_must_be_canonical() -> None:
    data = encode_canonical(DOCUMENT)
    with pytest.raises(NonCanonicalError):
        parse_genesis(data + b"\n")
    with pytest.raises(NonCanonicalError):
        parse_genesis(data.replace(b'{"body":', b'{ "body":', 1))


def test_genesis_must_be_an_object() -> None:
    with pytest.raises(GenesisError):
        parse_genesis(b"[]")


def test_genesis_size_limit_is_larger_than_a_records() -> None:
    taxonomy = sorted(f"entity:group-{i:04}" for i in range(400))  # > 8 KiB of body
    big = draft_genesis("Big taxonomy", 1, FOUNDERS[:1], taxonomy)
    big = sign_genesis(big, A)
    assert len(encode_canonical(big)) > 8 * 1024
    assert parse_genesis(encode_canonical(big)).taxonomy == tuple(taxonomy)
    assert MAX_GENESIS_BYTES == 1024 * 1024


def test_wire_form_round_trips() -> None:
    wire = decode_canonical(encode_canonical(DOCUMENT), max_bytes=MAX_GENESIS_BYTES)
    assert isinstance(wire, dict)
    assert verify_genesis(wire).to_json() == DOCUMENT


def test_founder_validation() -> None:
    from protocol.errors import SchemaError

    for bad in [("", A.public, "member"), ("n", "x", "member"), ("n", A.public, "admin")]:
        with pytest.raises(SchemaError):
            Founder(*bad)
