"""The type gate at the store's one signing point, on real SQLite files (SPEC 4.5, 11).

``Store.append_local`` refuses a signal of a type not every member's node has announced and
signs it once they have; a record of such a type signed elsewhere still merges (the gate is
not validity); announced types are materialised (migration 0004) and read back as the fold has
them, and a database from before the migration is upgraded in place.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from extra_types import EXTRA_TYPE, extra_value, register_extra_type
from store_helpers import T0, fold_json, key, make_federation

from node.store.store import MergeStatus, Store
from protocol import AnnounceBody, Record, SignalBody, sign_record
from protocol.errors import TypeNotEnabledError
from protocol.type_gate import CORE_TYPES

NOW = T0 + 100_000
FOUNDERS = [key(1), key(2), key(3)]
FED = make_federation(FOUNDERS, threshold=2)
KNOWS_EXTRA = (*sorted(CORE_TYPES | {EXTRA_TYPE}),)


def announce(n: int, types: tuple[str, ...] = KNOWS_EXTRA) -> AnnounceBody:
    return AnnounceBody(f"node {n}", (f"https://n{n}.example/",), types=types)


def signed(author: int, bodies: list[AnnounceBody | SignalBody], start: int = 1,
           prev: str | None = None) -> list[Record]:  # fmt: skip
    records = []
    for i, body in enumerate(bodies):
        record = sign_record(FOUNDERS[author], fed=FED.id, seq=start + i, prev=prev,
                             ts=T0 + start + i, body=body)  # fmt: skip
        records.append(record)
        prev = record.id
    return records


def test_append_local_refuses_a_type_until_every_member_announced_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_extra_type(monkeypatch)
    with Store.open(tmp_path / "node.db", FED, create=True) as store:
        store.append_local(FOUNDERS[0], announce(0), ts=T0)
        theirs = signed(1, [announce(1)]) + signed(2, [announce(2, ())])
        store.merge([r.canonical for r in theirs], received_ms=NOW)
        body = SignalBody(EXTRA_TYPE, extra_value(1), ("entity:alpha",))
        with pytest.raises(TypeNotEnabledError, match="nodes of founder-2 have not announced"):
            store.append_local(FOUNDERS[0], body, ts=T0 + 1)
        assert store.head(FOUNDERS[0].public).seq == 1  # nothing signed
        assert store.announced_types() == {
            FOUNDERS[0].public: list(KNOWS_EXTRA),
            FOUNDERS[1].public: list(KNOWS_EXTRA),
            FOUNDERS[2].public: [],
        }
        # founder-2's node upgrades and announces again: the type is enabled
        store.merge([signed(2, [announce(2)], start=2, prev=theirs[-1].id)[0].canonical],
                    received_ms=NOW)  # fmt: skip
        record = store.append_local(FOUNDERS[0], body, ts=T0 + 2)
        assert store.signal(record.id, now_ms=NOW)["type"] == EXTRA_TYPE
        core = store.append_local(FOUNDERS[0], SignalBody("md5", "c" * 32), ts=T0 + 3)
        assert core.seq == 3


def test_core_types_are_signed_without_any_announce(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db", FED, create=True) as store:
        for n, name in enumerate(sorted(CORE_TYPES - {"url"})):
            chars = {"pdq": 64, "phash": 16, "dhash": 16, "md5": 32, "sha1": 40, "sha256": 64}
            value = f"{n + 1:x}" * chars[name]
            store.append_local(FOUNDERS[0], SignalBody(name, value), ts=T0 + n)
        store.append_local(FOUNDERS[0], SignalBody("url", "https://example.com/x"), ts=T0 + 9)
        assert store.announced_types() == {}


def test_a_record_of_a_type_not_enabled_still_merges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate is an authoring rule: a record an older or misbehaving node signed early is
    valid, stored and counted like any other (SPEC 4.5)."""
    register_extra_type(monkeypatch)
    early = signed(1, [SignalBody(EXTRA_TYPE, extra_value(2))])
    with Store.open(tmp_path / "node.db", FED, create=True) as store:
        result = store.merge([early[0].canonical], received_ms=NOW)
        assert [o.status for o in result.outcomes] == [MergeStatus.ACCEPTED]
        assert store.signal(early[0].id, now_ms=NOW)["status"] == "active"


def test_announced_types_are_materialised_as_the_fold_has_them(tmp_path: Path) -> None:
    records = (
        signed(0, [announce(0), announce(0, ())])  # the latest announce has no types
        + signed(1, [announce(1, ("tlsh",))])  # a name this node does not know
        + signed(2, [announce(2)])
    )
    with Store.open(tmp_path / "node.db", FED, create=True) as store:
        store.merge([r.canonical for r in reversed(records)], received_ms=NOW)
        state = store.materialised_state(now_ms=NOW)
        assert state == fold_json([r.canonical for r in records], FED, NOW, {})
        endpoints = {e["name"]: e for e in store.endpoints()}
        assert "types" not in endpoints["node 0"]
        assert endpoints["node 1"]["types"] == ["tlsh"]
        assert endpoints["node 2"]["types"] == list(KNOWS_EXTRA)


def test_a_database_from_before_the_migration_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    records = signed(0, [announce(0, ())]) + signed(1, [announce(1, ())])
    with Store.open(path, FED, create=True) as store:
        store.merge([r.canonical for r in records], received_ms=NOW)
        before = store.materialised_state(now_ms=NOW)
    conn = sqlite3.connect(path)  # as the previous version left it
    conn.execute("ALTER TABLE announces DROP COLUMN types")
    conn.execute("DELETE FROM _sqlite_migrations WHERE name = '0004_announced_types'")
    conn.commit()
    conn.close()
    with Store.open(path, FED) as store:
        assert store.materialised_state(now_ms=NOW) == before
        later = signed(1, [announce(1)], start=2, prev=records[-1].id)
        store.merge([later[0].canonical], received_ms=NOW)
        assert store.announced_types()[FOUNDERS[1].public] == list(KNOWS_EXTRA)
