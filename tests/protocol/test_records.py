"""Records: every kind, every signal type, labels, and the checks an invalid record fails."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from fuzzdepth import depth
from hypothesis import event, given, settings
from hypothesis import strategies as st

from protocol import (
    AnnounceBody,
    Body,
    LocalProtocolError,
    OpinionBody,
    Record,
    RemoteProtocolError,
    RetractBody,
    RotateBody,
    SignalBody,
    SigningKey,
    VoteBody,
    decode_record,
    encode_canonical,
    sign_record,
    verify_signature,
)
from protocol import errors as err
from protocol.bodies import rotation
from protocol.labels import (
    DEFAULT_TAXONOMY,
    MAX_LABELS,
    check_in_taxonomy,
    check_labels,
    check_taxonomy,
    in_taxonomy,
    normalise_labels,
)
from protocol.records import RECORD_DOMAIN, record_id_of, unsigned_bytes
from protocol.signal_types import SIGNAL_TYPES, canonical_value, distance, hamming_distance

KEY = SigningKey(hashlib.sha256(b"test_records").digest())
OTHER = SigningKey(hashlib.sha256(b"test_records other").digest())
FED = hashlib.sha256(b"test_records federation").hexdigest()
ID = hashlib.sha256(b"a record").hexdigest()
TS = 1_763_800_000_000


def signed(body: Body, *, seq: int = 1, prev: str | None = None, key: SigningKey = KEY) -> Record:
    return sign_record(key, fed=FED, seq=seq, prev=prev, ts=TS, body=body)


def raw_signed(unsigned: dict[str, Any], key: SigningKey = KEY) -> bytes:
    """Sign any unsigned record object (valid or not) exactly as a record is signed."""
    sig = key.sign(RECORD_DOMAIN + encode_canonical(unsigned))
    return encode_canonical(unsigned | {"sig": sig})


def envelope(body: dict[str, Any], kind: str = "signal", **fields: Any) -> dict[str, Any]:
    base = {"v": 1, "fed": FED, "author": KEY.public, "seq": 1, "prev": None, "ts": TS}
    return base | {"kind": kind, "body": body} | fields


# --- every kind round-trips ---------------------------------------------------------------------

ROTATION = rotation(OTHER, fed=FED, old=KEY.public)

BODIES: list[tuple[Body, dict[str, Any]]] = [
    (
        SignalBody("pdq", "0f" * 32, ("behaviour:glorification", "entity:x"), "note", 5),
        {
            "type": "pdq",
            "value": "0f" * 32,
            "labels": ["behaviour:glorification", "entity:x"],
            "note": "note",
            "expires": 5,
        },
    ),
    (SignalBody("md5", "a" * 32), {"type": "md5", "value": "a" * 32, "labels": []}),
    (RetractBody(ID), {"signal": ID}),
    (RetractBody(ID, "dup"), {"signal": ID, "reason": "dup"}),
    (
        OpinionBody(ID, "confirm", ("entity:x",), "ok"),
        {"signal": ID, "verdict": "confirm", "labels": ["entity:x"], "note": "ok"},
    ),
    (OpinionBody(ID, "dispute"), {"signal": ID, "verdict": "dispute", "labels": []}),
    (OpinionBody(ID, "seen"), {"signal": ID, "verdict": "seen", "labels": []}),
    (AnnounceBody("N"), {"name": "N", "urls": []}),
    (
        AnnounceBody("Node", ("https://a.example/",), ID),
        {"name": "Node", "urls": ["https://a.example/"], "tls": ID},
    ),
    (
        VoteBody("admit", OTHER.public, name="Other", role="auditor"),
        {"action": "admit", "member": OTHER.public, "name": "Other", "role": "auditor"},
    ),
    (
        VoteBody("remove", OTHER.public, after=0),
        {"action": "remove", "member": OTHER.public, "after": 0},
    ),
    (ROTATION, {"new_key": OTHER.public, "proof": ROTATION.proof}),
]


@pytest.mark.parametrize(("body", "as_json"), BODIES, ids=[repr(b)[:50] for b, _ in BODIES])
def test_every_kind_signs_and_decodes(body: Body, as_json: dict[str, Any]) -> None:
    assert body.to_json() == as_json
    record = signed(body, seq=2, prev=ID)
    assert record.kind == body.KIND
    assert record.to_json() == {
        "v": 1,
        "fed": FED,
        "author": KEY.public,
        "seq": 2,
        "prev": ID,
        "ts": TS,
        "kind": body.KIND,
        "body": as_json,
        "sig": record.sig,
    }
    assert record.canonical == encode_canonical(record.to_json())
    signing_input = RECORD_DOMAIN + encode_canonical(record.unsigned_json())
    assert record.id == hashlib.sha256(signing_input).hexdigest()
    verify_signature(KEY.public, signing_input, record.sig)
    assert unsigned_bytes(record.canonical) == encode_canonical(record.unsigned_json())
    assert record_id_of(record.canonical) == record.id
    decoded = decode_record(record.canonical, FED)
    assert decoded == record
    assert decoded.body == body
    assert decoded.text == record.canonical.decode()


def test_signature_covers_the_domain_and_excludes_sig() -> None:
    record = signed(SignalBody("md5", "b" * 32))
    with pytest.raises(err.SignatureError):
        verify_signature(KEY.public, encode_canonical(record.unsigned_json()), record.sig)


def test_record_constructor_verifies() -> None:
    good = signed(SignalBody("md5", "c" * 32))
    fields: dict[str, Any] = {
        "fed": good.fed,
        "author": good.author,
        "seq": good.seq,
        "prev": good.prev,
        "ts": good.ts,
        "body": good.body,
    }
    assert Record(**fields, sig=good.sig) == good
    with pytest.raises(err.SignatureError):
        Record(**fields, sig=OTHER.sign(b"x"))
    with pytest.raises(err.SignatureError):
        Record(**(fields | {"ts": TS + 1}), sig=good.sig)
    with pytest.raises(err.SchemaError):
        Record(**(fields | {"seq": 0}), sig=good.sig)
    with pytest.raises(err.SchemaError):
        Record(**fields, sig=good.sig.upper())


def test_records_are_frozen() -> None:
    record = signed(SignalBody("md5", "c" * 32))
    with pytest.raises(AttributeError):
        record.seq = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        record.body.value = "d" * 32  # type: ignore[misc, union-attr]


@pytest.mark.parametrize(
    ("seq", "prev", "ts"),
    [(0, None, TS), (1, ID, TS), (2, None, TS), (2, ID.upper(), TS), (1, None, -1), (2**53, ID, 0)],
)
def test_sign_record_refuses_an_invalid_envelope(seq: int, prev: str | None, ts: int) -> None:
    with pytest.raises(LocalProtocolError):
        sign_record(KEY, fed=FED, seq=seq, prev=prev, ts=ts, body=SignalBody("md5", "0" * 32))


def test_sign_record_refuses_a_bad_federation_id() -> None:
    with pytest.raises(LocalProtocolError):
        sign_record(KEY, fed="F" * 64, seq=1, prev=None, ts=0, body=SignalBody("md5", "0" * 32))


def test_oversize_record_cannot_be_constructed() -> None:
    urls = tuple(f"https://example.com/{'a' * 2000}/{i}" for i in range(5))
    with pytest.raises(err.OversizeError):
        signed(AnnounceBody("big", urls))


def test_decode_checks_the_federation() -> None:
    record = signed(SignalBody("md5", "0" * 32))
    with pytest.raises(err.FederationMismatchError) as raised:
        decode_record(record.canonical, hashlib.sha256(b"x").hexdigest())
    assert raised.value.context.expected is not None
    assert raised.value.context.actual == FED


def test_schema_errors_name_author_seq_and_field() -> None:
    data = raw_signed(envelope({"type": "md5", "value": "0" * 31, "labels": []}, seq=4, prev=ID))
    with pytest.raises(err.InvalidHashError) as raised:
        decode_record(data, FED)
    ctx = raised.value.context
    assert (ctx.author, ctx.seq, ctx.field) == (KEY.public, 4, "value")
    assert raised.value.to_json()["error"] == "InvalidHashError"
    assert "InvalidHashError" in raised.value.diagnostics()


# --- signal types -------------------------------------------------------------------------------

VALID_VALUES = {
    "pdq": "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
    "phash": "d1c4b2a3e5f60718",
    "dhash": "0000000000000000",
    "md5": hashlib.md5(b"x").hexdigest(),  # a signal value, not security
    "sha1": hashlib.sha1(b"x").hexdigest(),  # a signal value, not security
    "sha256": hashlib.sha256(b"x").hexdigest(),
    "sha512": hashlib.sha512(b"x").hexdigest(),
    "url": "https://example.com/a",
    "vpdq": "ab" * 32
    + "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
    + "5a00000000",
}
HEX_CHARS = {"pdq": 64, "phash": 16, "dhash": 16, "md5": 32, "sha1": 40, "sha256": 64,
             "sha512": 128}  # fmt: skip


def test_the_registry_holds_exactly_the_registered_types() -> None:
    assert set(SIGNAL_TYPES) == set(VALID_VALUES)
    for name, chars in HEX_CHARS.items():
        assert SIGNAL_TYPES[name].hex_chars == chars
        assert SIGNAL_TYPES[name].bits == chars * 4
    assert SIGNAL_TYPES["url"].hex_chars is None
    radii = {name: t.default_radius for name, t in SIGNAL_TYPES.items()}
    assert radii == {
        "pdq": 31,
        "phash": 10,
        "dhash": 10,
        "md5": 0,
        "sha1": 0,
        "sha256": 0,
        "sha512": 0,
        "url": 0,
        "vpdq": 31,  # a frame's
    }
    core = {name for name, t in SIGNAL_TYPES.items() if t.core}
    assert core == set(SIGNAL_TYPES) - {"sha512", "vpdq"}, "v1's types are core; later are gated"


@pytest.mark.parametrize("type_name", sorted(VALID_VALUES))
def test_every_signal_type_round_trips(type_name: str) -> None:
    record = signed(SignalBody(type_name, VALID_VALUES[type_name], ("entity:x",)))
    assert decode_record(record.canonical, FED).body == record.body


@pytest.mark.parametrize("type_name", sorted(HEX_CHARS))
def test_hex_types_reject_every_wrong_shape(type_name: str) -> None:
    chars = HEX_CHARS[type_name]
    for value in [
        "a" * (chars - 1),
        "a" * (chars + 1),
        "g" * chars,
        "A" * chars,
        " " + "a" * chars,
        "",
    ]:
        with pytest.raises(err.InvalidHashError):
            SignalBody(type_name, value)
        data = raw_signed(envelope({"type": type_name, "value": value, "labels": []}))
        with pytest.raises(err.InvalidHashError):
            decode_record(data, FED)


@pytest.mark.parametrize("type_name", sorted(HEX_CHARS))
def test_canonical_value_of_user_input(type_name: str) -> None:
    value = "aB" * (HEX_CHARS[type_name] // 2)
    assert canonical_value(type_name, f"  {value}\n") == value.lower()
    with pytest.raises(err.InvalidHashError):
        canonical_value(type_name, value + "0")


def test_unknown_signal_type() -> None:
    for name in ["tlsh", "PDQ", "", "md5 "]:
        with pytest.raises(err.UnknownSignalTypeError):
            SignalBody(name, "0" * 32)
    with pytest.raises(err.UnknownSignalTypeError):
        canonical_value("video-md5", "0" * 32)


def test_distances() -> None:
    assert hamming_distance("00", "ff") == 8
    assert hamming_distance("0f" * 32, "0f" * 32) == 0
    assert distance("pdq", "0" * 64, "1" + "0" * 63) == 1
    assert distance("phash", "f" * 16, "0" * 16) == 64
    assert distance("md5", "a" * 32, "a" * 32) == 0
    assert distance("md5", "a" * 32, "b" * 32) is None
    assert distance("url", "https://a.example/", "https://b.example/") is None


# --- labels -------------------------------------------------------------------------------------

GOOD_LABELS: list[tuple[str, ...]] = [
    (),
    ("a",),
    ("0",),
    ("a" * 64,),
    ("behaviour:imminent-threat", "entity:x", "incident:2019-03-15"),
    ("a.b_c:d-e",),
    tuple(f"l{i:02}" for i in range(MAX_LABELS)),
]
BAD_LABELS: list[object] = [
    ["B"],
    ["-a"],
    [".a"],
    [":a"],
    ["_a"],
    [""],
    ["a" * 65],
    ["a b"],
    ["é"],
    ["a/b"],
    ["b", "a"],
    ["a", "a"],
    [f"l{i:02}" for i in range(MAX_LABELS + 1)],
    [1],
    [None],
    "entity:x",
    None,
]


@pytest.mark.parametrize("labels", GOOD_LABELS, ids=repr)
def test_good_labels(labels: tuple[str, ...]) -> None:
    assert check_labels(list(labels)) == labels
    record = signed(SignalBody("md5", "0" * 32, labels))
    assert decode_record(record.canonical, FED).body == record.body
    assert signed(OpinionBody(ID, "seen", labels)).body.labels == labels  # type: ignore[union-attr]


@pytest.mark.parametrize("labels", BAD_LABELS, ids=repr)
def test_bad_labels(labels: object) -> None:
    with pytest.raises(err.InvalidLabelError):
        check_labels(labels)
    for kind, body in [
        ("signal", {"type": "md5", "value": "0" * 32, "labels": labels}),
        ("opinion", {"signal": ID, "verdict": "seen", "labels": labels}),
    ]:
        with pytest.raises(err.InvalidLabelError):
            decode_record(raw_signed(envelope(body, kind)), FED)


def test_normalise_labels() -> None:
    assert normalise_labels([" Entity:X ", "entity:x", "Incident:1"]) == ("entity:x", "incident:1")
    with pytest.raises(err.InvalidLabelError):
        normalise_labels(["not ok"])


def test_taxonomy() -> None:
    assert check_taxonomy(list(DEFAULT_TAXONOMY)) == DEFAULT_TAXONOMY
    assert in_taxonomy("entity:anything", DEFAULT_TAXONOMY)
    assert in_taxonomy("behaviour:glorification", DEFAULT_TAXONOMY)
    assert not in_taxonomy("behaviour:other", DEFAULT_TAXONOMY)
    assert not in_taxonomy("entity", DEFAULT_TAXONOMY)
    assert in_taxonomy("anything", ())
    check_in_taxonomy(["entity:x", "incident:1"], DEFAULT_TAXONOMY)
    with pytest.raises(err.InvalidLabelError):
        check_in_taxonomy(["spam"], DEFAULT_TAXONOMY)
    for bad in [["b", "a"], ["a", "a"], ["A"], "entity:", [1]]:
        with pytest.raises(err.InvalidLabelError):
            check_taxonomy(bad)


# --- bodies that cannot be constructed ------------------------------------------------------------

INVALID_BODIES: list[tuple[str, Any, type[RemoteProtocolError]]] = [
    ("signal note empty", lambda: SignalBody("md5", "0" * 32, note=""), err.SchemaError),
    ("signal note 1001", lambda: SignalBody("md5", "0" * 32, note="x" * 1001), err.SchemaError),
    ("signal expires 0", lambda: SignalBody("md5", "0" * 32, expires=0), err.SchemaError),
    ("signal expires 2^53", lambda: SignalBody("md5", "0" * 32, expires=2**53), err.SchemaError),
    ("signal expires bool", lambda: SignalBody("md5", "0" * 32, expires=True), err.SchemaError),
    ("signal value int", lambda: SignalBody("md5", 5), err.SchemaError),  # type: ignore[arg-type]
    ("retract bad id", lambda: RetractBody("x"), err.SchemaError),
    ("retract empty reason", lambda: RetractBody(ID, ""), err.SchemaError),
    ("opinion verdict", lambda: OpinionBody(ID, "agree"), err.SchemaError),
    ("opinion labels", lambda: OpinionBody(ID, "seen", ("b", "a")), err.InvalidLabelError),
    ("announce empty name", lambda: AnnounceBody(""), err.SchemaError),
    ("announce padded name", lambda: AnnounceBody(" n"), err.SchemaError),
    ("announce control in name", lambda: AnnounceBody("a\x85b"), err.SchemaError),
    ("announce 101 char name", lambda: AnnounceBody("n" * 101), err.SchemaError),
    ("announce url", lambda: AnnounceBody("n", ("https://A.example",)), err.SchemaError),
    ("announce ftp url", lambda: AnnounceBody("n", ("ftp://a.example/",)), err.SchemaError),
    (
        "announce 9 urls",
        lambda: AnnounceBody("n", tuple(f"https://{i}.example/" for i in range(9))),
        err.SchemaError,
    ),
    ("announce tls", lambda: AnnounceBody("n", (), "x"), err.SchemaError),
    ("vote action", lambda: VoteBody("ban", ID), err.SchemaError),
    ("vote member", lambda: VoteBody("admit", "x", name="n", role="member"), err.SchemaError),
    ("admit without name", lambda: VoteBody("admit", ID, role="member"), err.SchemaError),
    ("admit bad role", lambda: VoteBody("admit", ID, name="n", role="admin"), err.SchemaError),
    (
        "admit with after",
        lambda: VoteBody("admit", ID, name="n", role="member", after=1),
        err.SchemaError,
    ),
    ("remove without after", lambda: VoteBody("remove", ID), err.SchemaError),
    ("remove with name", lambda: VoteBody("remove", ID, name="n", after=1), err.SchemaError),
    ("remove after -1", lambda: VoteBody("remove", ID, after=-1), err.SchemaError),
    ("rotate key", lambda: RotateBody(ID.upper(), "0" * 128), err.SchemaError),
]


@pytest.mark.parametrize(
    ("make", "error"), [(m, e) for _, m, e in INVALID_BODIES], ids=[n for n, _, _ in INVALID_BODIES]
)
def test_invalid_body_cannot_be_constructed(make: Any, error: type[RemoteProtocolError]) -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        make()
    assert type(raised.value) is error


def test_body_limits_are_inclusive() -> None:
    assert SignalBody("md5", "0" * 32, note="😀" * 1000).note == "😀" * 1000  # code points
    assert SignalBody("md5", "0" * 32, expires=2**53 - 1).expires == 2**53 - 1
    assert AnnounceBody("n" * 100, tuple(f"https://{i}.example/" for i in range(8))).name
    assert VoteBody("remove", ID, after=0).after == 0


# --- decoding: keys, nulls, types -----------------------------------------------------------------

DECODE_ERRORS: list[tuple[str, dict[str, Any], type[RemoteProtocolError]]] = [
    (
        "null note",
        envelope({"type": "md5", "value": "0" * 32, "labels": [], "note": None}),
        err.SchemaError,
    ),
    (
        "null expires",
        envelope({"type": "md5", "value": "0" * 32, "labels": [], "expires": None}),
        err.SchemaError,
    ),
    ("null reason", envelope({"signal": ID, "reason": None}, "retract"), err.SchemaError),
    (
        "null opinion note",
        envelope({"signal": ID, "verdict": "seen", "labels": [], "note": None}, "opinion"),
        err.SchemaError,
    ),
    ("null tls", envelope({"name": "n", "urls": [], "tls": None}, "announce"), err.SchemaError),
    (
        "null labels",
        envelope({"type": "md5", "value": "0" * 32, "labels": None}),
        err.InvalidLabelError,
    ),
    ("null value", envelope({"type": "md5", "value": None, "labels": []}), err.SchemaError),
    (
        "null type",
        envelope({"type": None, "value": "0" * 32, "labels": []}),
        err.UnknownSignalTypeError,
    ),
    ("null kind", envelope({}, None), err.UnknownKindError),  # type: ignore[arg-type]
    ("list kind", envelope({}, []), err.UnknownKindError),  # type: ignore[arg-type]
    ("object kind", envelope({}, {"a": 1}), err.UnknownKindError),  # type: ignore[arg-type]
    ("uppercase kind", envelope({"signal": ID}, "RETRACT"), err.UnknownKindError),
    (
        "announce urls not a list",
        envelope({"name": "n", "urls": "https://a.example/"}, "announce"),
        err.SchemaError,
    ),
    (
        "announce url not a string",
        envelope({"name": "n", "urls": [1]}, "announce"),
        err.SchemaError,
    ),
    (
        "announce url not http(s)",
        envelope({"name": "n", "urls": ["ftp://a.example/"]}, "announce"),
        err.SchemaError,
    ),
    (
        "announce url unparseable",
        envelope({"name": "n", "urls": ["https://[::1/"]}, "announce"),
        err.SchemaError,
    ),
    ("vote without action", envelope({"member": ID, "after": 1}, "vote"), err.SchemaError),
    (
        "vote admit missing member",
        envelope({"action": "admit", "name": "n", "role": "member"}, "vote"),
        err.SchemaError,
    ),
    ("rotate extra key", envelope({"new_key": ID, "old_key": ID}, "rotate"), err.SchemaError),
    ("body array", envelope([], "rotate"), err.SchemaError),  # type: ignore[arg-type]
    ("body string", envelope("x", "rotate"), err.SchemaError),  # type: ignore[arg-type]
    ("version 0", envelope({"signal": ID}, "retract", v=0), err.UnsupportedVersionError),
    ("version string", envelope({"signal": ID}, "retract", v="1"), err.UnsupportedVersionError),
    ("version true", envelope({"signal": ID}, "retract", v=True), err.UnsupportedVersionError),
    ("ts string", envelope({"signal": ID}, "retract", ts="1"), err.SchemaError),
    (
        "ts 2^53-1 + prev at seq 1",
        envelope({"signal": ID}, "retract", ts=2**53 - 1, prev=ID),
        err.SchemaError,
    ),
    (
        "seq 2^53-1 without prev",
        envelope({"signal": ID}, "retract", seq=2**53 - 1),
        err.SchemaError,
    ),
]


@pytest.mark.parametrize(
    ("unsigned", "error"),
    [(u, e) for _, u, e in DECODE_ERRORS],
    ids=[n for n, _, _ in DECODE_ERRORS],
)
def test_decode_rejection(unsigned: dict[str, Any], error: type[RemoteProtocolError]) -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        decode_record(raw_signed(unsigned), FED)
    assert type(raised.value) is error


def test_decode_accepts_the_largest_integers() -> None:
    unsigned = envelope({"signal": ID}, "retract", seq=2**53 - 1, prev=ID, ts=2**53 - 1)
    record = decode_record(raw_signed(unsigned), FED)
    assert (record.seq, record.ts) == (2**53 - 1, 2**53 - 1)


def test_decode_accepts_ts_zero() -> None:
    assert decode_record(raw_signed(envelope({"signal": ID}, "retract", ts=0)), FED).ts == 0


def test_a_record_names_its_own_canonical_bytes() -> None:
    record = signed(SignalBody("md5", "0" * 32, note='quote " and \\ and \u2028 and 😀'))
    assert json.loads(record.text)["body"]["note"] == 'quote " and \\ and \u2028 and 😀'
    assert "\\u2028" not in record.text


def test_rotation_needs_the_new_keys_proof() -> None:
    """A member cannot rotate onto a key it does not hold (e.g. an applicant's)."""
    forged = RotateBody(OTHER.public, rotation(KEY, fed=FED, old=KEY.public).proof)
    with pytest.raises(err.SignatureError):
        signed(forged, seq=2, prev=ID)
    other_federation = rotation(OTHER, fed="f" * 64, old=KEY.public)
    with pytest.raises(err.SignatureError):
        signed(other_federation, seq=2, prev=ID)
    record = signed(ROTATION, seq=2, prev=ID)
    tampered = record.canonical.replace(ROTATION.proof.encode(), forged.proof.encode())
    assert tampered != record.canonical
    unsigned = records_proof_case(tampered)
    with pytest.raises(err.SignatureError):
        decode_record(unsigned, FED)


def records_proof_case(data: bytes) -> bytes:
    """Re-sign tampered record bytes with the author's key, so only the proof is wrong."""
    obj = json.loads(data)
    del obj["sig"]
    obj["sig"] = KEY.sign(RECORD_DOMAIN + encode_canonical(obj))
    return encode_canonical(obj)


@pytest.mark.parametrize("labels", [[[]], [{}], ["entity:x", ["entity:y"]], [1], [None]])
def test_labels_that_are_not_strings_are_refused_not_crashed(labels: list[object]) -> None:
    """The fast path caches label lists by value: unhashable labels must still be an error."""
    from protocol.bodies import parse_body

    with pytest.raises(RemoteProtocolError):
        parse_body("signal", {"type": "md5", "value": "0" * 32, "labels": labels})


_signal_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60),
    st.sampled_from([0, 1, 2**53 - 1, 2**53, 1_800_000_000_000]),
    st.sampled_from(["md5", "pdq", "url", "sha256", "MD5", "", "x" * 1001, "note"]),
    st.sampled_from(["0" * 32, "A" * 32, "f" * 64, "0" * 31, "https://example.com/a"]),
    st.lists(st.sampled_from(["entity:x", "entity:y", "B", "", "a b"]), max_size=3),
    st.lists(st.one_of(st.lists(st.none(), max_size=1), st.integers(), st.none()), max_size=2),
    st.text(max_size=5),
)


def _without(obj: dict[str, object], key: str | None) -> dict[str, object]:
    return {k: v for k, v in obj.items() if k != key}


_VALID_SIGNAL: dict[str, object] = {
    "type": "md5",
    "value": "0" * 32,
    "labels": ["entity:x"],
    "note": "n",
}
_signal_objects = st.one_of(
    st.dictionaries(
        st.sampled_from(["type", "value", "labels", "note", "expires", "extra"]),
        _signal_values,
        max_size=6,
    ),
    st.builds(  # a valid body with one member replaced, added or dropped: mostly near misses
        lambda key, value, drop: _without(_VALID_SIGNAL | {key: value}, drop),
        st.sampled_from(["type", "value", "labels", "note", "expires", "extra"]),
        _signal_values,
        st.sampled_from([None, "note", "labels", "type"]),
    ),
    st.fixed_dictionaries(  # valid bodies of every shape
        {
            "type": st.just("sha256"),
            "value": st.sampled_from(["0" * 64, "ab" * 32]),
            "labels": st.sampled_from([[], ["entity:x"], ["behaviour:glorification", "entity:x"]]),
        },
        optional={
            "note": st.text(min_size=1, max_size=3),
            "expires": st.integers(1, 2**53 - 1),
        },
    ),
)


@settings(max_examples=depth(3000), deadline=None)
@given(_signal_objects)
def test_signal_fast_path_agrees_with_the_constructor(obj: dict[str, object]) -> None:
    """Whenever the fast path builds a signal body, the constructor builds the same one; when
    the constructor refuses a body, the fast path does not build it either."""
    from protocol.bodies import parse_signal_checked, signal_fast

    obj = dict(sorted(obj.items()))  # members in canonical order, as a decoder meets them
    fast = signal_fast(dict(obj))
    try:
        checked = parse_signal_checked(dict(obj))
    except RemoteProtocolError:
        event("refused")
        assert fast is None
        return
    event("built by the fast path" if fast is not None else "built by the constructor only")
    assert fast is None or fast == checked
