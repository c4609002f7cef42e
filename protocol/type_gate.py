"""The signal-type gate: which signal types members may author now (SPEC 4.5, 5.2, 11).

An unknown signal type is a validity error (``UnknownSignalTypeError``), so a node that does
not know a type rejects a record of it, and every later record of that author stops counting
there (SPEC 6.2). A new type therefore enters a running federation in two steps: each node
announces the types its registry knows (the ``types`` of its member's ``announce``), and a
member may author a type only once it is *enabled*:

- the core types (``CORE_TYPES``: the seven of v1) are always enabled;
- any other type is enabled when every *gate member* -- a member identity with role
  ``member`` that is not removed and whose current key's log is open (not frozen by a fork,
  a removal or a rotation that went nowhere) -- has a latest counted announce listing it.
  Auditors author nothing and announce nothing, so they cannot take part: their operators
  upgrade by the federation's release notes (SPEC 11).

Everything here is a function of the membership and each identity's announced types (the
fold's endpoints, or the node's ``announces`` rows), so every node holding the same records
reaches the same answer. The gate is an authoring rule, not validity: a record of a known but
not enabled type verifies and counts like any other (an older or misbehaving node may sign one).

``announced_types`` is what a node puts in its own announce: nothing while its registry holds
only core types (so a node of this version announces exactly what older nodes accept: those
reject an announce with ``types``, SPEC 11), else every type it knows.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Final

from protocol import signal_types
from protocol.errors import TypeNotEnabledError
from protocol.membership import Member, Membership

# Always enabled: the types of v1, which every node knows (the registry's ``core`` flag).
CORE_TYPES: Final = signal_types.CORE_TYPES

Announced = Mapping[str, Collection[str]]  # member identity -> types its latest announce lists


def announced_types(known: Iterable[str]) -> tuple[str, ...]:
    """The ``types`` a node whose registry knows ``known`` announces: all of them, sorted, or
    none while they are all core types (SPEC 5.2)."""
    names = sorted(set(known))
    return () if set(names) <= CORE_TYPES else tuple(names)


def gate_members(membership: Membership) -> list[Member]:
    """The identities whose nodes must know a type before it is enabled, by name: role
    ``member``, not removed, current key's log open."""
    return sorted(
        (
            m
            for m in membership.members.values()
            if m.role == "member" and not m.removed and membership.caps.get(m.current_key) is None
        ),
        key=lambda m: (m.name, m.identity),
    )


def waiting_for(membership: Membership, announced: Announced, type_name: str) -> list[Member]:
    """The gate members whose latest announce does not list type_name ([] for a core type)."""
    if type_name in CORE_TYPES:
        return []
    return [m for m in gate_members(membership) if type_name not in announced.get(m.identity, ())]


def enabled_types(membership: Membership, announced: Announced) -> frozenset[str]:
    """Every type members may author now: the core types, and each type that every gate
    member's latest announce lists (none beyond the core while there is no gate member)."""
    members = gate_members(membership)
    if not members:
        return CORE_TYPES
    common = set(announced.get(members[0].identity, ()))
    for member in members[1:]:
        common &= set(announced.get(member.identity, ()))
    return CORE_TYPES | common


def check_type_enabled(membership: Membership, announced: Announced, type_name: str) -> None:
    """Raise ``TypeNotEnabledError`` unless a signal of type_name may be authored now."""
    if type_name in enabled_types(membership, announced):
        return
    missing = waiting_for(membership, announced, type_name)
    names = ", ".join(m.name for m in missing) or "no member (there is none that authors)"
    raise TypeNotEnabledError(
        f"signal type {type_name!r} is not enabled in this federation yet: the nodes of "
        f"{names} have not announced it (they must run a hashmesh that knows it; SPEC 11)",
        signal_type=type_name,
        waiting_for=tuple((m.identity, m.name) for m in missing),
    )
