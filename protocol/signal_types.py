"""The signal type registry: for each type, how a value is validated, written and compared.

A record carries a signal's value in canonical form; ``canonical_value`` turns user input
(upper-case hex, a URL as pasted) into that form and ``check_value`` rejects anything that is
not already canonical. Adding a type is one entry in ``SIGNAL_TYPES``; members author it once
every member's node has announced it (``protocol.type_gate``, SPEC 11).

Perceptual types compare by Hamming distance over their bits; exact types only match equal
values. ``pdq`` and ``url`` are also python-threatexchange's names; its bridge maps md5 and
sha256 to ``video_md5`` and ``video_sha256`` (``node.interop.pytx_exchange``).

Featureless values (SPEC 5.3): each perceptual type has *degenerate* values that carry no
feature of any picture -- all bits 0 (what PDQ and dHash give a blank image), all bits 1, and
pHash's ``8000000000000000`` (a flat image: only the DC bit). A value within the radius of one
of them is *featureless*: it would match every blank image, not a piece of content. Such a
record stays valid (validity is unchanged, SPEC 11), but a node never authors one
(``check_authorable``) and never searches for one (``is_featureless``). Every node reaches the
same verdict, because it depends on the value and the radius alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from protocol.errors import InvalidHashError, SchemaError, UnknownSignalTypeError
from protocol.urls import MAX_URL_CHARS, normalise_url

TYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # the syntax of every signal type name
MAX_ANNOUNCED_TYPES = 64


@dataclass(frozen=True, slots=True)
class SignalType:
    """One kind of hash: its name, shape, canonical form and distance."""

    name: str
    hex_chars: int | None  # None for non-hex types (url)
    default_radius: int  # 0 for exact types
    describe: str
    normalise: Callable[[str], str]
    is_canonical: Callable[[str], object]  # truthy iff the value is in canonical form

    @property
    def bits(self) -> int | None:
        return None if self.hex_chars is None else self.hex_chars * 4

    @property
    def is_hamming(self) -> bool:
        return self.default_radius > 0


def _hex_normaliser(chars: int, name: str) -> Callable[[str], str]:
    pattern = re.compile(f"[0-9a-f]{{{chars}}}")

    def normalise(value: str) -> str:
        text = value.strip().lower()
        if pattern.fullmatch(text) is None:
            raise InvalidHashError(
                f"a {name} hash is {chars} hex characters",
                field="value",
                expected=f"{chars} hex chars",
                actual=value,
            )
        return text

    return normalise


def _hex_type(name: str, chars: int, radius: int, describe: str) -> SignalType:
    pattern = re.compile(f"[0-9a-f]{{{chars}}}")
    return SignalType(
        name,
        chars,
        radius,
        describe,
        _hex_normaliser(chars, name),
        pattern.fullmatch,
    )


def _is_normal_url(value: str) -> bool:
    try:
        return normalise_url(value) == value
    except InvalidHashError:
        return False


SIGNAL_TYPES: dict[str, SignalType] = {
    t.name: t
    for t in (
        _hex_type("pdq", 64, 31, "PDQ perceptual image hash, 256 bits, Hamming distance"),
        _hex_type("phash", 16, 10, "imagehash pHash, 64 bits, Hamming distance"),
        _hex_type("dhash", 16, 10, "imagehash dHash, 64 bits, Hamming distance"),
        _hex_type("md5", 32, 0, "MD5 of the file bytes, exact"),
        _hex_type("sha1", 40, 0, "SHA-1 of the file bytes, exact"),
        _hex_type("sha256", 64, 0, "SHA-256 of the file bytes, exact"),
        SignalType("url", None, 0, "normalised URL, exact", normalise_url, _is_normal_url),
    )
}


def signal_type(name: str) -> SignalType:
    found = SIGNAL_TYPES.get(name) if isinstance(name, str) else None
    if found is None:
        raise UnknownSignalTypeError(
            f"unknown signal type {name!r}",
            field="type",
            expected="|".join(SIGNAL_TYPES),
            actual=name,
        )
    return found


def check_type_names(names: object, field: str = "types") -> tuple[str, ...]:
    """A list of signal type names as an announce carries it (SPEC 5.2): 1..64 names of the
    type name syntax, strictly ascending. Syntax only: a newer node may name types this
    node's registry does not know. Raises ``SchemaError``."""
    if not isinstance(names, tuple | list) or not 0 < len(names) <= MAX_ANNOUNCED_TYPES:
        raise SchemaError(
            f"{field} must be a list of 1..{MAX_ANNOUNCED_TYPES} signal type names", field=field
        )
    for name in names:
        if not isinstance(name, str) or TYPE_NAME.fullmatch(name) is None:
            raise SchemaError(
                f"{field} holds a malformed signal type name",
                field=field, expected=TYPE_NAME.pattern, actual=name,
            )  # fmt: skip
    if any(a >= b for a, b in pairwise(names)):
        raise SchemaError(f"{field} must be strictly ascending (sorted, distinct)", field=field)
    return tuple(names)


def canonical_value(type_name: str, value: str) -> str:
    """The canonical form of a user-supplied value; raises if it cannot be one."""
    return signal_type(type_name).normalise(value)


def check_value(type_name: str, value: str) -> None:
    """Raise unless value is already the canonical form of a type_name value."""
    kind = signal_type(type_name)
    if kind.is_canonical(value):
        return
    canonical = kind.normalise(value)  # raises if value cannot be a type_name value at all
    if canonical != value:
        raise InvalidHashError(
            f"{type_name} value is not in canonical form",
            field="value",
            expected=canonical,
            actual=value,
        )


DEGENERATE_VALUES: dict[str, tuple[str, ...]] = {
    "pdq": ("0" * 64, "f" * 64),
    "phash": ("0" * 16, "f" * 16, "8" + "0" * 15),
    "dhash": ("0" * 16, "f" * 16),
}


def featureless_distance(type_name: str, value: str) -> int | None:
    """Bits between a canonical value and its type's nearest degenerate value; None for
    types that have none (the exact types)."""
    degenerate = DEGENERATE_VALUES.get(type_name, ())
    return min((hamming_distance(value, d) for d in degenerate), default=None)


def is_featureless(type_name: str, value: str, radius: int | None = None) -> bool:
    """Is value within radius (default: the type's default radius) of a degenerate value?"""
    distance_ = featureless_distance(type_name, value)
    limit = signal_type(type_name).default_radius if radius is None else radius
    return distance_ is not None and distance_ <= limit


def check_authorable(type_name: str, value: str) -> None:
    """Raise ``InvalidHashError`` if a node must not sign a signal with this value (SPEC 5.3):
    a featureless value at the type's default radius."""
    if not is_featureless(type_name, value):
        return
    nearest = min(DEGENERATE_VALUES[type_name], key=lambda d: hamming_distance(value, d))
    raise InvalidHashError(
        f"{type_name} value is featureless: {hamming_distance(value, nearest)} bits from the "
        f"degenerate value {nearest[:8]}..., within the radius "
        f"{signal_type(type_name).default_radius}; it would match every blank image",
        field="value",
        expected=f"more than {signal_type(type_name).default_radius} bits from {nearest}",
        actual=value,
    )


def hamming_distance(a: str, b: str) -> int:
    """Bits that differ between two equal-length hex strings."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def distance(type_name: str, a: str, b: str) -> int | None:
    """Hamming distance for perceptual types; 0 or None (no match) for exact types."""
    if signal_type(type_name).is_hamming:
        return hamming_distance(a, b)
    return 0 if a == b else None


__all__ = [
    "DEGENERATE_VALUES",
    "MAX_URL_CHARS",
    "SIGNAL_TYPES",
    "SignalType",
    "canonical_value",
    "check_authorable",
    "check_type_names",
    "check_value",
    "featureless_distance",
    "is_featureless",
]
