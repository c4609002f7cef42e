"""Canonical JSON: RFC 8785 (JCS) restricted to the protocol's value space.

Values are objects (string keys), arrays, strings, booleans, null and integers with
|n| <= 2**53 - 1. Floats do not exist in the protocol. For this value space JCS is:
object members sorted by the UTF-16 code units of their keys, no insignificant whitespace,
strings escaped minimally (``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``, other controls as
``\\u00xx`` lowercase), everything else as raw UTF-8, integers in plain decimal.

``decode_canonical`` accepts bytes only if they are exactly that encoding of the value they
parse to, so one value has exactly one byte string and signatures cover defined bytes, not a
serializer's incidental output. It is fast because the C json module does the work: object
member order is checked as the parser builds each object, and the canonical re-encoding keeps
that (already verified) order instead of re-sorting.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn, TypeAlias

from protocol.errors import (
    DuplicateKeyError,
    FloatNotAllowedError,
    IntegerRangeError,
    InvalidUtf8Error,
    LocalProtocolError,
    MalformedJsonError,
    NonCanonicalError,
    OversizeError,
)

MAX_RECORD_BYTES = 8 * 1024
MAX_SAFE_INTEGER = 2**53 - 1

JsonValue: TypeAlias = "bool | int | str | list[JsonValue] | dict[str, JsonValue] | None"

_dumps: Callable[..., str] = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
).encode


def utf16_key(key: str) -> bytes:
    """The JCS sort key of an object member name: its UTF-16 code units, big-endian."""
    return key.encode("utf-16-be", "surrogatepass")


def _ordered(value: object) -> JsonValue:
    """A copy of value with every object's members in JCS order; checks the value space."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise LocalProtocolError(f"integer {value} is outside +-(2**53 - 1)")
        return value
    if isinstance(value, list | tuple):
        return [_ordered(v) for v in value]
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise LocalProtocolError(f"object key {k!r} is not a string")
        return {k: _ordered(value[k]) for k in sorted(value, key=utf16_key)}
    raise LocalProtocolError(f"{type(value).__name__} is not in the protocol's JSON value space")


def encode_canonical(value: object) -> bytes:
    """The canonical (JCS) bytes of a value from the protocol's value space."""
    try:
        return _dumps(_ordered(value)).encode("utf-8")
    except UnicodeEncodeError as e:
        raise LocalProtocolError("string contains a lone surrogate") from e


def _reject_float(text: str) -> NoReturn:
    raise FloatNotAllowedError("floating-point numbers are not allowed", actual=text)


def _reject_constant(text: str) -> NoReturn:
    raise FloatNotAllowedError("NaN and Infinity are not allowed", actual=text)


def _checked_int(text: str) -> int:
    # 2**53 - 1 has 16 digits: a longer numeral is out of range (and int() of one with more
    # than sys.get_int_max_str_digits() digits would raise ValueError, not a protocol error).
    if len(text.lstrip("-")) > 16 or abs(n := int(text)) > MAX_SAFE_INTEGER:
        raise IntegerRangeError("integer outside +-(2**53 - 1)", actual=text)
    return n


def _in_jcs_order(keys: list[str]) -> bool:
    # For ASCII keys code-point order is UTF-16 order; only other keys pay for encoding.
    if "".join(keys).isascii():
        return keys == sorted(keys)
    return keys == sorted(keys, key=utf16_key)


def _ordered_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise DuplicateKeyError("duplicate object key", field=dup)
    keys = [k for k, _ in pairs]
    if not _in_jcs_order(keys):
        raise NonCanonicalError(
            "object keys are not in canonical (UTF-16) order", actual=",".join(keys)
        )
    return obj


_decoder = json.JSONDecoder(
    object_pairs_hook=_ordered_object,
    parse_float=_reject_float,
    parse_int=_checked_int,
    parse_constant=_reject_constant,
)


MAX_NESTING = 32  # arrays and objects; a valid record nests 3 deep, a genesis document 4


def nesting_depth(data: bytes) -> int:
    """The most ``[`` and ``{`` open at once outside string literals (SPEC 2.3).

    A string literal runs from an unescaped ``"`` to the next one; inside it a backslash
    escapes the byte after it. The scan is defined on any bytes, JSON or not.
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def decode_canonical(data: bytes, *, max_bytes: int = MAX_RECORD_BYTES) -> JsonValue:
    """Parse canonical JSON bytes; raise an ``EncodingError`` for anything else."""
    if len(data) > max_bytes:
        raise OversizeError(
            f"{len(data)} bytes exceeds the limit", expected=f"<= {max_bytes}", actual=len(data)
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidUtf8Error(f"invalid UTF-8 at byte {e.start}") from e
    # fewer brackets than the limit cannot nest deeper than it: most inputs skip the scan
    if data.count(b"[") + data.count(b"{") > MAX_NESTING and (
        (depth := nesting_depth(data)) > MAX_NESTING
    ):
        raise MalformedJsonError(
            "arrays and objects nest too deep", expected=f"<= {MAX_NESTING}", actual=depth
        )
    try:
        value: JsonValue = _decoder.decode(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise MalformedJsonError(f"not JSON: {e}") from e
    try:
        again = _dumps(value).encode("utf-8")
    except UnicodeEncodeError as e:
        raise NonCanonicalError("string contains an escaped lone surrogate") from e
    if again != data:
        raise NonCanonicalError(
            "bytes are not the canonical encoding of their value",
            actual=_first_difference(data, again),
        )
    return value


def _first_difference(got: bytes, want: bytes) -> str:
    i = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    if i is None:
        i = min(len(got), len(want))
    return f"byte {i}: {got[max(0, i - 8) : i + 8]!r}"
