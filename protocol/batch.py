"""Verifying many records at once, and rebuilding records that were verified before.

Verification is the expensive part of merging records (an Ed25519 signature check each), so a
node spreads it over processes. ``verify_records`` is what such a worker runs: it checks every
record with ``decode_record`` -- exactly the checks a single record gets -- and answers with
compact results only (the record id, or the error's JSON), because shipping decoded objects
between processes costs more than parsing them again.

``trusted_record`` is that second parse, for bytes that ``decode_record`` has accepted before:
in a worker process, or before they were stored. It parses the JSON and builds the ``Record``
without checking the schema or the signature again, so it must never be given bytes from
outside. A caller that cannot vouch for its bytes uses ``decode_record``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any, Final

import orjson

from protocol.bodies import (
    AnnounceBody,
    Body,
    OpinionBody,
    RetractBody,
    RotateBody,
    SignalBody,
    VoteBody,
    new_signal_body,
)
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.records import RECORD_KEYS, Record, decode_record, new_record

VerifyResult = str | dict[str, object]  # a record id, or RemoteProtocolError.to_json()

_BODY_CLASSES: Final[dict[str, type[Body]]] = {
    cls.KIND: cls
    for cls in (SignalBody, RetractBody, OpinionBody, AnnounceBody, VoteBody, RotateBody)
}
# per kind: each field's name and its value when the JSON omits it (the dataclass default)
_BODY_FIELDS: Final[dict[str, tuple[tuple[str, object], ...]]] = {
    kind: tuple((f.name, None if f.default is MISSING else f.default) for f in fields(cls))
    for kind, cls in _BODY_CLASSES.items()
}


def verify_records(datas: Sequence[bytes], fed: str) -> list[VerifyResult]:
    """For every record: its id if ``decode_record(data, fed)`` accepts it, else the error."""
    results: list[VerifyResult] = []
    for data in datas:
        try:
            results.append(decode_record(data, fed).id)
        except RemoteProtocolError as e:
            results.append(e.to_json())
    return results


def trusted_record(data: bytes, record_id: str) -> Record:
    """The record whose bytes ``decode_record`` accepted before, with that record's id.

    Raises ``LocalProtocolError`` if the bytes are not even shaped like a record: the caller
    broke the promise that they were verified (a damaged database, or a bug).
    """
    obj = _record_object(data)
    return new_record(
        obj["fed"], obj["author"], obj["seq"], obj["prev"], obj["ts"],
        _trusted_body(obj["kind"], obj["body"]), obj["sig"], record_id, data,
    )  # fmt: skip


def _record_object(data: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise LocalProtocolError("trusted record bytes are not JSON") from e
    if type(obj) is not dict or obj.keys() != RECORD_KEYS or obj["kind"] not in _BODY_CLASSES:
        raise LocalProtocolError("trusted record bytes are not a record")
    if type(obj["body"]) is not dict:
        raise LocalProtocolError("trusted record bytes have no body object")
    return obj


def _trusted_body(kind: str, obj: dict[str, Any]) -> Body:
    if kind == "signal":  # nine records in ten: spelled out
        return new_signal_body(
            obj["type"], obj["value"], tuple(obj["labels"]), obj.get("note"), obj.get("expires")
        )
    return _trusted_other_body(kind, obj)


def _trusted_other_body(kind: str, obj: dict[str, Any]) -> Body:
    body = object.__new__(_BODY_CLASSES[kind])
    setattr_, get = object.__setattr__, obj.get
    for name, default in _BODY_FIELDS[kind]:
        value = get(name, default)
        setattr_(body, name, tuple(value) if type(value) is list else value)
    return body
