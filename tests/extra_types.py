"""A signal type outside the core, for tests of the type gate (SPEC 11, ``protocol.type_gate``).

``sha512`` (exact, 128 hex) is registered for the length of one test with pytest's
``monkeypatch`` unless the registry already holds it, so the tests need no change when the
real plug-in arrives. Only processes of this test see it: a node started as a child process
knows the registry it was shipped with.
"""

from __future__ import annotations

import hashlib

import pytest

from protocol.signal_types import SIGNAL_TYPES, SignalType, _hex_type

EXTRA_TYPE = "sha512"


def register_extra_type(monkeypatch: pytest.MonkeyPatch) -> SignalType:
    """Make ``EXTRA_TYPE`` known to this process's registry until the test ends."""
    if EXTRA_TYPE not in SIGNAL_TYPES:
        monkeypatch.setitem(
            SIGNAL_TYPES, EXTRA_TYPE, _hex_type(EXTRA_TYPE, 128, 0, "SHA-512 of the file, exact")
        )
    return SIGNAL_TYPES[EXTRA_TYPE]


def extra_value(n: int) -> str:
    return hashlib.sha512(f"extra {n}".encode()).hexdigest()
