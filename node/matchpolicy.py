"""Match policy: which federation hits this node answers, and within which radius.

A node decides for itself how it uses the federation's list (SPEC 5.3: the radius is node
configuration). ``[match]`` in ``config.toml`` sets, node-wide:

- ``radius``: a Hamming radius per signal type (``pdq``, ``phash``, ``dhash``), at most the
  type's bits; exact types take none (they match equal values only).
- ``min_confirmations``: a federation signal is answered only once at least this many other
  members confirm it (its ``confirm`` tally).
- ``max_dispute_share``: a signal whose disputes are more than this percentage of its
  confirms and disputes together is not answered (100: never dropped; a signal with neither
  has a share of 0).
- ``ignore_members``: members (by name, any case, or by key/identity) whose signals are not
  answered here.

``[match.labels."LABEL"]`` sets ``radius``, ``min_confirmations``, ``max_dispute_share`` or
``ignore = true`` for signals carrying that label: a label's setting replaces the node-wide
one, and a signal carrying several labels with a setting takes the strictest (the smallest
radius and share, the most confirmations, ignored if any says so). ``[match.lists."NAME"]``
sets a ``radius`` per type for one local list (node.store.lists): its entries match (or,
for a safelist, suppress) within it. A request to ``/v1/match`` may override ``radius``,
``min_confirmations``, ``max_dispute_share`` and ``ignore_members`` for itself; an override
replaces the node-wide and every label's setting.

The member's own signals are judged by radius only: it listed them, so neither its peers'
opinions nor its ignore lists hide them. A hit that a rule drops is not lost silently: the
answer lists it under ``suppressed`` with the rule (``by``). A hit beyond its radius is not
a hit at all (the index is searched at the largest radius any rule allows for the type, and
each hit is held to its own).

Everything here is pure (no I/O, no clock): ``node.net.matching`` calls it with the hit's
provenance.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from node.errors import ApiError, ConfigError, NodeError
from protocol.errors import RemoteProtocolError
from protocol.labels import check_labels
from protocol.signal_types import SIGNAL_TYPES

LIST_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
HEX64: Final = re.compile(r"[0-9a-f]{64}")
MAX_IGNORED_MEMBERS: Final = 256
# the types a radius applies to, and their bits
RADIUS_BITS: Final = {n: t.bits for n, t in SIGNAL_TYPES.items() if t.is_hamming and t.bits}
RULE_KEYS: Final = ("radius", "min_confirmations", "max_dispute_share")
MATCH_KEYS: Final = (*RULE_KEYS, "ignore_members", "labels", "lists")
LABEL_KEYS: Final = (*RULE_KEYS, "ignore")
LIST_KEYS: Final = ("radius",)
# the members of a match request that override the policy (with radius, which was first)
POLICY_FIELDS: Final = ("min_confirmations", "max_dispute_share", "ignore_members", "lists")


@dataclass(frozen=True, slots=True)
class Rules:
    """Settings that judge a federation hit; None (or no radius for a type): not set here."""

    radius: Mapping[str, int] = field(default_factory=dict)
    min_confirmations: int | None = None
    max_dispute_share: float | None = None
    ignore: bool = False


@dataclass(frozen=True, slots=True)
class MatchPolicy:
    """The node's ``[match]`` configuration (defaults: the registry's radii, no filter)."""

    radius: Mapping[str, int] = field(default_factory=dict)  # only the types set
    min_confirmations: int = 0
    max_dispute_share: float = 100.0
    ignore_members: tuple[str, ...] = ()
    labels: Mapping[str, Rules] = field(default_factory=dict)
    lists: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def node_radius(self, kind: str) -> int:
        """The node-wide radius of a type (0 for exact types)."""
        if kind not in RADIUS_BITS:
            return 0
        return self.radius.get(kind, SIGNAL_TYPES[kind].default_radius)

    def list_radius(self, name: str, kind: str) -> int:
        """The radius a local list's entries of a type match within."""
        if kind not in RADIUS_BITS:
            return 0
        return self.lists.get(name, {}).get(kind, self.node_radius(kind))


@dataclass(frozen=True, slots=True)
class Overrides:
    """What one match request sets for itself (None: the node's policy)."""

    radius: Mapping[str, int] | None = None  # per type; a plain integer applies to every type
    min_confirmations: int | None = None
    max_dispute_share: float | None = None
    ignore_members: tuple[str, ...] | None = None
    lists: tuple[str, ...] | None = None  # local lists to use (None: every enabled one)

    @property
    def filters(self) -> bool:
        return any(v is not None for v in (self.min_confirmations, self.max_dispute_share)) or bool(
            self.ignore_members
        )


NO_OVERRIDES: Final = Overrides()


# ---- judging one hit ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Judge:
    """A policy with one request's overrides, ready to judge hits (``verdict``)."""

    policy: MatchPolicy
    overrides: Overrides = NO_OVERRIDES
    own: str = ""  # this member's identity: its signals are judged by radius only
    ignored: frozenset[str] = frozenset()  # identities of ignored members (resolved)

    @property
    def filters(self) -> bool:
        """Does judging need a hit's provenance (labels, tallies, member)?"""
        p = self.policy
        return bool(
            self.overrides.filters or self.ignored or p.labels or p.min_confirmations
            or p.max_dispute_share < 100
        )  # fmt: skip

    def search_radius(self, kind: str, request_radius: int | None = None) -> int:
        """The radius to search the index at: the largest any rule allows for the type."""
        given = self.request_radius(kind, request_radius)
        if given is not None:
            return given
        labelled = (r.radius[kind] for r in self.policy.labels.values() if kind in r.radius)
        return max([self.policy.node_radius(kind), *labelled])

    def request_radius(self, kind: str, request_radius: int | None) -> int | None:
        """The request's radius for a type (its one integer, or its {type: radius}), if any."""
        if request_radius is not None:
            return request_radius
        radius = self.overrides.radius
        return None if radius is None else radius.get(kind)

    def hit_radius(self, kind: str, labels: Sequence[str], request_radius: int | None) -> int:
        """The radius one hit is held to: the request's, its labels' smallest, the node's."""
        given = self.request_radius(kind, request_radius)
        if given is not None:
            return given
        set_by = [r.radius[kind] for r in self._label_rules(labels) if kind in r.radius]
        return min(set_by) if set_by else self.policy.node_radius(kind)

    def _label_rules(self, labels: Iterable[str]) -> list[Rules]:
        return [self.policy.labels[label] for label in labels if label in self.policy.labels]

    def verdict(self, hit: Mapping[str, Any]) -> dict[str, Any] | None:
        """Why a federation hit (a ``signal_rows`` row) is suppressed here, or None."""
        member = str(hit.get("member"))
        if member == self.own:
            return None
        if member in self.ignored:
            return {"policy": "ignore_members", "member": member}
        labels = [str(label) for label in hit.get("labels", ())]
        rules = self._label_rules(labels)
        ignoring = [label for label in labels if self.policy.labels.get(label, Rules()).ignore]
        if ignoring:
            return {"policy": "labels", "label": ignoring[0]}
        tallies = hit.get("tallies") or {}
        confirms, disputes = int(tallies.get("confirm", 0)), int(tallies.get("dispute", 0))
        required = self._min_confirmations(rules)
        if confirms < required:
            return {"policy": "min_confirmations", "required": required,
                    "confirmations": confirms}  # fmt: skip
        share_max = self._max_dispute_share(rules)
        if disputes * 100 > share_max * (confirms + disputes):
            share = round(100 * disputes / (confirms + disputes), 1)
            return {"policy": "max_dispute_share", "max": share_max, "share": share}
        return None

    def _min_confirmations(self, rules: Sequence[Rules]) -> int:
        if self.overrides.min_confirmations is not None:
            return self.overrides.min_confirmations
        set_by = [r.min_confirmations for r in rules if r.min_confirmations is not None]
        return max(set_by) if set_by else self.policy.min_confirmations

    def _max_dispute_share(self, rules: Sequence[Rules]) -> float:
        if self.overrides.max_dispute_share is not None:
            return self.overrides.max_dispute_share
        set_by = [r.max_dispute_share for r in rules if r.max_dispute_share is not None]
        return min(set_by) if set_by else self.policy.max_dispute_share


def resolve_members(
    wanted: Sequence[str], members: Sequence[Mapping[str, Any]], *, strict: bool
) -> frozenset[str]:
    """The identities that names or keys in wanted name among members ({name, identity,
    keys}). strict: one that names nobody is an error (a request); else it is skipped (the
    configuration, which may name a member before it is admitted)."""
    found: set[str] = set()
    for text in wanted:
        hexed = text.strip().lower()
        matched = [
            str(m["identity"]) for m in members
            if str(m["name"]).casefold() == text.strip().casefold()
            or hexed == m["identity"] or hexed in m.get("keys", ())
        ]  # fmt: skip
        if not matched and strict:
            raise ApiError(f"ignore_members: no member is named {text!r} or has that key",
                           title="invalid ignore_members")  # fmt: skip
        found.update(matched)
    return frozenset(found)


# ---- reading the configuration and a request ----------------------------------------------


def parse_config(raw: object) -> MatchPolicy:
    """``[match]`` of config.toml, checked; ConfigError names the key that is wrong."""
    if raw is None:
        return MatchPolicy()
    table = _table(raw, "[match]", MATCH_KEYS, ConfigError)
    rules = _rules(table, "[match]", ConfigError)
    labels = {
        _label(name): _label_rules(value, f'[match.labels."{name}"]')
        for name, value in _table(table.get("labels", {}), "[match.labels]", None,
                                  ConfigError).items()
    }  # fmt: skip
    lists = {
        _list_name(name, ConfigError): _radius(
            _table(value, f'[match.lists."{name}"]', LIST_KEYS, ConfigError).get("radius", {}),
            f'[match.lists."{name}"] radius', ConfigError,
        )
        for name, value in _table(table.get("lists", {}), "[match.lists]", None,
                                  ConfigError).items()
    }  # fmt: skip
    return MatchPolicy(
        radius=rules.radius,
        min_confirmations=0 if rules.min_confirmations is None else rules.min_confirmations,
        max_dispute_share=100.0 if rules.max_dispute_share is None else rules.max_dispute_share,
        ignore_members=_members(
            table.get("ignore_members", []), "[match] ignore_members", ConfigError
        ),
        labels=labels,
        lists=lists,
    )


def _label(name: str) -> str:
    try:
        check_labels([name], "label")
    except RemoteProtocolError as e:
        raise ConfigError(f"[match.labels] {name!r} is not a label: {e}") from e
    return name


def _label_rules(raw: object, where: str) -> Rules:
    table = _table(raw, where, LABEL_KEYS, ConfigError)
    rules = _rules(table, where, ConfigError)
    ignore = table.get("ignore", False)
    if not isinstance(ignore, bool):
        raise ConfigError(f"{where} ignore must be true or false, got {ignore!r}")
    return Rules(rules.radius, rules.min_confirmations, rules.max_dispute_share, ignore)


def parse_overrides(body: Mapping[str, Any]) -> Overrides:
    """A match request's policy members, checked (ApiError, 400, titled by the member). A
    ``radius`` given as one integer is the caller's (``node.net.matching``): it applies to
    every queried type; as ``{type: radius}`` it is read here."""
    radius = body.get("radius")
    rules = _rules({k: body[k] for k in RULE_KEYS[1:] if k in body}, "", ApiError)
    members = body.get("ignore_members")
    lists = body.get("lists")
    if lists is not None:
        if not isinstance(lists, list) or len(lists) > 1024:
            raise ApiError("lists must be a list of local list names", title="invalid lists")
        lists = tuple(dict.fromkeys(_list_name(n, ApiError) for n in lists))
    if members is not None:
        members = _members(members, "ignore_members", ApiError)
    return Overrides(
        radius=_radius(radius, "radius", ApiError) if isinstance(radius, dict) else None,
        min_confirmations=rules.min_confirmations,
        max_dispute_share=rules.max_dispute_share,
        ignore_members=members,
        lists=lists,
    )


def _error(error: type[NodeError], message: str, title: str) -> NodeError:
    """error(message); a request's error (ApiError) also carries the problem's title."""
    return error(message, title=title) if error is ApiError else error(message)


def _fail(error: type[NodeError], where: str, key: str, message: str) -> NodeError:
    return _error(error, f"{where} {key}".strip() + f": {message}", f"invalid {key}")


def _table(
    raw: object, where: str, keys: Sequence[str] | None, error: type[NodeError]
) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise error(f"{where} must be a table")
    unknown = sorted(set(raw) - set(keys)) if keys is not None else []
    if unknown:
        raise error(f"unknown key(s) in {where}: {', '.join(unknown)} "
                    f"(known: {', '.join(keys or ())})")  # fmt: skip
    return raw


def _rules(table: Mapping[str, Any], where: str, error: type[NodeError]) -> Rules:
    radius = _radius(table.get("radius", {}), f"{where} radius".strip(), error)
    confirmations = table.get("min_confirmations")
    if confirmations is not None and (type(confirmations) is not int or confirmations < 0):
        raise _fail(error, where, "min_confirmations", "must be a non-negative integer, "
                    f"got {confirmations!r}")  # fmt: skip
    share = table.get("max_dispute_share")
    if share is not None:
        if type(share) not in (int, float) or not 0 <= share <= 100:
            raise _fail(error, where, "max_dispute_share",
                        f"must be a percentage 0..100, got {share!r}")  # fmt: skip
        share = float(share)
    return Rules(radius, confirmations, share)


def _radius(raw: object, where: str, error: type[NodeError]) -> dict[str, int]:
    """{type: radius} for Hamming types, each within the type's bits."""
    if not isinstance(raw, dict):
        raise _error(error, f"{where} must be a table of {{type = radius}}", "invalid radius")
    found: dict[str, int] = {}
    for kind, radius in raw.items():
        if kind not in SIGNAL_TYPES:
            known = ", ".join(SIGNAL_TYPES)
            raise _error(error, f"{where}: {kind!r} is not a signal type (known: {known})",
                         "invalid radius")  # fmt: skip
        if kind not in RADIUS_BITS:
            how = ("is matched by its frames (vPDQ's rule), not by one radius"
                   if SIGNAL_TYPES[kind].compare == "frames"
                   else "matches exactly and takes no radius")  # fmt: skip
            raise _error(error, f"{where}: {kind} {how}", "invalid radius")
        bits = RADIUS_BITS[kind]
        if type(radius) is not int or not 0 <= radius <= bits:
            raise _error(error, f"{where}: a {kind} radius is an integer 0..{bits} (its bits), "
                         f"got {radius!r}", "invalid radius")  # fmt: skip
        found[kind] = radius
    return found


def _members(raw: object, where: str, error: type[NodeError]) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_IGNORED_MEMBERS:
        raise _error(error, f"{where} must be a list of at most {MAX_IGNORED_MEMBERS} member "
                     "names or keys", "invalid ignore_members")  # fmt: skip
    for entry in raw:
        if not isinstance(entry, str) or not entry.strip() or len(entry) > 256:
            raise _error(error, f"{where}: {entry!r} is not a member name or key",
                         "invalid ignore_members")  # fmt: skip
    return tuple(raw)


def _list_name(name: object, error: type[NodeError]) -> str:
    if not isinstance(name, str) or LIST_NAME.fullmatch(name) is None:
        raise _error(
            error,
            f"{name!r} is not a list name (lowercase letters, digits, '.', '_' "
            "and '-', at most 64, starting with a letter or digit)",
            "invalid list name",
        )
    return name
