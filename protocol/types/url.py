"""URLs, normalised (``protocol.urls``) and matched exactly (SPEC 5.3)."""

from __future__ import annotations

from protocol.errors import InvalidHashError
from protocol.types import EXACT, SignalType
from protocol.urls import MAX_URL_CHARS, normalise_url


def _is_normal_url(value: str) -> bool:
    try:
        return normalise_url(value) == value
    except InvalidHashError:
        return False


TYPES: tuple[SignalType, ...] = (
    SignalType(
        name="url",
        describe="normalised URL, exact",
        compare=EXACT,
        normalise=normalise_url,
        is_canonical=_is_normal_url,
        max_value_chars=MAX_URL_CHARS,
        core=True,
    ),
)
