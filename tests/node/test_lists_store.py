"""The local lists file (node.store.lists): a real SQLite file, durable, refused when foreign."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from node.errors import InputError, StoreRefusedError
from node.store.lists import LISTS_FILE, ListStore, NewEntry, check_entry

PDQ = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22"
MD5 = "d35c785545392755e7e4164457657269"


def entry(kind: str, value: str, note: str | None = None, *, safelist: bool = False) -> NewEntry:
    return check_entry(kind, value, note, safelist=safelist, radius=31)


def test_lists_and_entries_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / LISTS_FILE
    with ListStore.open(path) as store:
        made = store.create("review", "match", "under review", by="token", now_ms=5)
        assert (made.name, made.kind, made.enabled, made.entries) == ("review", "match", True, 0)
        store.create("logos", "safelist", None, by="ui:alice", now_ms=6)
        found, added, skipped = store.add_entries(
            "review", [entry("pdq", PDQ.upper(), "case 1"), entry("md5", MD5)], by="token",
            now_ms=7,
        )  # fmt: skip
        assert (found.entries, skipped) == (2, 0)
        assert [(e.type, e.value, e.note) for e in added] == [("pdq", PDQ, "case 1"),
                                                              ("md5", MD5, None)]  # fmt: skip
        assert store.add_entries("review", [entry("md5", MD5)], by="t", now_ms=8)[1:] == ([], 1)
        store.set_enabled("review", False)
    with ListStore.open(path) as store:  # what returned was committed
        assert [(x.name, x.enabled, x.entries) for x in store.lists()] == [
            ("logos", True, 0), ("review", False, 2),
        ]  # fmt: skip
        _, page = store.entries("review", limit=1, offset=0)
        assert [e.value for e in page] == [MD5]  # newest first
        rows = list(store.index_rows("review"))
        assert [(t, v) for _, t, v in rows] == [("pdq", PDQ), ("md5", MD5)]
        assert store.entries_by_row([rows[1][0]])[rows[1][0]].added_by == "token"
        assert store.find("review", "md5", MD5)[1] is not None
        _, removed, missing = store.remove_entries("review", [("md5", MD5), ("md5", "0" * 32)])
        assert [e.value for e in removed] == [MD5] and missing == [("md5", "0" * 32)]
        assert store.delete("review").entries == 1
        assert [x.name for x in store.lists()] == ["logos"]
        assert store.conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 0


def test_names_kinds_and_missing_lists_are_clear_errors(tmp_path: Path) -> None:
    with ListStore.open(tmp_path / LISTS_FILE) as store:
        store.create("a", "match", None, by="t", now_ms=1)
        for name in ("A", "", "-a", "a b", "x" * 65):
            with pytest.raises(InputError, match="is not a list name"):
                store.create(name, "match", None, by="t", now_ms=1)
        with pytest.raises(InputError, match="kind must be one of match, safelist"):
            store.create("b", "blocklist", None, by="t", now_ms=1)
        with pytest.raises(InputError) as exists:
            store.create("a", "safelist", None, by="t", now_ms=1)
        assert exists.value.status == 409
        with pytest.raises(InputError) as absent:
            store.add_entries("nope", [entry("md5", MD5)], by="t", now_ms=1)
        assert (absent.value.status, absent.value.title) == (404, "no such list")
        assert [x.name for x in store.lists()] == ["a"]  # nothing else was written


def test_entries_are_checked_canonical_and_featureless_only_in_a_safelist() -> None:
    assert entry("pdq", f"  {PDQ.upper()} ").value == PDQ
    with pytest.raises(InputError, match="invalid pdq value"):
        entry("pdq", "xyz")
    with pytest.raises(InputError, match="type must be one of"):
        entry("blake3", MD5)
    with pytest.raises(InputError, match="vpdq entries are not supported"):
        entry("vpdq", MD5)
    with pytest.raises(InputError, match="is featureless"):
        entry("pdq", "0" * 64)
    assert entry("pdq", "0" * 64, "blank frame", safelist=True).note == "blank frame"
    with pytest.raises(InputError, match="note must be a string of at most 1000"):
        entry("md5", MD5, "x" * 1001)


def test_a_foreign_or_newer_file_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreRefusedError, match="not a hashmesh local lists file"):
        ListStore.open(other)
    text = tmp_path / "text.db"
    text.write_text("not a database at all, just some text that is long enough")
    with pytest.raises(StoreRefusedError, match="not a local lists file, or damaged"):
        ListStore.open(text)
    newer = tmp_path / LISTS_FILE
    ListStore.open(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                     "VALUES ('hashmesh-lists', '0099_future', 'later')")  # fmt: skip
    with pytest.raises(StoreRefusedError, match="written by a newer hashmesh"):
        ListStore.open(newer)
