"""Local lists, safelists and match policy (issue 20) with real node processes on 127.0.0.1.

A local list matches on its node and never leaves it (the peer's database file and both
nodes' /v1/log are searched for its values); a safelist suppresses a federation hit on its
node only, and ``hashmesh lists dispute`` turns it into a dispute every node sees; the match
policy's keys (radius per type, minimum confirmations, dispute share, ignored members, label
rules) change answers, and bad settings or request values are refused with a clear error.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import NodeProc, found_federation, hm, ok_json, one_line_error, wait_until

from node.home import NodeHome
from node.net.httpsig import sign_request

PDQ = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22"
LOCAL_MD5 = "1ab0c0ffee5eed5a1ad0dd5ca1ab1e00"  # only ever in a local list
LOCAL_PDQ = "5a3c96e1" * 8  # likewise (0x5a3c96e1 repeated: far from any degenerate value)


def flip(value: str, bits: int) -> str:
    """value with its lowest `bits` bits inverted (a pdq `bits` away)."""
    number = int(value, 16) ^ ((1 << bits) - 1)
    return f"{number:0{len(value)}x}"


@pytest.fixture
def started() -> Iterator[list[NodeProc]]:
    nodes: list[NodeProc] = []
    yield nodes
    for node in nodes:
        node.stop()


def start(nodes: list[NodeProc], started: list[NodeProc]) -> None:
    for node in nodes:
        node.start()
        started.append(node)


def match(node: NodeProc, kind: str, value: str, **policy: Any) -> dict[str, Any]:
    answer = node.api("POST", "/v1/match", {"hashes": [{"type": kind, "value": value}]} | policy)
    return dict(answer["results"][0])


def problem(node: NodeProc, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    try:
        node.api(method, path, body)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())
    raise AssertionError(f"{method} {path} succeeded")


def peer_log(node: NodeProc, author: str, signer: NodeProc) -> bytes:
    """GET /v1/log/{author} from node, signed with signer's member key (the peer API)."""
    url = f"{node.url}v1/log/{author}?after=0&limit=5000"
    headers = sign_request(NodeHome(signer.home).key(), "GET", url, b"", now_s=time.time())
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return bytes(r.read())


def metrics(node: NodeProc) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.local_port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def files_of(home: Path, name: str) -> bytes:
    """The bytes of a SQLite file with its WAL: every table, every page, committed or not."""
    return b"".join(p.read_bytes() for p in (home / name, home / f"{name}-wal") if p.exists())


def add_signal(node: NodeProc, kind: str, value: str, labels: list[str] | None = None) -> str:
    body = {"type": kind, "value": value, "labels": labels or ["entity:test"]}
    return str(node.api("POST", "/v1/signals", body)["id"])


def has_signal(node: NodeProc, signal_id: str) -> bool:
    try:
        return node.api("GET", f"/v1/signals/{signal_id}")["status"] == "active"
    except urllib.error.HTTPError as e:
        e.close()
        return False


def test_local_list_matches_and_never_leaves_the_node(
    tmp_path: Path, started: list[NodeProc]
) -> None:
    _, (a, b) = found_federation(tmp_path, ["a", "b"])
    start([a, b], started)
    made = ok_json("lists", "create", "review", "--note", "under review", "--home", b.home)
    assert made["kind"] == "match" and made["created_by"] == "token"
    added = ok_json("lists", "add", "review", f"md5:{LOCAL_MD5}", f"pdq:{LOCAL_PDQ}",
                    "--note", "case 17", "--home", b.home)  # fmt: skip
    assert (added["added"], added["skipped"]) == (2, 0)
    again = ok_json("lists", "add", "review", f"md5:{LOCAL_MD5}", "--home", b.home)
    assert (again["added"], again["skipped"]) == (0, 1)

    hit = match(b, "pdq", flip(LOCAL_PDQ, 5))
    assert hit["matched"] and hit["total_hits"] == 1
    [shown] = hit["hits"]
    assert shown["source"] == {"kind": "list", "list": "review"}
    assert (shown["distance"], shown["value"], shown["note"]) == (5, LOCAL_PDQ, "case 17")
    assert "id" not in shown  # an entry of a local list is no signed record
    assert match(b, "md5", LOCAL_MD5)["hits"][0]["source"]["list"] == "review"
    assert not match(a, "md5", LOCAL_MD5)["matched"]  # a's node knows nothing of it
    assert "hashmesh_match_list_hits_total 2.0" in metrics(b)

    # records written after the list are gossiped: a holds them, and nothing of the list
    signal = add_signal(b, "sha256", "ab" * 32)
    wait_until(lambda: has_signal(a, signal))
    for node in (a, b):
        assert LOCAL_MD5.encode() not in files_of(node.home, "hashmesh.db"), node.name
        assert LOCAL_PDQ.encode() not in files_of(node.home, "hashmesh.db"), node.name
        log = peer_log(node, b.key, signer=a)
        assert b'"kind":"signal"' in log and b"ab" * 32 in log
        assert LOCAL_MD5.encode() not in log and LOCAL_PDQ.encode() not in log
        export = urllib.request.urlopen(  # the local export of every record, too
            urllib.request.Request(
                f"http://127.0.0.1:{node.local_port}/v1/records",
                headers={"Authorization": f"Bearer {NodeHome(node.home).token()}"},
            ),
            timeout=10,
        ).read()
        assert LOCAL_MD5.encode() not in export
    assert LOCAL_MD5.encode() not in files_of(a.home, "lists.db")
    assert LOCAL_MD5.encode() in files_of(b.home, "lists.db")  # where it lives


def test_a_local_list_is_durable_and_can_be_switched_off(
    tmp_path: Path, started: list[NodeProc]
) -> None:
    _, (b,) = found_federation(tmp_path, ["b"], threshold=1)
    start([b], started)
    b.api("POST", "/v1/lists", {"name": "review"})
    entries = [{"type": "md5", "value": LOCAL_MD5}, {"type": "pdq", "value": LOCAL_PDQ}]
    assert b.api("POST", "/v1/lists/review/entries", {"entries": entries})["added"] == 2
    # switched off it matches nothing; it survives a restart (durable), switched back on
    assert b.api("POST", "/v1/lists/review/disable")["list"]["enabled"] is False
    assert not match(b, "md5", LOCAL_MD5)["matched"]
    b.stop()
    b.start()
    [listed] = b.api("GET", "/v1/lists")["lists"]
    assert (listed["name"], listed["enabled"], listed["entries"]) == ("review", False, 2)
    b.api("POST", "/v1/lists/review/enable")
    assert match(b, "md5", LOCAL_MD5)["matched"]
    gone = {"entries": [{"type": "md5", "value": LOCAL_MD5}, {"type": "md5", "value": "0" * 32}]}
    removed = b.api("DELETE", "/v1/lists/review/entries", gone)
    assert removed["removed"] == 1 and removed["missing"] == [{"type": "md5", "value": "0" * 32}]
    assert not match(b, "md5", LOCAL_MD5)["matched"]


def test_safelist_suppresses_locally_and_the_dispute_reaches_every_node(
    tmp_path: Path, started: list[NodeProc]
) -> None:
    _, (a, b, c) = found_federation(tmp_path, ["a", "b", "c"])
    start([a, b, c], started)
    signal = add_signal(a, "pdq", PDQ)
    wait_until(lambda: all(has_signal(n, signal) for n in (b, c)))
    logo = flip(PDQ, 3)  # what b sees on its platform: a logo near the listed hash
    b.api("POST", "/v1/lists", {"name": "logos", "kind": "safelist"})
    b.api("POST", "/v1/lists/logos/entries", {"type": "pdq", "value": logo, "note": "our logo"})

    on_b = match(b, "pdq", PDQ)
    assert not on_b["matched"] and on_b["hits"] == []
    [suppressed] = on_b["suppressed"]
    assert suppressed["id"] == signal and suppressed["source"]["kind"] == "federation"
    entry = suppressed["by"]["entry"]
    assert suppressed["by"]["safelist"] == "logos"
    assert (entry["value"], entry["note"], entry["distance"]) == (logo, "our logo", 3)
    assert match(c, "pdq", PDQ)["hits"][0]["id"] == signal  # only b suppresses it
    assert "hashmesh_match_suppressed_total 1.0" in metrics(b)
    assert match(b, "pdq", PDQ, lists=[])["matched"]  # a request may leave lists out

    # the one command: a signed dispute on every signal the safelisted hash matches
    shared = ok_json("lists", "dispute", "logos", f"pdq:{logo}", "--note", "a logo: benign",
                     "--home", b.home)  # fmt: skip
    [disputed] = shared["disputed"]
    assert (disputed["signal"], disputed["distance"]) == (signal, 3)
    for node in (a, c):
        wait_until(lambda n=node: n.api("GET", f"/v1/signals/{signal}")["tallies"]["dispute"] == 1)
    again = ok_json("lists", "dispute", "logos", f"pdq:{logo}", "--home", b.home)
    assert again["disputed"] == [] and again["skipped"][0]["reason"].startswith("already")
    absent = hm("lists", "dispute", "review", f"pdq:{logo}", "--home", b.home)
    assert "no local list named 'review'" in one_line_error(absent)

    ok_json("lists", "disable", "logos", "--home", b.home)  # off: it suppresses nothing
    assert match(b, "pdq", PDQ)["hits"][0]["id"] == signal


def write_match_config(node: NodeProc, text: str) -> None:
    config = node.home / "config.toml"
    base = config.read_text().split("[match]")[0]
    config.write_text(base + text)


def test_match_policy_keys_change_answers(tmp_path: Path, started: list[NodeProc]) -> None:
    _, (a, b) = found_federation(tmp_path, ["a", "b"])
    write_match_config(b, '[match]\nmin_confirmations = 1\n[match.radius]\npdq = 8\n'
                       '[match.labels."entity:urgent"]\nmin_confirmations = 0\n')  # fmt: skip
    start([a, b], started)
    plain = add_signal(a, "pdq", PDQ)
    urgent = add_signal(a, "md5", "d35c785545392755e7e4164457657269", ["entity:urgent"])
    mine = add_signal(b, "sha256", "cd" * 32)
    wait_until(lambda: has_signal(b, plain) and has_signal(b, urgent))

    # min_confirmations 1: a's unconfirmed signal is suppressed; a label rule lets one through
    first = match(b, "pdq", PDQ)
    assert not first["matched"]
    assert first["suppressed"][0]["by"] == {"policy": "min_confirmations", "required": 1,
                                            "confirmations": 0}  # fmt: skip
    assert match(b, "md5", "d35c785545392755e7e4164457657269")["hits"][0]["id"] == urgent
    assert match(b, "sha256", "cd" * 32)["hits"][0]["id"] == mine  # its own always count
    assert match(b, "pdq", PDQ, min_confirmations=0)["hits"][0]["id"] == plain

    # the radius per type: 8 bits here, 31 (the default) on a
    assert not match(b, "pdq", flip(PDQ, 12), min_confirmations=0)["matched"]
    assert match(a, "pdq", flip(PDQ, 12))["hits"][0]["distance"] == 12
    assert match(b, "pdq", flip(PDQ, 12), min_confirmations=0, radius={"pdq": 12})["matched"]

    # confirmations and disputes are other members' opinions (b gives them here)
    b.api("POST", f"/v1/signals/{plain}/opinions", {"verdict": "confirm"})
    assert match(b, "pdq", PDQ)["hits"][0]["tallies"]["confirm"] == 1
    b.api("POST", f"/v1/signals/{plain}/opinions", {"verdict": "dispute"})
    share = match(b, "pdq", PDQ, min_confirmations=0, max_dispute_share=50)
    assert share["suppressed"][0]["by"] == {"policy": "max_dispute_share", "max": 50.0,
                                            "share": 100.0}  # fmt: skip
    assert match(b, "pdq", PDQ, min_confirmations=0)["matched"]  # 100: never dropped

    ignored = match(b, "pdq", PDQ, min_confirmations=0, ignore_members=["A"])
    assert ignored["suppressed"][0]["by"] == {"policy": "ignore_members", "member": a.key}

    # bad request values: a 400 problem naming the member, nothing matched
    for body, title in [
        ({"radius": {"pdq": 257}}, "invalid radius"),
        ({"radius": {"md5": 1}}, "invalid radius"),
        ({"radius": {"nope": 1}}, "invalid radius"),
        ({"radius": -1}, "invalid radius"),
        ({"min_confirmations": -1}, "invalid min_confirmations"),
        ({"min_confirmations": "1"}, "invalid min_confirmations"),
        ({"max_dispute_share": 101}, "invalid max_dispute_share"),
        ({"ignore_members": ["nobody"]}, "invalid ignore_members"),
        ({"ignore_members": "a"}, "invalid ignore_members"),
        ({"lists": ["Bad Name"]}, "invalid list name"),
    ]:
        status, answer = problem(b, "POST", "/v1/match",
                                 {"hashes": [{"type": "pdq", "value": PDQ}]} | body)  # fmt: skip
        assert (status, answer["title"]) == (400, title), (body, answer)
    status, answer = problem(b, "POST", "/v1/match", {"type": "pdq", "value": PDQ,
                                                      "lists": ["absent"]})  # fmt: skip
    assert (status, answer["title"]) == (404, "no such list")


def test_bad_match_config_is_refused_with_one_line(tmp_path: Path) -> None:
    """Every bad [match] value is refused by load_config (tests/node/test_matchpolicy.py);
    here, the operator's view of one: one line, exit 2, no traceback."""
    _, (a,) = found_federation(tmp_path, ["a"], threshold=1)
    write_match_config(a, "[match.radius]\npdq = 300\n")
    line = one_line_error(hm("lists", "--home", a.home))
    assert line == (
        "hashmesh: error: configuration error: [match] radius: a pdq radius is an integer "
        "0..256 (its bits), got 300"
    )
