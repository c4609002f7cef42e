"""Canonical JSON and the record decoder: JCS equality, round trips, fuzzing, the fast path."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import rfc8785
from fuzzdepth import depth
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from protocol import (
    AnnounceBody,
    Body,
    LocalProtocolError,
    OpinionBody,
    RemoteProtocolError,
    RetractBody,
    SignalBody,
    SigningKey,
    VoteBody,
    decode_canonical,
    decode_record,
    encode_canonical,
    sign_record,
)
from protocol import errors as err
from protocol import records as records_module
from protocol.bodies import rotation
from protocol.encoding import MAX_RECORD_BYTES, MAX_SAFE_INTEGER
from protocol.records import RECORD_DOMAIN

KEY = SigningKey(hashlib.sha256(b"test_encoding").digest())
OTHER = SigningKey(hashlib.sha256(b"test_encoding other").digest())
FED = hashlib.sha256(b"test_encoding federation").hexdigest()
ID = hashlib.sha256(b"some record").hexdigest()

# --- the value space -------------------------------------------------------------------------

characters = st.one_of(
    st.characters(codec="utf-8"),  # any scalar value (no surrogates), weighted to the BMP
    st.characters(min_codepoint=0, max_codepoint=0x7F),  # ASCII, controls included
    st.characters(min_codepoint=0xE000, max_codepoint=0xFFFF),  # sorts after astral in UTF-16
    st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),  # astral (surrogate pairs)
)
strings = st.text(characters, max_size=12)
integers = st.one_of(
    st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
    st.sampled_from([0, -1, 1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 2**31, -(2**31)]),
)
scalars = st.none() | st.booleans() | integers | strings
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(strings, inner, max_size=5),
    max_leaves=25,
)


def strictly_equal(a: object, b: object) -> bool:
    """Equality that tells bool from int (True == 1 in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(strictly_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) or (
            a.keys() == b.keys() and all(strictly_equal(a[k], b[k]) for k in a)
        )
    return a == b


@settings(max_examples=depth(600, floor=150), deadline=None)
@given(values)
def test_encoding_equals_rfc8785(value: Any) -> None:
    assert encode_canonical(value) == rfc8785.dumps(value)


@settings(max_examples=depth(600, floor=150), deadline=None)
@given(values)
def test_round_trip(value: Any) -> None:
    data = encode_canonical(value)
    decoded = decode_canonical(data, max_bytes=len(data))
    assert strictly_equal(decoded, value)
    assert encode_canonical(decoded) == data


@settings(max_examples=depth(300, floor=75), deadline=None)
@given(st.dictionaries(strings, scalars, min_size=2, max_size=8))
def test_decoder_rejects_members_in_any_other_order(obj: dict[str, Any]) -> None:
    canonical = encode_canonical(obj)
    reordered = json.dumps(
        dict(reversed(list(json.loads(canonical).items()))),
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    assume(reordered != canonical)
    with pytest.raises(err.NonCanonicalError):
        decode_canonical(reordered)


def test_utf16_order_differs_from_code_point_order() -> None:
    # U+E000 < U+1F600 as code points, but the surrogate pair of U+1F600 (D83D DE00) sorts first.
    value = {"\ue000": 1, "\U0001f600": 2, "a": 3}
    assert encode_canonical(value) == '{"a":3,"😀":2,"\ue000":1}'.encode()
    assert encode_canonical(value) == rfc8785.dumps(value)
    with pytest.raises(err.NonCanonicalError):
        decode_canonical('{"a":3,"\ue000":1,"😀":2}'.encode())


@pytest.mark.parametrize(
    "value",
    [1.5, float("nan"), 2**53, -(2**53), {1: 2}, b"bytes", {"k": {1.0}}, object(), "\ud800"],
    ids=lambda v: type(v).__name__ if type(v) is object else repr(v),
)
def test_encoding_outside_the_value_space_is_a_local_error(value: object) -> None:
    with pytest.raises(LocalProtocolError):
        encode_canonical(value)


def test_tuples_encode_as_arrays() -> None:
    assert encode_canonical({"a": ("x", 1)}) == b'{"a":["x",1]}'


# --- rejection classes of the canonical decoder -----------------------------------------------

REJECTIONS: list[tuple[str, bytes, type[RemoteProtocolError]]] = [
    ("oversize", b'"' + b"a" * MAX_RECORD_BYTES + b'"', err.OversizeError),
    ("invalid utf-8", b'"\xff"', err.InvalidUtf8Error),
    ("truncated utf-8 sequence", b'"\xe2\x82"', err.InvalidUtf8Error),
    ("utf-8 encoded surrogate", b'"\xed\xa0\x80"', err.InvalidUtf8Error),
    ("overlong utf-8", b'"\xc0\xaf"', err.InvalidUtf8Error),
    ("empty", b"", err.MalformedJsonError),
    ("truncated", b'{"a":1', err.MalformedJsonError),
    ("trailing garbage", b"1 2", err.MalformedJsonError),
    ("single quotes", b"'a'", err.MalformedJsonError),
    ("leading zero", b"01", err.MalformedJsonError),
    ("plus sign", b"+1", err.MalformedJsonError),
    ("bom", b"\xef\xbb\xbf{}", err.MalformedJsonError),
    ("raw control character", b'"\x01"', err.MalformedJsonError),
    ("raw newline in string", b'"\n"', err.MalformedJsonError),
    ("trailing comma", b"[1,]", err.MalformedJsonError),
    ("deep nesting", b"[" * 4000 + b"]" * 4000, err.MalformedJsonError),
    ("duplicate key", b'{"a":1,"a":1}', err.DuplicateKeyError),
    ("duplicate key, different values", b'{"a":1,"a":2}', err.DuplicateKeyError),
    ("duplicate key nested", b'{"a":{"b":1,"b":1}}', err.DuplicateKeyError),
    ("fraction", b"1.5", err.FloatNotAllowedError),
    ("integral float", b"1.0", err.FloatNotAllowedError),
    ("exponent", b"1e3", err.FloatNotAllowedError),
    ("negative exponent", b"[-1E-3]", err.FloatNotAllowedError),
    ("NaN", b"NaN", err.FloatNotAllowedError),
    ("Infinity", b"[Infinity]", err.FloatNotAllowedError),
    ("-Infinity", b"-Infinity", err.FloatNotAllowedError),
    ("2^53", b"9007199254740992", err.IntegerRangeError),
    ("-2^53", b"-9007199254740992", err.IntegerRangeError),
    ("5000 digits", b"9" * 5000, err.IntegerRangeError),
    ("negative 5000 digits", b"-" + b"9" * 5000, err.IntegerRangeError),
    ("17 digits with value in range is impossible", b"10000000000000000", err.IntegerRangeError),
    ("whitespace", b"[1, 2]", err.NonCanonicalError),
    ("leading whitespace", b" 1", err.NonCanonicalError),
    ("trailing newline", b"1\n", err.NonCanonicalError),
    ("key order", b'{"b":1,"a":2}', err.NonCanonicalError),
    ("-0", b"-0", err.NonCanonicalError),
    ("escaped solidus", b'"a\\/b"', err.NonCanonicalError),
    ("unnecessary escape", b'"\\u0061"', err.NonCanonicalError),
    ("escaped non-ascii", b'"\\u00e9"', err.NonCanonicalError),
    ("escaped astral pair", b'"\\ud83d\\ude00"', err.NonCanonicalError),
    ("uppercase hex escape", b'"\\u001F"', err.NonCanonicalError),
    ("long form of a short escape", b'"\\u000a"', err.NonCanonicalError),
    ("lone high surrogate", b'"\\ud800"', err.NonCanonicalError),
    ("lone low surrogate", b'"\\udc00"', err.NonCanonicalError),
    ("reversed surrogates", b'"\\udc00\\ud800"', err.NonCanonicalError),
]


@pytest.mark.parametrize(
    ("data", "error"), [(d, e) for _, d, e in REJECTIONS], ids=[n for n, _, _ in REJECTIONS]
)
def test_decoder_rejection_class(data: bytes, error: type[RemoteProtocolError]) -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        decode_canonical(data)
    assert type(raised.value) is error


ACCEPTED: list[tuple[bytes, object]] = [
    (b"null", None),
    (b"true", True),
    (b"0", 0),
    (b"-1", -1),
    (b"9007199254740991", MAX_SAFE_INTEGER),
    (b"-9007199254740991", -MAX_SAFE_INTEGER),
    (b'""', ""),
    (b'"\\"\\\\\\b\\f\\n\\r\\t\\u0000\\u001f"', '"\\\b\f\n\r\t\x00\x1f'),
    ('"\x7f\u2028😀/"'.encode(), "\x7f\u2028😀/"),
    (b"[]", []),
    (b"{}", {}),
    (b'{"":0,"a":[{"b":null}]}', {"": 0, "a": [{"b": None}]}),
]


@pytest.mark.parametrize(("data", "value"), ACCEPTED, ids=[d.decode() for d, _ in ACCEPTED])
def test_decoder_accepts_canonical_bytes(data: bytes, value: object) -> None:
    assert strictly_equal(decode_canonical(data), value)
    assert encode_canonical(value) == data


def test_size_limit_is_inclusive_and_checked_before_parsing() -> None:
    exact = b'"' + b"a" * (MAX_RECORD_BYTES - 2) + b'"'
    assert decode_canonical(exact) == "a" * (MAX_RECORD_BYTES - 2)
    with pytest.raises(err.OversizeError):
        decode_canonical(b"\xff" * (MAX_RECORD_BYTES + 1))  # oversize wins over bad UTF-8
    with pytest.raises(err.OversizeError):
        decode_canonical(exact, max_bytes=MAX_RECORD_BYTES - 1)


# --- records: sample records, fuzzing, the fast path -----------------------------------------


def _bodies() -> list[Body]:
    return [
        SignalBody("pdq", "ab" * 32, ("behaviour:glorification", "entity:x"), "a note é😀"),
        SignalBody("url", "https://example.com/a?b=c", expires=1_800_000_000_000),
        SignalBody("md5", "0" * 32),
        RetractBody(ID, "mistake"),
        OpinionBody(ID, "dispute", ("entity:y",), "not it"),
        AnnounceBody("Node \u2028 One", ("https://a.example/", "http://b.example:8080/x"), ID),
        VoteBody("admit", OTHER.public, name="Other", role="member"),
        VoteBody("remove", OTHER.public, after=3),
        rotation(OTHER, fed=FED, old=KEY.public),
    ]


SAMPLES: list[bytes] = [
    sign_record(
        KEY, fed=FED, seq=seq, prev=None if seq == 1 else ID, ts=1_763_800_000_000, body=b
    ).canonical
    for seq, b in enumerate(_bodies(), start=1)
]


def _outcome(decode: Callable[[bytes], Any], data: bytes) -> tuple[str, str]:
    try:
        record = decode(data)
    except RemoteProtocolError as e:
        return ("rejected", type(e).__name__)
    return ("accepted", record.id)


def _precise_decode(data: bytes) -> Any:
    """The reference path: the canonical decoder, then the record checks."""
    return records_module._decode_checked(decode_canonical(data), data, FED)


@st.composite
def mutated_records(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "splice"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and at < len(data):
            data[at] = draw(st.sampled_from(b'"\\:,{}[]0123456789abcdefABCDEF-.eE \n\x00\xff\xc3'))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            token = draw(st.sampled_from(SPLICE_TOKENS))
            data[at : at + draw(st.integers(0, 6))] = token
    return bytes(data)


SPLICE_TOKENS = [
    b"1.0",
    b"1e2",
    b"-0",
    b"NaN",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"9007199254740992",
    b"99999999999999999999999",
    b'"\\ud800"',
    b'"\\u0041"',
    b'"\\/"',
    b' ",\\"x\\":1',
    b',"seq":1',
    b',"sig":"',
    b'"kind":[]',
]


@settings(
    max_examples=depth(10_000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.one_of(st.binary(max_size=600), mutated_records()))
def test_decoders_accept_or_raise_remote_protocol_error(data: bytes) -> None:
    for decode in (decode_canonical, lambda d: decode_record(d, FED)):
        with contextlib.suppress(RemoteProtocolError):  # anything else fails the test
            decode(data)


# --- signed variants: records with one field replaced, correctly signed ------------------------

field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, 2**64, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec="utf-8"), max_size=8),
    st.text(st.characters(), max_size=3),  # lone surrogates too, now and then
    st.sampled_from(
        [
            "",
            ID,
            ID.upper(),
            KEY.public,
            "signal",
            "opinion",
            "confirm",
            "member",
            "admit",
            "remove",
            "md5",
            "entity:x",
            "https://example.com/",
            "HTTPS://example.com",
            "x" * 1001,
        ]
    ),
    st.lists(st.sampled_from(["entity:x", "a", "B", "entity:x"]), max_size=3),
    st.builds(dict),  # a fresh object each time: variants mutate what they draw
    st.fixed_dictionaries({"b": st.just(1), "a": st.just(2)}),  # members out of order
)
body_keys = st.sampled_from(
    [
        *("type", "value", "labels", "note", "expires", "signal", "reason", "verdict", "name"),
        *("urls", "tls", "action", "member", "role", "after", "new_key", "extra", "\ue000"),
    ]
)
top_keys = st.sampled_from(["v", "fed", "author", "seq", "prev", "ts", "kind", "body", "x"])


SERIALISERS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "jcs-like": lambda o: json.dumps(
        o, ensure_ascii=False, separators=(",", ":"), sort_keys=True
    ).encode("utf-8", "surrogatepass"),
    "insertion-order": lambda o: json.dumps(o, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    ),
    "ascii-escapes": lambda o: json.dumps(o, separators=(",", ":"), sort_keys=True).encode(),
    "orjson-sorted": lambda o: orjson.dumps(o, option=orjson.OPT_SORT_KEYS),
    "spaced": lambda o: json.dumps(o, ensure_ascii=False, sort_keys=True).encode(
        "utf-8", "surrogatepass"
    ),
}


@st.composite
def signed_variants(draw: st.DrawFn) -> bytes:
    obj: dict[str, Any] = json.loads(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(0, 2))):
        if isinstance(obj.get("body"), dict) and draw(st.booleans()):
            key = draw(body_keys)
            if draw(st.integers(0, 4)) == 0:
                obj["body"].pop(key, None)
            else:
                obj["body"][key] = draw(field_values)
        else:
            key = draw(top_keys)
            if draw(st.integers(0, 6)) == 0:
                obj.pop(key, None)
            else:
                obj[key] = draw(field_values)
    obj["sig"] = "0" * 128
    serialise = SERIALISERS[draw(st.sampled_from(sorted(SERIALISERS)))]
    try:
        data = serialise(obj)
    except (TypeError, ValueError, orjson.JSONEncodeError):
        assume(False)
    placeholder = b',"sig":"' + b"0" * 128 + b'"'
    if placeholder in data:  # sign the bytes a verifier will cut out of the record
        unsigned = data.replace(placeholder, b"")
        sig = KEY.sign(RECORD_DOMAIN + unsigned).encode()
        data = data.replace(b"0" * 128, sig)
    return data


@settings(max_examples=depth(2500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(signed_variants(), signed_variants(), mutated_records()))
def test_fast_path_agrees_with_precise_path(data: bytes) -> None:
    fast = _outcome(lambda d: decode_record(d, FED), data)
    precise = _outcome(_precise_decode, data)
    event(fast[0] if fast[0] == "accepted" else fast[1])
    assert fast == precise
    if fast[0] == "accepted":
        record = decode_record(data, FED)
        assert record.canonical == data
        assert encode_canonical(record.to_json()) == data
        assert decode_canonical(data) == record.to_json()


def test_signed_variants_reach_acceptance_and_every_stage() -> None:
    """The strategy above is not vacuous: unmodified samples decode through both paths."""
    for data in SAMPLES:
        assert _outcome(lambda d: decode_record(d, FED), data)[0] == "accepted"
        assert _outcome(_precise_decode, data)[0] == "accepted"


def test_encoding_error_takes_precedence_over_a_schema_error() -> None:
    """orjson reads 1.0 and the fast path passes it on; the error reported is still the float."""
    obj = json.loads(SAMPLES[2])
    obj["seq"] = 1.0
    data = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    with pytest.raises(err.FloatNotAllowedError):
        decode_record(data, FED)
    obj["seq"] = 2**60
    with pytest.raises(err.IntegerRangeError):
        decode_record(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), FED)


@pytest.mark.parametrize("sample", range(len(SAMPLES)))
def test_a_signed_body_with_unordered_members_is_not_canonical(sample: int) -> None:
    """The fast path checks the body's member order itself: reversed members are refused."""
    obj: dict[str, Any] = json.loads(SAMPLES[sample])
    body = obj["body"]
    if len(body) < 2:
        pytest.skip("a one-member body has no order")
    obj["body"] = dict(reversed(body.items()))
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    data = orjson.dumps(unsigned)
    sig = KEY.sign(RECORD_DOMAIN + data)
    at = data.rindex(b',"ts":')
    signed = data[:at] + b',"sig":"' + sig.encode() + b'"' + data[at:]
    assert _outcome(_precise_decode, signed) == ("rejected", "NonCanonicalError")
    assert _outcome(lambda d: decode_record(d, FED), signed) == ("rejected", "NonCanonicalError")
