"""The signal-type gate (SPEC 4.5, 5.2, 11): announced types, enabled types, the authoring rule.

``enabled_types`` is read from the fold's endpoints of small record sets, case by case; the
authoring rule is asked through ``check_authoring`` like the other rules; the announce body's
``types`` is checked for its syntax alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from extra_types import EXTRA_TYPE, extra_value, register_extra_type
from signed_logs import SignedLogs

from protocol import (
    AnnounceBody,
    Body,
    Founder,
    SignalBody,
    SigningKey,
    VoteBody,
    decode_record,
    draft_genesis,
    encode_canonical,
    fold_state,
    parse_genesis,
    sign_genesis,
)
from protocol.authoring import check_authoring
from protocol.batch import trusted_record
from protocol.bodies import parse_body, rotation
from protocol.errors import AuditorError, SchemaError, TypeNotEnabledError
from protocol.signal_types import MAX_ANNOUNCED_TYPES, SIGNAL_TYPES, TYPE_NAME
from protocol.type_gate import CORE_TYPES, announced_types, enabled_types, gate_members

NAMES = ("a", "b", "c", "d", "n", "a2")
KEYS = {n: SigningKey(hashlib.sha256(f"test_type_gate {n}".encode()).digest()) for n in NAMES}
PUB = {n: k.public for n, k in KEYS.items()}
FOUNDERS = {"a": "Alpha", "b": "Beta", "c": "Gamma", "d": "Delta"}


def make_federation() -> Any:
    founders = [
        Founder(name, PUB[k], "auditor" if k == "d" else "member") for k, name in FOUNDERS.items()
    ]
    doc: Any = draft_genesis("Type gate tests", 2, sorted(founders, key=lambda f: f.key))
    for k in FOUNDERS:
        doc = sign_genesis(doc, KEYS[k])
    return parse_genesis(encode_canonical(doc))


FED = make_federation()
NEW = (*sorted(CORE_TYPES | {"sha512"}),)  # what a node that knows sha512 announces
BOTH = (*sorted(CORE_TYPES | {"sha512", "tlsh"}),)


class World(SignedLogs):
    def __init__(self) -> None:
        super().__init__(KEYS, FED.id)

    def announce(self, author: str, types: tuple[str, ...] = NEW) -> None:
        self.add(author, AnnounceBody(f"node {author}", (f"https://{author}.example/",),
                                      types=types))  # fmt: skip

    def fork_signal(self, author: str) -> None:
        self.fork(author, SignalBody("md5", "9" * 32))

    def announced(self) -> dict[str, tuple[str, ...]]:
        state = fold_state(self.records, FED, 0)
        return {member: e.types for member, e in state.endpoints.items()}

    def enabled(self) -> frozenset[str]:
        return enabled_types(fold_state(self.records, FED, 0).membership, self.announced())


def all_three(w: World, types: tuple[str, ...] = NEW) -> None:
    for author in "abc":
        w.announce(author, types)


def removed_c(w: World) -> None:
    w.announce("a")
    w.announce("b")
    w.add("a", VoteBody("remove", PUB["c"], after=0))
    w.add("b", VoteBody("remove", PUB["c"], after=0))


def forked_c(w: World) -> None:
    w.announce("a")
    w.announce("b")
    w.announce("c", ())
    w.fork_signal("c")


def admitted_n(w: World) -> None:
    all_three(w)
    for voter in "ab":
        w.add(voter, VoteBody("admit", PUB["n"], name="Newcomer", role="member"))


def rotated_a(w: World) -> None:
    all_three(w)  # a's announce, signed under its first key, still is its identity's latest
    w.add("a", rotation(KEYS["a2"], fed=FED.id, old=PUB["a"]))


Setup = Callable[[World], object]
ENABLED: list[tuple[str, Setup, frozenset[str]]] = [
    ("nothing announced: the core types", lambda w: None, CORE_TYPES),
    ("every member announced it", all_three, CORE_TYPES | {"sha512"}),
    ("one member has not", lambda w: (w.announce("a"), w.announce("b")), CORE_TYPES),
    ("one member announced without types", lambda w: (w.announce("a"), w.announce("b"),
                                                       w.announce("c", ())), CORE_TYPES),
    ("the latest announce counts", lambda w: (all_three(w), w.announce("c", ())), CORE_TYPES),
    ("a removed member does not hold it back", removed_c, CORE_TYPES | {"sha512"}),
    ("a forked member does not hold it back", forked_c, CORE_TYPES | {"sha512"}),
    ("an auditor is not asked (Delta announced nothing)", all_three, CORE_TYPES | {"sha512"}),
    ("a member admitted since holds it back", admitted_n, CORE_TYPES),
    ("a rotated member's announce still counts", rotated_a, CORE_TYPES | {"sha512"}),
    ("the types every member announced, no more",
     lambda w: (w.announce("a", BOTH), w.announce("b"), w.announce("c", BOTH)),
     CORE_TYPES | {"sha512"}),
    ("core types need no announce", lambda w: all_three(w, ("sha512",)),
     CORE_TYPES | {"sha512"}),
    ("names this node does not know", lambda w: all_three(w, ("tlsh",)), CORE_TYPES | {"tlsh"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("setup", "expected"), [c[1:] for c in ENABLED], ids=[c[0] for c in ENABLED]
)
def test_enabled_types(setup: Setup, expected: frozenset[str]) -> None:
    w = World()
    setup(w)
    assert w.enabled() == expected


def test_gate_members_are_open_member_logs() -> None:
    w = World()
    forked_c(w)
    membership = fold_state(w.records, FED, 0).membership
    assert [m.name for m in gate_members(membership)] == ["Alpha", "Beta"]
    w = World()
    removed_c(w)
    assert [m.name for m in gate_members(fold_state(w.records, FED, 0).membership)] == [
        "Alpha",
        "Beta",
    ]


# -- the authoring rule -----------------------------------------------------------------------


def author(w: World, who: str, body: Body) -> None:
    membership = fold_state(w.records, FED, 0).membership
    head = w.heads.get(who)
    check_authoring(FED, membership, PUB[who], 1 if head is None else head.seq + 1, body,
                    announced=w.announced)  # fmt: skip


def test_a_type_not_every_member_announced_is_refused_naming_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register_extra_type(monkeypatch)
    w = World()
    w.announce("a")
    body = SignalBody(EXTRA_TYPE, extra_value(1))
    with pytest.raises(TypeNotEnabledError) as refused:
        author(w, "a", body)
    assert "'sha512' is not enabled" in str(refused.value)
    assert "Beta, Gamma have not announced it" in str(refused.value)
    assert refused.value.fields() == {
        "signal_type": "sha512",
        "waiting_for": [{"identity": PUB["b"], "name": "Beta"},
                        {"identity": PUB["c"], "name": "Gamma"}],
    }  # fmt: skip
    assert (refused.value.status, refused.value.title) == (409, "signal type not enabled")
    w.announce("b")
    w.announce("c")
    author(w, "a", body)  # enabled now
    with pytest.raises(AuditorError):  # the author's rules come first
        author(w, "d", body)


def test_core_types_read_no_announces() -> None:
    def unread() -> dict[str, tuple[str, ...]]:
        raise AssertionError("announces read for a core type")

    membership = fold_state([], FED, 0).membership
    for name in sorted(CORE_TYPES):
        chars = SIGNAL_TYPES[name].hex_chars
        value = "https://example.com/" if chars is None else "1" * chars
        check_authoring(FED, membership, PUB["a"], 1, SignalBody(name, value),
                        announced=unread)  # fmt: skip


def test_without_announces_no_extra_type_is_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    register_extra_type(monkeypatch)
    membership = fold_state([], FED, 0).membership
    with pytest.raises(TypeNotEnabledError):  # the default reader: nobody announced anything
        check_authoring(FED, membership, PUB["a"], 1, SignalBody(EXTRA_TYPE, extra_value(2)))


# -- what a node announces --------------------------------------------------------------------


def test_a_node_announces_types_only_when_it_knows_one_beyond_the_core() -> None:
    assert (announced_types(SIGNAL_TYPES) == ()) == (set(SIGNAL_TYPES) <= CORE_TYPES)
    assert announced_types(CORE_TYPES) == ()
    assert announced_types([*CORE_TYPES, "sha512"]) == NEW
    assert announced_types(["tlsh", "sha512", "tlsh"]) == ("sha512", "tlsh")


def test_every_registered_name_has_the_type_name_syntax() -> None:
    assert all(TYPE_NAME.fullmatch(name) for name in SIGNAL_TYPES)
    assert set(SIGNAL_TYPES) >= CORE_TYPES


# -- the announce body's types ----------------------------------------------------------------

ANNOUNCE = {"name": "Node", "urls": ["https://a.example/"]}
BAD_TYPES: list[tuple[str, object]] = [
    ("empty (omitted instead)", []),
    ("null", None),
    ("not a list", "sha512"),
    ("an object", {"sha512": True}),
    ("a number", [1]),
    ("upper case", ["SHA512"]),
    ("starts with a digit", ["5ha"]),
    ("a hyphen", ["video-md5"]),
    ("33 characters", ["a" * 33]),
    ("empty name", [""]),
    ("unsorted", ["sha512", "md5"]),
    ("duplicates", ["md5", "md5"]),
    ("65 names", [f"t{i:03}" for i in range(MAX_ANNOUNCED_TYPES + 1)]),
]


@pytest.mark.parametrize("types", [c[1] for c in BAD_TYPES], ids=[c[0] for c in BAD_TYPES])
def test_malformed_types_are_schema_errors(types: object) -> None:
    with pytest.raises(SchemaError):
        parse_body("announce", ANNOUNCE | {"types": types})
    with pytest.raises(SchemaError):
        AnnounceBody("Node", types=types)


def test_well_formed_types() -> None:
    most = tuple(f"t{i:03}" for i in range(MAX_ANNOUNCED_TYPES))
    for types in (("md5",), ("a" * 32,), ("tlsh", "vpdq"), most, NEW):
        body = parse_body("announce", ANNOUNCE | {"types": list(types)})
        assert isinstance(body, AnnounceBody) and body.types == types
        assert body.to_json()["types"] == list(types)


def test_types_are_omitted_when_empty_and_round_trip() -> None:
    plain = AnnounceBody("Node", ("https://a.example/",))
    assert plain.types == () and "types" not in plain.to_json()
    assert parse_body("announce", ANNOUNCE) == plain
    w = World()
    w.add("a", plain)
    with_types = w.add("a", AnnounceBody("Node", ("https://a.example/",), types=BOTH))
    assert b'"types":["dhash","md5"' in with_types.canonical
    for record in w.records:  # decoded, and rebuilt from trusted bytes: the same body
        decoded = decode_record(record.canonical, FED.id)
        assert decoded.body == record.body == trusted_record(record.canonical, record.id).body


def test_endpoint_summary_shows_types_only_when_announced() -> None:
    w = World()
    w.announce("a", ())
    w.announce("b")
    endpoints = fold_state(w.records, FED, 0).to_json()["endpoints"]
    assert isinstance(endpoints, list)
    by_name = {e["name"]: e for e in endpoints}
    assert "types" not in by_name["node a"]
    assert by_name["node b"]["types"] == list(NEW)
