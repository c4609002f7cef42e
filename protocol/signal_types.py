"""The signal type registry: every type family's types, by name (SPEC 5.3).

A type is defined once, in its family's module under ``protocol.types`` (``SignalType``: its
canonical form, validation, distance, default radius, featureless values, record-size need);
this module collects them (``FAMILIES``) and answers for any type by name. The node side of
each type (hasher, index, export names) is ``node.media.types``; adding a type is one entry in
a family module on each side, its SPEC row and its vectors (SPEC 11).

A record carries a signal's value in canonical form; ``canonical_value`` turns user input
(upper-case hex, a URL as pasted) into that form and ``check_value`` rejects anything that is
not already canonical. A type beyond the core ones is authored once every member's node has
announced it (``protocol.type_gate``, SPEC 11).

Featureless values (SPEC 5.3): a value within the radius of one of its type's degenerate
values would match every blank image, not a piece of content. Such a record stays valid
(validity is unchanged, SPEC 11), but a node never authors one (``check_authorable``) and
never searches for one (``is_featureless``). Every node reaches the same verdict, because it
depends on the value and the radius alone.
"""

from __future__ import annotations

import re
from itertools import pairwise
from types import ModuleType

from protocol.errors import InvalidHashError, SchemaError, UnknownSignalTypeError
from protocol.types import SignalType, digests, hamming_distance, perceptual, url, video
from protocol.urls import MAX_URL_CHARS

FAMILIES: tuple[ModuleType, ...] = (perceptual, digests, url, video)

SIGNAL_TYPES: dict[str, SignalType] = {t.name: t for f in FAMILIES for t in f.TYPES}
CORE_TYPES: frozenset[str] = frozenset(n for n, t in SIGNAL_TYPES.items() if t.core)
TYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # the syntax of every signal type name
MAX_ANNOUNCED_TYPES = 64
DEGENERATE_VALUES: dict[str, tuple[str, ...]] = {
    n: t.degenerate for n, t in SIGNAL_TYPES.items() if t.degenerate
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


def distance(type_name: str, a: str, b: str) -> int | None:
    """Hamming distance for perceptual types; 0 or None (no match) for exact types."""
    return signal_type(type_name).distance(a, b)


__all__ = [
    "CORE_TYPES",
    "DEGENERATE_VALUES",
    "FAMILIES",
    "MAX_URL_CHARS",
    "SIGNAL_TYPES",
    "SignalType",
    "canonical_value",
    "check_authorable",
    "check_type_names",
    "check_value",
    "distance",
    "featureless_distance",
    "hamming_distance",
    "is_featureless",
]
