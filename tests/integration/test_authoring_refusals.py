"""Authoring refusals on real nodes (issue 14): the local API answers a problem, the CLI exits 2,
online (through the running node) and offline (on the store), and nothing is signed.

Retracting twice, an opinion on a retracted signal, an opinion on one's own signal and the
same vote twice each used to sign a new record; ``protocol.authoring`` refuses them at the
one signing point (``Store.append_local``), whichever way the request came.
"""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from harness import NodeProc, found_federation, hm, wait_until

from node.home import NodeHome
from node.store.store import Store
from protocol.keys import SigningKey

pytestmark = pytest.mark.slow

PDQ = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22"
LABELS = ["entity:test"]


def refused(node: NodeProc, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    try:
        node.api("POST", path, body)
    except urllib.error.HTTPError as e:
        with e:
            assert e.headers["Content-Type"].startswith("application/problem+json")
            return e.code, json.loads(e.read())
    raise AssertionError(f"POST {path} was not refused")


def own_seq(node: NodeProc) -> int:
    """The seq of the newest record the node's member signed."""
    home = NodeHome(node.home)
    with Store.open(home.db_path, home.federation(), readonly=True) as store:
        head = store.head(home.key().public)
        return 0 if head is None else head.seq


def status_on(node: NodeProc, signal_id: str) -> str | None:
    try:
        return str(node.api("GET", f"/v1/signals/{signal_id}")["status"])
    except urllib.error.HTTPError as e:
        e.close()
        return None


def test_refusals_through_the_api_and_the_cli(tmp_path: Path) -> None:
    _, (a, b) = found_federation(tmp_path, ["a", "b"])
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"name": "Newcomer", "key": SigningKey(b"\x07" * 32).public}))
    try:
        a.start()
        b.start()
        own = a.api("POST", "/v1/signals", {"type": "pdq", "value": PDQ, "labels": LABELS})["id"]
        wait_until(lambda: status_on(b, own) == "active")
        signed = own_seq(a)

        status, problem = refused(a, f"/v1/signals/{own}/opinions", {"verdict": "confirm"})
        assert (status, problem["title"]) == (422, "own signal"), problem
        b.api("POST", f"/v1/signals/{own}/opinions", {"verdict": "confirm"})  # another's: fine

        a.api("POST", f"/v1/signals/{own}/retract", {})
        status, problem = refused(a, f"/v1/signals/{own}/retract", {})
        assert (status, problem["title"]) == (409, "already retracted"), problem
        wait_until(lambda: status_on(b, own) == "retracted")
        status, problem = refused(b, f"/v1/signals/{own}/opinions", {"verdict": "dispute"})
        assert (status, problem["title"]) == (409, "already retracted"), problem

        first = hm("member", "vote", "admit", "--home", str(a.home), str(card))
        assert first.returncode == 0, first.stderr
        again = hm("member", "vote", "admit", "--home", str(a.home), str(card))  # through the API
        assert again.returncode == 2 and "already voted" in again.stderr, again.stderr
        assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
        twice = hm("retract", "--home", str(a.home), own)
        assert twice.returncode == 2 and "already retracted" in twice.stderr, twice.stderr
        assert own_seq(a) == signed + 2  # the retraction and the vote: nothing refused is signed

        b.stop()  # offline: the CLI writes the store itself, through the same rules
        added = hm("add", "--home", str(b.home), "--hash", f"md5:{'e' * 32}", "--json")
        mine = json.loads(added.stdout)["signals"][0]["id"]
        offline = hm("opinion", "--home", str(b.home), mine, "confirm")
        assert offline.returncode == 2 and "own signal" in offline.stderr, offline.stderr
        assert hm("member", "vote", "admit", "--home", str(b.home), str(card)).returncode == 0
        offline = hm("member", "vote", "admit", "--home", str(b.home), str(card))
        assert offline.returncode == 2 and "already voted" in offline.stderr, offline.stderr
    finally:
        a.stop()
        b.stop()
