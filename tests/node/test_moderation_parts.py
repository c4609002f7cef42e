"""node.moderation's parts on a real SQLite file, with the time passed in: the events of a
match answer, the match log's pages and retention, the flood rule and quarantine, the
webhook queue and its signature, sightings, and the ``[moderation]``/``[[webhooks]]``
config. The service end to end (queue, sender, backoff) runs against an aiohttp receiver
on 127.0.0.1 in ``tests/node/test_moderation_service.py``; real nodes in
``tests/integration/test_moderation.py``."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from node.config import MIN_SECRET_CHARS, ModerationConfig, WebhookRule, load_config
from node.errors import ConfigError, StoreRefusedError
from node.moderation import matchlog, pipeline, quarantine, sightings, webhooks
from node.moderation.db import ID_SHIFT, Transaction, match_id, open_db, ts_of
from node.moderation.events import FEDERATION, MatchEvent, collect
from node.moderation.quarantine import FloodRule

T0 = 1_763_800_000_000
ME, OTHER = "a" * 64, "b" * 64
SECRET = "s3cret-for-the-tests"


def hit(n: int, distance: int | None = 0, **fields: Any) -> dict[str, Any]:
    """A match answer's hit on signal n (node.store.read.signal_json's shape)."""
    return {"id": f"{n:064x}", "row": n, "member": OTHER, "member_name": "other", "type": "pdq",
            "value": f"{n:064x}", "labels": ["entity:x"], "status": "active",
            "tallies": {"confirm": 0, "dispute": 0, "seen": 0},
            "distance": distance} | fields  # fmt: skip


def event(n: int, ts: int = T0, **fields: Any) -> MatchEvent:
    return MatchEvent(ts, "api", "pdq", "f" * 64, hit(n, **fields))


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_db(tmp_path)
    yield c
    c.close()


def context(**changes: Any) -> pipeline.FlushContext:
    ids = iter(range(10**6))
    base: dict[str, Any] = {
        "now_ms": T0, "identity": ME, "node": "a", "rules": (),
        "flood": FloodRule(0, 10.0, 60_000, 600_000), "sighting_labels": (), "held_max": 100,
        "quarantined": (), "uid": lambda: f"{next(ids):032x}",
    }  # fmt: skip
    return pipeline.FlushContext(**(base | changes))


# ---- the events of an answer -------------------------------------------------------------


def test_an_answer_that_matched_nothing_gives_no_events() -> None:
    answer = {"matched": False, "results": [{"query": {"type": "pdq", "value": "0" * 64},
                                              "matched": False, "hits": []}]}  # fmt: skip
    assert collect(answer, "api", T0) == []


def test_each_query_gives_one_event_per_signal_with_its_query() -> None:
    q1, q2 = {"type": "pdq", "value": "1" * 64}, {"type": "md5", "value": "2" * 32}
    answer = {"matched": True, "results": [
        {"query": q1, "matched": True, "hits": [hit(1, 3), hit(2, 5)]},
        {"query": q2, "matched": True, "hits": [hit(1, 0, type="md5")]},
        {"query": q1, "matched": False, "hits": []},
    ]}  # fmt: skip
    found = collect(answer, "ui:alice", T0)
    assert [(e.query_type, e.query_value, e.signal, e.distance, e.caller) for e in found] == [
        ("pdq", "1" * 64, f"{1:064x}", 3, "ui:alice"),
        ("pdq", "1" * 64, f"{2:064x}", 5, "ui:alice"),
        ("md5", "2" * 32, f"{1:064x}", 0, "ui:alice"),
    ]


def test_an_image_hit_by_its_rotations_too_is_one_match_at_the_smaller_distance() -> None:
    image = {"kind": "image", "matched": True, "hashes": {"pdq": "3" * 64, "md5": "4" * 32},
             "results": [{"query": {"type": "pdq", "value": "3" * 64}, "matched": True,
                          "hits": [hit(7, 9)]}],
             "dihedral": [{"query": {"type": "pdq", "value": "5" * 64}, "matched": True,
                           "hits": [hit(7, 2)], "transform": "rotate90"}],
             "videos": [hit(8, 4) | {"frame_ms": 1000}]}  # fmt: skip
    found = collect({"matched": True, "results": [{"file": "x.jpg"} | image]}, "api", T0)
    assert [(e.signal, e.distance, e.query_value) for e in found] == [
        (f"{7:064x}", 2, "5" * 64),
        (f"{8:064x}", 4, "3" * 64),  # a still of a listed video: the image's PDQ
    ]


def test_a_video_match_has_no_distance_and_names_the_video() -> None:
    video = {"kind": "video", "matched": True, "hashes": {"md5": "6" * 32, "vpdq": []},
             "results": [], "videos": [{"video_id": "9" * 64, "signals": [hit(3, None)],
                                         "query_matched_pct": 90.0}], "images": []}  # fmt: skip
    [found] = collect({"matched": True, "results": [video]}, "api", T0)
    assert (found.query_type, found.query_value, found.distance) == ("md5", "6" * 32, None)


def test_the_vpdq_values_of_one_video_share_its_hits_once() -> None:
    video = {"kind": "video", "matched": True, "videos": [{"video_id": "9" * 64,
             "signals": [hit(3, None)]}], "images": []}  # fmt: skip
    results = [{"query": {"type": "vpdq", "value": f"{'9' * 64}:{n}"}} | video for n in range(3)]
    [found] = collect({"matched": True, "results": results}, "api", T0)
    assert (found.query_type, found.signal) == ("vpdq", f"{3:064x}")


def test_hits_of_quarantined_signals_are_marked_in_the_answer() -> None:
    hits = [hit(1), hit(2)]
    answer = {"matched": True, "results": [{"query": {"type": "pdq", "value": "1" * 64},
                                             "matched": True, "hits": hits}]}  # fmt: skip
    collect(answer, "api", T0, quarantined={f"{2:064x}"})
    assert "quarantined" not in hits[0] and hits[1]["quarantined"] is True


def test_a_local_list_hit_is_an_event_and_a_suppressed_hit_is_none() -> None:
    listed = {"list": "review", "type": "pdq", "value": "a" * 64, "note": None,
              "distance": 4, "source": {"kind": "list", "list": "review"}}  # fmt: skip
    answer = {"matched": True, "results": [{
        "query": {"type": "pdq", "value": "1" * 64}, "matched": True,
        "hits": [hit(1, 2) | {"source": {"kind": "federation"}}, listed],
        "suppressed": [hit(2, 3) | {"by": {"list": "logos"}}],
    }]}  # fmt: skip
    found = collect(answer, "api", T0)
    assert [(e.signal, e.list_name, e.distance) for e in found] == [
        (f"{1:064x}", FEDERATION, 2),
        (f"list:review:pdq:{'a' * 64}", "review", 4),
    ]


# ---- the match log -------------------------------------------------------------------------


def test_match_ids_order_by_time_and_never_repeat() -> None:
    assert match_id(T0, 0) == T0 * ID_SHIFT and ts_of(match_id(T0, 0)) == T0
    assert match_id(T0, T0 * ID_SHIFT) == T0 * ID_SHIFT + 1  # the same millisecond
    assert match_id(T0 - 5, T0 * ID_SHIFT) == T0 * ID_SHIFT + 1  # a clock set back


def test_the_log_pages_newest_first_by_signal_and_time(conn: sqlite3.Connection) -> None:
    events = [event(n % 2, ts=T0 + n) for n in range(7)]
    pipeline.flush(conn, events, context())
    first = matchlog.page(conn, limit=3)
    assert [m["ts"] for m in first["matches"]] == [T0 + 6, T0 + 5, T0 + 4]
    second = matchlog.page(conn, limit=3, before=first["next"])
    third = matchlog.page(conn, limit=3, before=second["next"])
    assert [m["ts"] for m in second["matches"] + third["matches"]] == [T0 + n for n in (3, 2, 1, 0)]
    assert third["next"] is None
    odd = matchlog.page(conn, signal=f"{1:064x}")["matches"]
    assert [m["ts"] for m in odd] == [T0 + 5, T0 + 3, T0 + 1]
    assert [m["ts"] for m in matchlog.page(conn, since_ms=T0 + 5)["matches"]] == [T0 + 6, T0 + 5]
    assert matchlog.page(conn, signal="f" * 64)["matches"] == []
    assert matchlog.counts(conn, f"{1:064x}") == {
        "signal": f"{1:064x}", "total": 3, "first_ms": T0 + 1, "last_ms": T0 + 5,
        "type": "pdq", "list": "federation",
    }  # fmt: skip
    assert matchlog.page(conn, limit=1)["matches"][0] == {
        "id": match_id(T0 + 6, 0), "ts": T0 + 6, "signal": f"{0:064x}", "signal_type": "pdq",
        "list": "federation", "caller": "api", "query": {"type": "pdq", "value": "f" * 64},
        "distance": 0, "quarantined": False,
    }  # fmt: skip


def test_the_log_forgets_matches_past_their_days_and_beyond_its_rows(
    conn: sqlite3.Connection,
) -> None:
    pipeline.flush(conn, [event(1, ts=T0 + n * 1000) for n in range(10)], context())
    keep_ms = 4500  # matches of the last 4.5 s before T0 + 10 s stay
    with Transaction(conn):
        assert matchlog.prune(conn, T0 + 10_000, keep_ms, 100, matchlog.row_count(conn)) == 6
    assert [m["ts"] for m in matchlog.page(conn)["matches"]] == [
        T0 + n * 1000 for n in (9, 8, 7, 6)
    ]
    with Transaction(conn):
        assert matchlog.prune(conn, T0 + 10_000, keep_ms, 3, 4) == 1  # at most 3 rows
        assert matchlog.prune(conn, T0 + 10_000, keep_ms, 3, 3) == 0
    assert matchlog.row_count(conn) == 3
    assert matchlog.counts(conn, f"{1:064x}")["total"] == 10  # type: ignore[index]


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "moderation.db")
    other.execute("CREATE TABLE t (x)")
    other.close()
    with pytest.raises(StoreRefusedError, match="not a hashmesh moderation database"):
        open_db(tmp_path)


# ---- flood quarantine ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recent", "baseline", "flood"),
    [
        (21, 0, True),  # over the floor, no history
        (20, 0, False),  # at the floor
        (300, 200, True),  # baseline 200 per 10 windows = 20 a window; 300 > 10 x 20
        (200, 200, False),  # 200 = 10 x 20: not more
        (5000, 10_000, False),  # always busy: 1000 a window, 5000 < 10 x 1000
    ],
)
def test_the_flood_rule(recent: int, baseline: int, flood: bool) -> None:
    rule = FloodRule(floor=20, factor=10.0, window_ms=60_000, baseline_ms=600_000)
    assert rule.is_flood(recent, baseline) is flood
    assert FloodRule(0, 10.0, 60_000, 600_000).is_flood(recent, baseline) is False


def test_a_flood_quarantines_and_holds_its_actions_until_released(
    conn: sqlite3.Connection,
) -> None:
    rule = WebhookRule("all", "http://127.0.0.1:9/", SECRET)
    ctx = context(flood=FloodRule(5, 10.0, 60_000, 600_000), rules=(rule,), held_max=3,
                  sighting_labels=("*",))  # fmt: skip
    calm = pipeline.flush(conn, [event(2, ts=T0)] * 5, ctx)  # 5 matches: at the floor
    assert calm.floods == [] and calm.deliveries == 5
    result = pipeline.flush(conn, [event(1, ts=T0 + n) for n in range(6)], ctx)
    assert [(f.signal, f.recent, f.baseline) for f in result.floods] == [(f"{1:064x}", 6, 0)]
    assert (result.deliveries, result.held, result.held_dropped) == (0, 3, 3)
    assert quarantine.quarantined_ids(conn) == {f"{1:064x}"}
    assert webhooks.counts(conn) == {"held": 3, "pending": 5, "dead": 0}
    assert [s["state"] for s in sightings.entries(conn, state=None, limit=9)] == ["held", "pending"]
    [entry] = quarantine.entries(conn)
    assert (entry["recent"], entry["held"], entry["held_dropped"]) == (6, 3, 3)
    with Transaction(conn):
        released = quarantine.release(conn, f"{1:064x}", T0 + 100, by="api", deliver=True)
    assert released is not None and released["deliveries_released"] == 3
    assert released["state"] == "released" and released["released_by"] == "api"
    assert webhooks.counts(conn) == {"held": 0, "pending": 8, "dead": 0}
    assert quarantine.quarantined_ids(conn) == set()
    # only matches after the release count towards the next flood
    again = pipeline.flush(conn, [event(1, ts=T0 + 200)] * 5, replace(ctx, now_ms=T0 + 200))
    assert again.floods == []
    with Transaction(conn):
        assert quarantine.release(conn, f"{1:064x}", T0, by="api", deliver=True) is None


def test_a_release_may_drop_the_held_actions(conn: sqlite3.Connection) -> None:
    ctx = context(flood=FloodRule(1, 10.0, 60_000, 600_000),
                  rules=(WebhookRule("all", "http://127.0.0.1:9/", SECRET),),
                  sighting_labels=("*",))  # fmt: skip
    pipeline.flush(conn, [event(1)] * 2, ctx)
    with Transaction(conn):
        quarantine.release(conn, f"{1:064x}", T0, by="cli", deliver=False)
    assert webhooks.counts(conn) == {"held": 0, "pending": 0, "dead": 0}
    [sighting] = sightings.entries(conn, state=None, limit=9)
    assert sighting["state"] == "skipped"


def test_a_signal_busy_for_long_needs_a_jump_to_flood(conn: sqlite3.Connection) -> None:
    rule = FloodRule(5, 3.0, 60_000, 600_000)  # buckets of 15 s
    base = T0 - T0 % 15_000
    history = [event(1, ts=base + n * 6000) for n in range(100)]  # 10 a window, 10 windows
    pipeline.flush(conn, history, context(flood=replace(rule, floor=0), now_ms=base + 599_000))
    now = base + 660_000 - 1  # the window: the buckets from base + 600 s on
    busy = [event(1, ts=base + 600_000 + n) for n in range(25)]  # 25 < 3 x 10
    assert pipeline.flush(conn, busy, context(flood=rule, now_ms=now)).floods == []
    more = [event(1, ts=base + 600_100 + n) for n in range(10)]  # 35 > 3 x 10
    found = pipeline.flush(conn, more, context(flood=rule, now_ms=now)).floods
    assert [(f.recent, f.baseline) for f in found] == [(35, 100)]


# ---- webhooks ------------------------------------------------------------------------------


def test_a_rule_filters_by_label_list_type_and_confirmations() -> None:
    rule = WebhookRule("r", "http://127.0.0.1:9/", SECRET, labels=("entity:x",),
                       lists=("federation",), types=("pdq",), min_confirmations=1)  # fmt: skip
    assert rule.applies(("entity:x", "other"), "federation", "pdq", 1)
    assert not rule.applies(("entity:y",), "federation", "pdq", 1)
    assert not rule.applies(("entity:x",), "review", "pdq", 1)
    assert not rule.applies(("entity:x",), "federation", "md5", 1)
    assert not rule.applies(("entity:x",), "federation", "pdq", 0)
    assert WebhookRule("any", "http://127.0.0.1:9/", SECRET).applies((), "review", "url", 0)


def test_one_delivery_per_match_and_rule(conn: sqlite3.Connection) -> None:
    rules = (WebhookRule("x", "http://127.0.0.1:9/x", SECRET, labels=("entity:x",)),
             WebhookRule("y", "http://127.0.0.1:9/y", SECRET, labels=("entity:y",)),
             WebhookRule("all", "http://127.0.0.1:9/all", SECRET))  # fmt: skip
    result = pipeline.flush(conn, [event(1), event(2, labels=["entity:y"])], context(rules=rules))
    assert result.deliveries == 4
    page = webhooks.page(conn, state="pending", before=None, limit=10)
    assert sorted((d["rule"], d["signal"][-1]) for d in page["deliveries"]) == [
        ("all", "1"), ("all", "2"), ("x", "1"), ("y", "2")]  # fmt: skip
    body = webhooks.entry(conn, page["deliveries"][0]["id"])["body"]  # type: ignore[index]
    assert body["event"] == "match" and body["delivery"] == page["deliveries"][0]["id"]
    assert body["signal"]["id"] == f"{2:064x}" and body["signal"]["list"] == "federation"
    assert body["match"]["query"] == {"type": "pdq", "value": "f" * 64}


def test_a_delivery_fails_backs_off_dies_and_is_retried(conn: sqlite3.Connection) -> None:
    rules = (WebhookRule("all", "http://127.0.0.1:9/", SECRET),)
    pipeline.flush(conn, [event(1)], context(rules=rules))
    [due] = webhooks.due(conn, T0, 5)
    assert webhooks.due(conn, T0, 5, busy={due.id}) == []
    with Transaction(conn):
        webhooks.failed(conn, due.id, T0, status=503, error="HTTP 503", retry_at_ms=T0 + 5000)
    assert webhooks.due(conn, T0 + 4999, 5) == [] and webhooks.next_due_ms(conn) == T0 + 5000
    with Transaction(conn):
        webhooks.failed(conn, due.id, T0 + 5000, status=None, error="refused", retry_at_ms=None)
    dead = webhooks.page(conn, state="dead", before=None, limit=5)["deliveries"]
    assert [(d["attempts"], d["last_error"]) for d in dead] == [(2, "refused")]
    with Transaction(conn):
        again = webhooks.retry(conn, due.uid, T0 + 9000)
    assert again is not None and (again["state"], again["attempts"]) == ("pending", 0)
    with Transaction(conn):
        assert webhooks.retry(conn, due.uid, T0 + 9000) is None  # only a dead one
        webhooks.delivered(conn, due.id, T0 + 9001, 204)
    assert webhooks.entry(conn, due.uid)["state"] == "delivered"  # type: ignore[index]
    with Transaction(conn):
        assert webhooks.prune(conn, T0 + 9002) == 1


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    rng = random.Random(4)
    for failures, low, high in ((1, 2.5, 5.0), (2, 5.0, 10.0), (3, 10.0, 20.0), (9, 30, 60)):
        for _ in range(50):
            assert low <= webhooks.backoff_s(failures, 5.0, 60.0, rng) <= high


def test_a_receiver_verifies_the_signature() -> None:
    body = b'{"event":"match"}'
    header = webhooks.signature(SECRET, body, 1_763_800_000)
    assert header.startswith("t=1763800000,v1=") and len(header.rpartition("=")[2]) == 64
    check = webhooks.verify_signature
    assert check(SECRET, body, header, now_s=1_763_800_100)
    assert not check("another-secret-entirely", body, header, now_s=1_763_800_100)
    assert not check(SECRET, body + b" ", header, now_s=1_763_800_100)  # a changed body
    assert not check(SECRET, body, header, now_s=1_763_800_301)  # too old: a replay
    assert not check(SECRET, body, header.replace("t=1763800000", "t=1763800100"),
                     now_s=1_763_800_100)  # the timestamp is signed  # fmt: skip
    for bad in ("", "v1=abc", "t=x,v1=00", f"t=1,t=2,{header.partition(',')[2]}"):
        assert not check(SECRET, body, bad, now_s=1_763_800_100)


# ---- sightings -----------------------------------------------------------------------------


def test_a_signal_gets_one_sighting_and_only_for_the_labels_asked(
    conn: sqlite3.Connection,
) -> None:
    ctx = context(sighting_labels=("entity:x",))
    mine = event(3, member=ME)
    local = event(4, list="review")
    other_label = event(5, labels=["entity:y"])
    first = pipeline.flush(conn, [event(1), event(1), mine, local, other_label], ctx)
    assert first.sightings == 1
    assert pipeline.flush(conn, [event(1)], ctx).sightings == 0
    assert sightings.due(conn, 10) == [(1, f"{1:064x}")]
    star = pipeline.flush(conn, [other_label], replace(ctx, sighting_labels=("*",)))
    assert star.sightings == 1
    assert pipeline.flush(conn, [event(6)], replace(ctx, identity=None)).sightings == 0


# ---- config --------------------------------------------------------------------------------


def _config(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Any:
    (tmp_path / "config.toml").write_text('name = "n"\n' + text)
    return load_config(tmp_path, env=env or {})


def test_moderation_and_webhooks_are_read_from_config_toml(tmp_path: Path) -> None:
    config = _config(tmp_path, """
[moderation]
sightings = ["Entity:X", "entity:x"]
flood_floor = 0
match_log_days = 0.5
[[webhooks]]
url = "http://127.0.0.1:9000/hook"
secret = "0123456789abcdef"
labels = ["entity:x"]
min_confirmations = 2
[[webhooks]]
name = "second"
url = "https://example.org/hook"
secret_env = "HOOK_SECRET"
""", {"HOOK_SECRET": "from-the-environment"})  # fmt: skip
    assert config.moderation == ModerationConfig(sightings=("entity:x",), flood_floor=0,
                                                 match_log_days=0.5)  # fmt: skip
    first, second = config.webhooks
    assert (first.name, first.labels, first.min_confirmations) == ("webhook-1", ("entity:x",), 2)
    assert (second.name, second.secret) == ("second", "from-the-environment")
    assert "from-the-environment" not in repr(second)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[moderation]\nflood_factor = 0\n", "flood_factor must be positive"),
        ("[moderation]\nqueue_max = 0\n", "queue_max must be 1 or more"),
        ("[moderation]\nsightings = \"entity:x\"\n", "sightings must be a list"),
        ("[moderation]\nmatch_log = 1\n", "match_log: 1 is not a value of its type"),
        ("[moderation]\nwebhook = 1\n", "unknown key"),
        ("[[webhooks]]\nurl = \"ftp://x/\"\nsecret = \"0123456789abcdef\"\n", "http:// or"),
        ("[[webhooks]]\nurl = \"http://x/\"\nsecret = \"short\"\n",
         f"at least {MIN_SECRET_CHARS} characters"),
        ("[[webhooks]]\nurl = \"http://x/\"\nsecret_env = \"NOPE\"\n", "NOPE is unset"),
        ("[[webhooks]]\nurl = \"http://x/\"\nsecret = \"0123456789abcdef\"\nlabel = []\n",
         "unknown key"),
        ("[[webhooks]]\nurl = \"http://x/\"\nsecret = \"0123456789abcdef\"\n"
         "min_confirmations = -1\n", "min_confirmations"),
        ("[[webhooks]]\nname = \"a\"\nurl = \"http://x/\"\nsecret = \"0123456789abcdef\"\n"
         "[[webhooks]]\nname = \"a\"\nurl = \"http://y/\"\nsecret = \"0123456789abcdef\"\n",
         "unique"),
    ],
)  # fmt: skip
def test_bad_moderation_config_is_refused(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        _config(tmp_path, text)
