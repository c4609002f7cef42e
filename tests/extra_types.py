"""A signal type outside the core, for tests of the type gate (SPEC 11, ``protocol.type_gate``):
``sha512``, the first type added after v1 (``protocol/types/digests.py``)."""

from __future__ import annotations

import hashlib

import pytest

from protocol.signal_types import CORE_TYPES, SIGNAL_TYPES
from protocol.types import SignalType

EXTRA_TYPE = "sha512"


def register_extra_type(monkeypatch: pytest.MonkeyPatch) -> SignalType:
    """The gated type the tests use (registered for real; ``monkeypatch`` is kept so the tests
    read as they did when the type was test-only)."""
    assert EXTRA_TYPE in SIGNAL_TYPES and EXTRA_TYPE not in CORE_TYPES
    return SIGNAL_TYPES[EXTRA_TYPE]


def extra_value(n: int) -> str:
    return hashlib.sha512(f"extra {n}".encode()).hexdigest()
