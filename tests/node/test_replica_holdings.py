"""A replica's holdings (node.replica.holdings): a snapshot staged and built, feed entries
applied in the node's terms (state now, null when gone), expiry by the replica's clock."""

from __future__ import annotations

from typing import Any

import pytest

from node.replica.holdings import FeedDataError, Holdings

PDQ = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22"
NEAR = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b2d"  # 4 bits off
NOW = 1_800_000_000_000
TALLIES = {"confirm": 0, "dispute": 0, "seen": 0}


def signal(row: int, kind: str = "md5", value: str | None = None, **fields: Any) -> dict[str, Any]:
    """A signal as the node shows it (GET /v1/signals/{id}), active unless fields say not."""
    return {"id": f"{row:064x}", "row": row, "author": "a" * 64, "member": "a" * 64,
            "member_name": "a", "type": kind, "value": value or f"{row:032x}", "labels": [],
            "note": None, "expires": None, "ts": NOW, "seq": row, "status": "active",
            "retracted_by": None, "tallies": TALLIES} | fields  # fmt: skip


def built(*signals: dict[str, Any]) -> Holdings:
    holdings = Holdings()
    holdings.stage(signals, NOW)
    assert holdings.build() == len(holdings)
    return holdings


def test_a_snapshot_is_staged_then_indexed_and_answers_with_the_nodes_provenance() -> None:
    holdings = built(signal(1), signal(2, "pdq", PDQ, labels=["entity:x"]),
                     signal(3, expires=NOW - 1))  # fmt: skip
    assert len(holdings) == 2 and 3 not in holdings  # expired while the snapshot streamed
    (hit,) = holdings.index.query("pdq", NEAR)
    assert (hit.key, hit.distance) == (2, 4)
    (row,) = holdings.signal_rows([hit.key, 99], NOW)
    assert row == signal(2, "pdq", PDQ, labels=["entity:x"])  # the node's shape, status too
    assert [h.key for h in holdings.index.query("md5", f"{1:032x}")] == [1]


def test_feed_entries_add_update_and_remove_whatever_the_entry_kind() -> None:
    holdings = built(signal(1))
    holdings.apply(f"{2:064x}", signal(2), NOW)  # arrived
    holdings.apply(f"{1:064x}", signal(1, tallies=TALLIES | {"dispute": 1}), NOW)  # opinion
    assert holdings.signal_rows([1], NOW)[0]["tallies"]["dispute"] == 1
    holdings.apply(f"{1:064x}", signal(1, status="retracted", retracted_by="b" * 64), NOW)
    assert 1 not in holdings and holdings.index.query("md5", f"{1:032x}") == []
    holdings.apply(f"{1:064x}", signal(1, status="retracted", retracted_by="b" * 64), NOW)
    holdings.apply(f"{2:064x}", None, NOW)  # the node no longer holds it (a fork)
    assert len(holdings) == 0 and len(holdings.index) == 0
    holdings.apply(f"{5:064x}", signal(5, status="active", expires=NOW), NOW)  # expired by now
    assert 5 not in holdings


def test_signals_leave_at_their_expiry_by_the_replicas_clock() -> None:
    holdings = built(signal(1, expires=NOW + 10), signal(2, expires=NOW + 20), signal(3))
    holdings.apply(f"{2:064x}", signal(2, expires=NOW + 30), NOW)  # its expiry moved
    assert holdings.next_expiry_ms() == NOW + 10
    assert holdings.expire_due(NOW + 9) == 0
    assert holdings.signal_rows([1], NOW + 9)[0]["status"] == "active"
    assert holdings.expire_due(NOW + 20) == 1 and 1 not in holdings and 2 in holdings
    assert holdings.next_expiry_ms() == NOW + 30
    assert holdings.expire_due(NOW + 30) == 1
    assert [s["row"] for s in holdings.signal_rows([1, 2, 3], NOW + 30)] == [3]
    assert holdings.next_expiry_ms() is None


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("not an object", "a signal must be a JSON object"),
        (signal(1) | {"row": "1"}, "integer row"),
        (signal(1) | {"id": "xyz"}, "id must be 64 lowercase hex"),
        (signal(1) | {"expires": "soon"}, "expires must be an integer"),
        (signal(1, "pdq", "zz"), "bad pdq value"),
        (signal(1, "nosuchtype"), "unknown signal type"),
    ],
)
def test_data_a_replica_cannot_use_is_a_feed_data_error(raw: Any, error: str) -> None:
    holdings = built(signal(7))
    with pytest.raises(FeedDataError, match=error):
        holdings.apply(f"{1:064x}", raw, NOW)
    assert len(holdings) == 1 and [h.key for h in holdings.index.query("md5", f"{7:032x}")] == [7]
