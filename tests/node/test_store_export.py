"""The store's record pages (what GET /v1/records streams) and its refusal to author a
featureless signal (SPEC 5.3), against real SQLite files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from store_helpers import T0, key, make_federation, random_history

from node.store.store import Store
from protocol import SignalBody, sign_record
from protocol.errors import InvalidHashError

FOUNDERS = [key(1), key(2), key(3)]
FED = make_federation(FOUNDERS, threshold=2)


def stored(tmp_path: Path) -> Store:
    """A store holding a random history of three founders, and a fork of founder 3."""
    store = Store.open(tmp_path / "node.db", FED, create=True)
    history = random_history(random.Random(5), FED, 120)
    store.merge([r.canonical for r in history.records], received_ms=T0)
    body = SignalBody("md5", "e" * 32)
    one, two = (
        sign_record(FOUNDERS[2], fed=FED.id, seq=1, prev=None, ts=T0 + n, body=body) for n in (1, 2)
    )
    store.merge([one.canonical, two.canonical], received_ms=T0)
    return store


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_pages_cover_every_record_once_in_order(tmp_path: Path, size: int) -> None:
    with stored(tmp_path) as store:
        everything = list(store.all_records())
        paged: list[bytes] = []
        after = ("", 0, 0)
        while page := store.records_page(after, size):
            assert len(page) <= size
            paged += [raw for *_, raw in page]
            after = page[-1][:3]
        assert paged == everything and len(everything) > 20
        authors = [author for author, *_ in store.records_page(("", 0, 0), len(everything))]
        assert authors == sorted(authors)


def test_a_page_resumes_after_an_author_and_seq(tmp_path: Path) -> None:
    with stored(tmp_path) as store:
        rows = store.records_page(("", 0, 0), 10_000)
        author, seq = rows[5][0], rows[5][1]
        rest = store.records_page((author, seq, 2**63 - 1), 10_000)
        assert rest == [r for r in rows if (r[0], r[1]) > (author, seq)]


def test_a_featureless_signal_is_never_authored(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db", FED, create=True) as store:
        for value in ("0" * 64, "f" * 64, "0" * 60 + "ffff"):
            with pytest.raises(InvalidHashError, match="featureless"):
                store.append_local(FOUNDERS[0], SignalBody("pdq", value), ts=T0)
        assert list(store.all_records()) == []
        store.append_local(FOUNDERS[0], SignalBody("pdq", "0" * 56 + "ffffffff"), ts=T0)
        assert len(list(store.all_records())) == 1
