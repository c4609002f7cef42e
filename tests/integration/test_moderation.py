"""The moderation loop with real nodes (issue 20): the match log, webhooks, sightings and
flood quarantine of ``hashmesh serve`` processes on 127.0.0.1, with webhook receivers that
are real aiohttp servers in this process (``tests/webhook_receiver.py``).

Each test founds its own small federation (one node when the test needs no peer), so that
``pytest -n`` spreads them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import NodeProc, found_federation, ok_json, wait_until
from webhook_receiver import Receiver

from node.moderation.webhooks import verify_signature

pytestmark = pytest.mark.slow

SECRET = "s3cret-for-the-integration-tests"
FAST = """
[moderation]
flush_interval_s = 0.1
webhook_backoff_s = 0.2
webhook_backoff_max_s = 0.4
webhook_max_attempts = 6
sighting_interval_s = 0.3
"""


def pdq(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def configure(node: NodeProc, moderation: str = "", hooks: dict[str, tuple[str, str]] = {}) -> None:  # noqa: B006
    """Append [moderation] (FAST plus moderation) and a [[webhooks]] rule per name:
    (url, the TOML of its filters)."""
    text = FAST + moderation
    for name, (url, filters) in hooks.items():
        text += f'\n[[webhooks]]\nname = "{name}"\nurl = "{url}"\nsecret = "{SECRET}"\n{filters}\n'
    with (node.home / "config.toml").open("a") as f:
        f.write(text)


@contextlib.contextmanager
def running(*nodes: NodeProc) -> Iterator[None]:
    try:
        for node in nodes:
            node.start()
        yield
    finally:
        for node in nodes:
            node.stop()


def add(node: NodeProc, value: str, *labels: str) -> str:
    body = {"type": "pdq", "value": value, "labels": list(labels)}
    return str(node.api("POST", "/v1/signals", body)["id"])


def match(node: NodeProc, value: str, times: int = 1) -> dict[str, Any]:
    hashes = [{"type": "pdq", "value": value}] * times
    return dict(node.api("POST", "/v1/match", {"hashes": hashes}))


def signal(node: NodeProc, signal_id: str) -> dict[str, Any] | None:
    try:
        return dict(node.api("GET", f"/v1/signals/{signal_id}"))
    except urllib.error.HTTPError as e:
        e.close()
        return None


def deliveries(node: NodeProc, state: str | None = None) -> list[dict[str, Any]]:
    query = f"?state={state}" if state else ""
    return list(node.api("GET", f"/v1/webhooks/deliveries{query}")["deliveries"])


def settled(node: NodeProc) -> bool:
    """Nothing queued: every match written, no delivery pending or held."""
    counts = node.api("GET", "/v1/webhooks/deliveries?limit=1")["counts"]
    return bool(counts["pending"] == 0 and node.api("GET", "/v1/moderation")["queued"] == 0)


# ---- webhooks ------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def test_a_receiver_gets_one_signed_delivery_per_match_and_rule(
    tmp_path: Path, receiver: Receiver
) -> None:
    _, [a, b] = found_federation(tmp_path, ["a", "b"])
    configure(a, hooks={
        "hook": (receiver.url("/hook"), 'labels = ["entity:hook"]'),
        "confirmed": (receiver.url("/confirmed"), "min_confirmations = 1"),
        "other": (receiver.url("/other"), 'labels = ["entity:other"]'),
    })  # fmt: skip
    with running(a, b):
        value = pdq("hooked")
        sid = add(b, value, "entity:hook")
        wait_until(lambda: match(a, value)["matched"])  # the first match, once b's signal is here
        wait_until(lambda: len(receiver.at("/hook")) == 1)
        a.api("POST", f"/v1/signals/{sid}/opinions", {"verdict": "confirm"})
        match(a, value, times=2)  # two queries in one request: two matches
        wait_until(lambda: len(receiver.at("/confirmed")) == 2 and settled(a))
        hooked, confirmed = receiver.at("/hook"), receiver.at("/confirmed")
        assert (len(hooked), len(confirmed), len(receiver.at("/other"))) == (3, 2, 0)
        assert len({r.delivery for r in hooked + confirmed}) == 5  # each delivery once
        for r in hooked + confirmed:
            assert verify_signature(SECRET, r.body, r.signature)
            assert not verify_signature("an-attacker-guessed-this", r.body, r.signature)
            assert not verify_signature(SECRET, r.body.replace(b"hook", b"hoke"), r.signature)
            body = json.loads(r.body)
            assert body["delivery"] == r.delivery and body["event"] == "match"
            assert body["signal"]["id"] == sid and body["match"]["caller"] == "api"
            assert body["match"]["query"] == {"type": "pdq", "value": value}
            assert body["rule"] == ("hook" if r.path == "/hook" else "confirmed")
        assert json.loads(confirmed[0].body)["signal"]["tallies"]["confirm"] == 1
        listed = deliveries(a, "delivered")
        assert sorted(d["id"] for d in listed) == sorted(r.delivery for r in hooked + confirmed)


def test_a_receiver_down_for_a_while_gets_retries_then_the_delivery(tmp_path: Path) -> None:
    late = Receiver()  # not started: down
    _, [a] = found_federation(tmp_path, ["a"], threshold=1)
    configure(a, hooks={"late": (late.url("/late"), "")})
    with running(a):
        value = pdq("late")
        add(a, value, "entity:late")
        match(a, value)
        failing = wait_until(lambda: [d for d in deliveries(a, "pending") if d["attempts"] >= 2])
        assert "Cannot connect" in failing[0]["last_error"] or "Connect" in failing[0]["last_error"]
        late.start()
        try:
            wait_until(lambda: len(late.received) == 1 and settled(a))
            [got] = late.received
            assert got.delivery == failing[0]["id"] and verify_signature(SECRET, got.body,
                                                                         got.signature)  # fmt: skip
            [done] = deliveries(a, "delivered")
            assert done["attempts"] >= 3 and done["last_status"] == 200
            late.stop()  # down for good: the next delivery goes dead after 6 attempts
            match(a, value)
            [dead] = wait_until(lambda: ok_json("webhooks", "deliveries", "--home", a.home,
                                                "--state", "dead")["deliveries"])  # fmt: skip
            assert dead["attempts"] == 6 and dead["rule"] == "late"
            late.start()
            ok_json("webhooks", "retry", "--home", a.home, dead["id"])
            wait_until(lambda: len(late.received) == 2 and settled(a))
            assert late.received[-1].delivery == dead["id"]
            assert deliveries(a, "dead") == []
        finally:
            late.stop()


# ---- the match log -------------------------------------------------------------------------


def test_the_match_log_is_queried_by_signal_and_time_in_pages(tmp_path: Path) -> None:
    _, [a] = found_federation(tmp_path, ["a"], threshold=1)
    configure(a)
    with running(a):
        values = [pdq("one"), pdq("two")]
        ids = [add(a, v, "entity:log") for v in values]
        match(a, values[0], times=3)
        middle = int(time.time() * 1000)
        wait_until(lambda: int(time.time() * 1000) > middle)
        a.api("POST", "/v1/match", {"hashes": [{"type": "pdq", "value": v} for v in values]})
        match(a, pdq("not listed"))
        everything = wait_until(lambda: a.api("GET", "/v1/matches")["matches"])
        assert len(everything) == 5 and all(m["caller"] == "api" for m in everything)
        assert [m["signal"] for m in everything[:2]] == [ids[1], ids[0]]
        one = a.api("GET", f"/v1/matches?signal={ids[0]}&limit=2")
        assert len(one["matches"]) == 2 and one["counts"]["total"] == 4
        rest = a.api("GET", f"/v1/matches?signal={ids[0]}&limit=2&before={one['next']}")
        assert len(rest["matches"]) == 2 and rest["next"] is None
        assert {m["id"] for m in one["matches"]}.isdisjoint(m["id"] for m in rest["matches"])
        recent = a.api("GET", f"/v1/matches?since={middle + 1}")["matches"]
        assert sorted(m["signal"] for m in recent) == sorted(ids)
        listed = ok_json("matches", "--home", a.home, "--signal", ids[1])
        assert [m["distance"] for m in listed["matches"]] == [0] and listed["counts"]["total"] == 1
        with pytest.raises(urllib.error.HTTPError) as bad:
            a.api("GET", "/v1/matches?limit=0")
        assert bad.value.code == 400
        bad.value.close()


# ---- sightings -----------------------------------------------------------------------------


def test_a_sighting_reaches_the_others_once_however_often_the_hash_matches(
    tmp_path: Path,
) -> None:
    _, [a, b] = found_federation(tmp_path, ["a", "b"])
    configure(a, 'sightings = ["entity:seen"]\n')
    with running(a, b):
        seen, unseen = pdq("seen"), pdq("unseen")
        sid, other = add(b, seen, "entity:seen"), add(b, unseen, "entity:quiet")
        wait_until(lambda: match(a, seen)["matched"] and match(a, unseen)["matched"])
        for _ in range(4):
            match(a, seen)
        wait_until(lambda: (signal(b, sid) or {}).get("tallies", {}).get("seen") == 1)
        [published] = a.api("GET", "/v1/sightings")["sightings"]
        assert (published["signal"], published["state"]) == (sid, "published")
        match(a, seen, times=5)
        wait_until(lambda: a.api("GET", f"/v1/matches?signal={sid}")["counts"]["total"] >= 10)
        time.sleep(0.8)  # over two publisher intervals: nothing more may be signed
        records = [json.loads(line) for line in _export(b, a.key)]
        opinions = [r for r in records if r["kind"] == "opinion"]
        assert [(o["body"]["signal"], o["body"]["verdict"]) for o in opinions] == [(sid, "seen")]
        assert (signal(b, other) or {})["tallies"]["seen"] == 0
        assert a.api("GET", "/v1/moderation")["counts"]["sightings"] == 1


def _export(node: NodeProc, author: str) -> list[str]:
    import urllib.request

    from node.home import NodeHome

    request = urllib.request.Request(
        f"http://127.0.0.1:{node.local_port}/v1/records",
        headers={"Authorization": f"Bearer {NodeHome(node.home).token()}"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        lines = r.read().decode().splitlines()
    return [line for line in lines if json.loads(line)["author"] == author]


# ---- flood quarantine ----------------------------------------------------------------------


def test_a_flood_of_matches_quarantines_the_signal_until_released(
    tmp_path: Path, receiver: Receiver
) -> None:
    _, [a] = found_federation(tmp_path, ["a"], threshold=1)
    configure(a, "flood_floor = 20\nflood_factor = 5.0\nflood_window_s = 60.0\n",
              hooks={"hook": (receiver.url("/hook"), "")})  # fmt: skip
    with running(a):
        flood, calm = pdq("flood"), pdq("calm")
        fid, cid = add(a, flood, "entity:x"), add(a, calm, "entity:x")
        match(a, calm, times=10)  # below the floor: not a flood
        match(a, flood, times=25)
        [held] = wait_until(lambda: a.api("GET", "/v1/quarantine")["quarantine"])
        assert (held["signal"], held["recent"], held["baseline"], held["held"]) == (fid, 25, 0, 25)
        answer = match(a, flood)
        assert answer["results"][0]["hits"][0]["quarantined"] is True
        assert "quarantined" not in match(a, calm)["results"][0]["hits"][0]
        wait_until(lambda: len(receiver.at("/hook")) == 11 and settled(a))  # calm's only
        assert {json.loads(r.body)["signal"]["id"] for r in receiver.at("/hook")} == {cid}
        metrics = _metrics(a)
        assert metrics["hashmesh_quarantined_signals"] == 1.0
        assert metrics["hashmesh_quarantines_total"] == 1.0
        [listed] = ok_json("quarantine", "list", "--home", a.home)["quarantine"]
        assert listed["signal"] == fid and listed["held"] == 26
        released = ok_json("quarantine", "release", "--home", a.home, fid)
        assert released["deliveries_released"] == 26 and released["state"] == "released"
        wait_until(lambda: len(receiver.at("/hook")) == 11 + 26 and settled(a))
        assert a.api("GET", "/v1/quarantine")["quarantine"] == []
        assert "quarantined" not in match(a, flood)["results"][0]["hits"][0]
        logged = a.api("GET", f"/v1/matches?signal={fid}&limit=1000")["matches"]
        assert sum(m["quarantined"] for m in logged) == 1  # the answer that said so


def _metrics(node: NodeProc) -> dict[str, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{node.local_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if not s.labels}  # fmt: skip
