"""Records: the signed, canonical JSON objects that everything in hashmesh is made of.

``decode_record`` turns bytes from anywhere into a ``Record`` or raises a
``RemoteProtocolError``; ``sign_record`` makes a new one. A ``Record`` cannot exist unless
its bytes are canonical, its fields and body are valid for its kind, it names the federation
it was checked against, and its signature verifies: the constructor checks all of that, and
the decoder performs the same checks in the same order (SPEC section 4) without re-encoding.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from protocol.bodies import (
    BODY_TYPES,
    Body,
    RotateBody,
    check_rotation_proof,
    parse_body,
    signal_fast,
)
from protocol.encoding import (
    MAX_RECORD_BYTES,
    MAX_SAFE_INTEGER,
    JsonValue,
    decode_canonical,
    encode_canonical,
)
from protocol.errors import (
    FederationMismatchError,
    LocalProtocolError,
    OversizeError,
    RemoteProtocolError,
    SchemaError,
    UnknownKindError,
    UnsupportedVersionError,
)
from protocol.keys import (
    SigningKey,
    is_public_key,
    is_signature,
    verify_signature,
    verify_signed,
)

RECORD_DOMAIN: Final = b"hashmesh/record/v1\n"
RECORD_VERSION: Final = 1
RECORD_KEYS: Final = frozenset({"v", "fed", "author", "seq", "prev", "ts", "kind", "body", "sig"})
_RECORD_KEY_ORDER: Final = sorted(RECORD_KEYS)
_ENVELOPE_HEX: Final = re.compile(r"[0-9a-f]+")
# Federation ids and author keys repeat across records: remember the ones seen valid.
_KNOWN_HEX: set[str] = set()
# Per author, the id of the last record decoded: the next record's prev, in a log's order.
_LAST_IDS: dict[str, str] = {}
_SIG_MEMBER_BYTES: Final = len(b',"sig":"') + 128 + 1


def is_record_id(text: object) -> bool:
    """Record ids, federation ids and public keys share one shape: 64 lowercase hex."""
    return is_public_key(text)


@dataclass(frozen=True, slots=True)
class Record:
    """One valid, signed record. Constructing it verifies it."""

    fed: str
    author: str
    seq: int
    prev: str | None
    ts: int
    body: Body
    sig: str
    id: str = field(init=False)
    canonical: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_envelope(self.fed, self.author, self.seq, self.prev, self.ts, self.sig)
        canonical = encode_canonical(self.to_json())
        if len(canonical) > MAX_RECORD_BYTES:
            raise OversizeError("record exceeds the size limit", actual=len(canonical))
        signing_input = RECORD_DOMAIN + encode_canonical(self.unsigned_json())
        record_id = hashlib.sha256(signing_input).hexdigest()
        verify_signature(self.author, signing_input, self.sig, record_id=record_id, seq=self.seq)
        _check_proofs(self.body, self.fed, self.author, self.seq)
        object.__setattr__(self, "id", record_id)
        object.__setattr__(self, "canonical", canonical)

    @property
    def kind(self) -> str:
        return self.body.KIND

    def unsigned_json(self) -> dict[str, JsonValue]:
        return {
            "v": RECORD_VERSION,
            "fed": self.fed,
            "author": self.author,
            "seq": self.seq,
            "prev": self.prev,
            "ts": self.ts,
            "kind": self.kind,
            "body": self.body.to_json(),
        }

    def to_json(self) -> dict[str, JsonValue]:
        return self.unsigned_json() | {"sig": self.sig}

    @property
    def text(self) -> str:
        return self.canonical.decode("utf-8")


def _check_envelope(  # the hot path takes the six fields positionally
    fed: object, author: object, seq: object, prev: object, ts: object, sig: object
) -> None:
    if type(seq) is not int or not 1 <= seq <= MAX_SAFE_INTEGER:
        raise SchemaError("seq must be a positive integer", field="seq", actual=seq)
    if type(ts) is not int or not 0 <= ts <= MAX_SAFE_INTEGER:
        raise SchemaError("ts must be a non-negative integer", field="ts", actual=ts)
    if seq == 1 and prev is not None:
        raise SchemaError("prev must be null at seq 1", field="prev", seq=seq, actual=prev)
    if (
        type(fed) is str
        and type(author) is str
        and type(sig) is str
        and (prev is None or type(prev) is str)
        and (prev is not None or seq == 1)  # after seq 1, prev names the previous record
        and (fed in _KNOWN_HEX or _ENVELOPE_HEX.fullmatch(fed) is not None)
        and (author in _KNOWN_HEX or _ENVELOPE_HEX.fullmatch(author) is not None)
        and _ENVELOPE_HEX.fullmatch(sig if prev is None else sig + prev) is not None
        and len(fed) == len(author) == 64
        and len(sig) == 128
        and (prev is None or len(prev) == 64)
    ):
        if len(_KNOWN_HEX) < 100_000:
            _KNOWN_HEX.add(author)
            _KNOWN_HEX.add(fed)
        return
    _explain_envelope(fed, author, seq, prev, sig)


def _explain_envelope(fed: object, author: object, seq: object, prev: object, sig: object) -> None:
    if not is_record_id(fed):
        raise SchemaError("fed must be 64 lowercase hex", field="fed", actual=fed)
    if not is_public_key(author):
        raise SchemaError("author must be 64 lowercase hex", field="author", actual=author)
    if seq != 1 and not is_record_id(prev):
        raise SchemaError("prev must be a record id after seq 1", field="prev", actual=prev)
    if not is_signature(sig):
        raise SchemaError("sig must be 128 lowercase hex", field="sig", actual=sig)
    raise LocalProtocolError("envelope fast path and explanation disagree")


def sign_record(
    key: SigningKey,
    *,
    fed: str,
    seq: int,
    prev: str | None,
    ts: int,
    body: Body,
) -> Record:
    """A new record by key: the caller supplies its log position and the time."""
    unsigned = {
        "v": RECORD_VERSION,
        "fed": fed,
        "author": key.public,
        "seq": seq,
        "prev": prev,
        "ts": ts,
        "kind": body.KIND,
        "body": body.to_json(),
    }
    try:
        _check_envelope(fed, key.public, seq, prev, ts, "0" * 128)
    except SchemaError as e:
        raise LocalProtocolError(f"cannot sign: {e}") from e
    sig = key.sign(RECORD_DOMAIN + encode_canonical(unsigned))
    return Record(fed=fed, author=key.public, seq=seq, prev=prev, ts=ts, body=body, sig=sig)


def unsigned_bytes(canonical: bytes) -> bytes:
    """JCS(record without "sig"), cut from the record's canonical bytes.

    In canonical form the top-level ``"sig"`` member sits between ``"seq"`` and ``"ts"``, and
    only integers follow it, so its last occurrence is the member itself; removing it yields
    exactly the canonical encoding of the unsigned record (SPEC section 3.2).
    """
    i = canonical.rindex(b',"sig":"')
    return canonical[:i] + canonical[i + _SIG_MEMBER_BYTES :]


def decode_record(data: bytes, fed: str) -> Record:
    """Verify record bytes from anywhere and return the record; raises RemoteProtocolError."""
    obj = _fast_record_object(data)
    if obj is None:  # not the common valid case: the precise decoder names what is wrong
        return _decode_checked(decode_canonical(data), data, fed)
    try:
        return _decode_fast(obj, data, fed) or _decode_checked(obj, data, fed)
    except RemoteProtocolError as e:
        raise _precise(data, e) from None


def _decode_fast(obj: dict[str, Any], data: bytes, fed: str) -> Record | None:
    """The record, when obj's envelope is valid (checks 3-14 of SPEC 4.2 all pass).

    obj comes from ``_fast_record_object``, so its members are the nine of 4.1 in order.
    If any envelope check fails this returns None and ``_decode_checked`` names the first
    failure; from the body on, errors are raised here in SPEC order.
    """
    author, seq, prev, ts, sig, version = (
        obj["author"], obj["seq"], obj["prev"], obj["ts"], obj["sig"], obj["v"],
    )  # fmt: skip
    if not (
        type(version) is int
        and version == RECORD_VERSION
        and type(seq) is int
        and 1 <= seq <= MAX_SAFE_INTEGER
        and type(ts) is int
        and 0 <= ts <= MAX_SAFE_INTEGER
        and obj["fed"] == fed
        and type(author) is str
        and (author in _KNOWN_HEX or (len(author) == 64 and _ENVELOPE_HEX.fullmatch(author)))
        and (
            (seq == 1 and prev is None)
            or (
                seq > 1
                and type(prev) is str
                and len(prev) == 64
                # a log arrives in order: prev is usually the id decoded last for author
                and (_LAST_IDS.get(author) == prev or _ENVELOPE_HEX.fullmatch(prev) is not None)
            )
        )
        and type(sig) is str
        and len(sig) == 128
        and sig.islower()  # with the length checks below: 128 lowercase hex digits
    ):
        return None
    try:
        sig_bytes = bytes.fromhex(sig)  # skips whitespace, so check the length too
    except ValueError:
        return None
    if len(sig_bytes) != 64:
        return None
    if len(_KNOWN_HEX) < 100_000:
        _KNOWN_HEX.add(author)
    kind, body_json = obj["kind"], obj["body"]
    body: Body | None = (
        signal_fast(body_json)  # the common case; it checks the body's member order itself
        if kind == "signal" and type(body_json) is dict
        else None
    )
    if body is None:
        if type(body_json) is dict and not _ordered_ascii_keys(body_json):
            # Not canonical (orjson keeps member order), or keys no body has: the precise path.
            return _decode_checked(decode_canonical(data), data, fed)
        body = _parse_kind_body(obj)
    # libsodium checks signature + message as one buffer: build it once, hash its tail.
    cut = data.rindex(b',"sig":"')
    view = memoryview(data)
    signed = b"".join((sig_bytes, RECORD_DOMAIN, view[:cut], view[cut + _SIG_MEMBER_BYTES :]))
    record_id = hashlib.sha256(memoryview(signed)[64:]).hexdigest()
    verify_signed(author, signed, record_id=record_id, seq=seq)
    if type(body) is RotateBody:
        check_rotation_proof(body, fed=fed, old=author, seq=seq)
    if len(_LAST_IDS) < 100_000 or author in _LAST_IDS:
        _LAST_IDS[author] = record_id
    return new_record(obj["fed"], author, seq, prev, ts, body, sig, record_id, data)


def _ordered_ascii_keys(obj: dict[str, Any]) -> bool:
    keys = list(obj)
    return keys == sorted(keys) and "".join(keys).isascii()


def _decode_checked(obj: Any, data: bytes, fed: str) -> Record:
    if type(obj) is not dict:
        raise SchemaError("a record is a JSON object")
    if obj.keys() != RECORD_KEYS:
        raise SchemaError(
            "record keys must be " + ",".join(sorted(RECORD_KEYS)), actual=",".join(obj)
        )
    if type(obj["v"]) is not int or obj["v"] != RECORD_VERSION:
        raise UnsupportedVersionError("unsupported record version", expected=1, actual=obj["v"])
    author, seq, sig = obj["author"], obj["seq"], obj["sig"]
    # fed is compared with the (valid) expected id first: when equal it needs no hex check.
    _check_envelope(
        fed if obj["fed"] == fed else obj["fed"], author, seq, obj["prev"], obj["ts"], sig
    )
    if obj["fed"] != fed:
        raise FederationMismatchError(
            "record belongs to another federation", author=author, seq=seq, expected=fed,
            actual=obj["fed"],
        )  # fmt: skip
    body = _parse_kind_body(obj)
    signing_input = RECORD_DOMAIN + unsigned_bytes(data)
    record_id = hashlib.sha256(signing_input).hexdigest()
    verify_signature(author, signing_input, sig, record_id=record_id, seq=seq)
    _check_proofs(body, fed, author, seq)
    return _trusted_record(obj, body, record_id, data)


def _check_proofs(body: Body, fed: str, author: str, seq: int) -> None:
    """Signatures inside a body that only the record's context can check (SPEC 5.2)."""
    if isinstance(body, RotateBody):
        check_rotation_proof(body, fed=fed, old=author, seq=seq)


def _fast_record_object(data: bytes) -> Any:
    """The record's JSON object if orjson re-encodes it to exactly these bytes, else None.

    orjson escapes strings exactly as JCS does and keeps member order, so equal bytes mean the
    input has no whitespace, no escapes JCS would not write and no duplicate keys. The record's
    member order is checked here, the body's by ``_decode_fast``; a valid body has no deeper
    objects, so an unordered one deeper down fails the schema and ``_precise`` reports it.
    Floats and out-of-range integers are not checked: every field's type is checked by the
    schema, and any error found after this fast path is re-examined by ``decode_canonical``
    first (``_precise``), so a float still raises FloatNotAllowedError.
    """
    if len(data) > MAX_RECORD_BYTES:
        return None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or list(obj) != _RECORD_KEY_ORDER:
        return None
    return obj if orjson.dumps(obj) == data else None


def _precise(data: bytes, error: RemoteProtocolError) -> RemoteProtocolError:
    """The error to report for data: an encoding error takes precedence over a later one."""
    decode_canonical(data)
    return error


def _parse_kind_body(obj: dict[str, Any]) -> Body:
    kind = obj["kind"]
    if type(kind) is not str or kind not in BODY_TYPES:  # a list or object is unhashable
        raise UnknownKindError(
            f"unknown record kind {kind!r}", field="kind", expected="|".join(BODY_TYPES),
            actual=kind, author=obj["author"], seq=obj["seq"],
        )  # fmt: skip
    try:
        return parse_body(kind, obj["body"])
    except SchemaError as e:
        e.context = type(e.context)(
            **{**_context_dict(e), "author": obj["author"], "seq": obj["seq"]}
        )
        raise


def _context_dict(e: SchemaError) -> dict[str, Any]:
    return {k: getattr(e.context, k) for k in type(e.context).__slots__}


_RECORD_SLOTS: Final = tuple(Record.__dict__[name].__set__ for name in Record.__slots__)


def new_record(  # one argument per slot, in slot order
    fed: str,
    author: str,
    seq: int,
    prev: str | None,
    ts: int,
    body: Body,
    sig: str,
    record_id: str,
    data: bytes,
) -> Record:
    """A Record from parts that were checked: by the decoder, which has made every check of
    Record's constructor, or (``protocol.batch.trusted_record``) when the bytes were decoded
    before. Never for parts from outside."""
    record = object.__new__(Record)
    set_fed, set_author, set_seq, set_prev, set_ts, set_body, set_sig, set_id, set_canonical = (
        _RECORD_SLOTS
    )
    set_fed(record, fed)
    set_author(record, author)
    set_seq(record, seq)
    set_prev(record, prev)
    set_ts(record, ts)
    set_body(record, body)
    set_sig(record, sig)
    set_id(record, record_id)
    set_canonical(record, data)
    return record


def _trusted_record(obj: dict[str, Any], body: Body, record_id: str, data: bytes) -> Record:
    """A Record from a checked JSON object (the benchmarks' generators sign their own)."""
    return new_record(
        obj["fed"], obj["author"], obj["seq"], obj["prev"], obj["ts"], body, obj["sig"],
        record_id, data,
    )  # fmt: skip


def record_id_of(canonical: bytes) -> str:
    """The id of a record's canonical bytes, without verifying them (for stored bytes)."""
    return hashlib.sha256(RECORD_DOMAIN + unsigned_bytes(canonical)).hexdigest()
