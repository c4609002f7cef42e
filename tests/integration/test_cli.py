"""The CLI driven as an operator would (issue 6): every command a subprocess, real nodes.

One module-scoped federation of three members is founded with the CLI itself (init, card,
federation create / sign / join), served, and then used by the tests below in file order.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import NodeProc, free_port, hm, ok, ok_json, one_line_error, wait_until

from node.cli.demo import demo_images
from node.home import NodeHome
from node.interop.formats import CSV_COLUMNS
from node.store.store import Store
from protocol.encoding import encode_canonical

pytestmark = pytest.mark.slow

NAMES = ("alpha", "beta", "gamma")
PDQ = hashlib.sha256(b"not the hash of any test image").hexdigest()
PDQ_NEAR = f"{int(PDQ[:2], 16) ^ 0x7F:02x}" + PDQ[2:]  # 7 bits away: within the radius 31
PDQ_FAR = "".join("0123456789abcdef"[15 - int(c, 16)] for c in PDQ)  # every bit flipped


@dataclass
class Fed:
    root: Path
    genesis: Path
    nodes: dict[str, NodeProc]

    def home(self, name: str) -> str:
        return str(self.nodes[name].home)

    def signal(self, name: str, signal_id: str) -> Any:
        try:
            return self.nodes[name].api("GET", f"/v1/signals/{signal_id}")
        except urllib.error.HTTPError:
            return {}

    def status_of(self, name: str, signal_id: str) -> Any:
        return self.signal(name, signal_id).get("status")

    def converged(self) -> set[str]:
        """The one state digest of all nodes, or an empty set while they differ."""
        digests = self.digests()
        return digests if len(digests) == 1 else set()

    def digests(self) -> set[str]:
        return {
            str(n.api("GET", "/v1/status?digest=1")["store"]["state_digest"])
            for n in self.nodes.values()
        }


def at_once(*commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands side by side (as operators on several machines would)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: hm(*args), commands))


def each(commands: list[list[str]]) -> list[str]:
    """at_once, each of which must succeed; their outputs."""
    results = at_once(*commands)
    for args, result in zip(commands, results, strict=True):
        assert result.returncode == 0, f"hashmesh {' '.join(args)}:\n{result.stderr}"
    return [result.stdout for result in results]


def found(root: Path) -> Fed:
    """Found the federation exactly as the README's walkthrough does."""
    nodes = {name: NodeProc(name, root / name, free_port()) for name in NAMES}
    each([["init", "--home", str(n.home), "--name", n.name, "--listen", f"127.0.0.1:{n.port}",
           *(a for o in nodes.values() if o is not n for a in ("--peer", o.url))]
          for n in nodes.values()])  # fmt: skip
    for node in nodes.values():  # gossip rounds every 0.5 s instead of 2 s: a faster test
        config = node.home / "config.toml"
        text, n = re.subn(r"(?m)^interval_s = \S+", "interval_s = 0.5", config.read_text())
        assert n == 1
        config.write_text(text)
    cards = [root / f"{name}.card.json" for name in NAMES]
    printed = each([["card", "--home", str(n.home)] for n in nodes.values()])
    for card, text in zip(cards, printed, strict=True):
        card.write_text(text)
    genesis = root / "federation.json"
    ok("federation", "create", "--name", "CLI test", "--threshold", "2", *map(str, cards),
       "-o", str(genesis))  # fmt: skip
    for node in nodes.values():  # one after the other: each signs the document in place
        ok("federation", "sign", "--home", str(node.home), str(genesis))
    each([["federation", "join", "--home", str(n.home), str(genesis)] for n in nodes.values()])
    return Fed(root, genesis, nodes)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    federation = found(tmp_path_factory.mktemp("cli"))
    try:
        with ThreadPoolExecutor(len(NAMES)) as pool:
            list(pool.map(NodeProc.start, federation.nodes.values()))
        yield federation
    finally:
        for node in federation.nodes.values():
            node.stop()


def test_founding_installs_one_federation_everywhere(fed: Fed) -> None:
    shows = [["federation", "show", "--home", fed.home(n), "--json"] for n in NAMES]
    *printed, status = each([*shows, ["status", "--home", fed.home("beta")]])
    shown = [json.loads(text) for text in printed]
    assert len({s["id"] for s in shown}) == 1
    assert sorted(f["name"] for f in shown[0]["founders"]) == sorted(NAMES)
    assert "beta" in status
    assert re.search(r"peer http://127\.0\.0\.1:\d+/ .* behind [\d,]+  ahead [\d,]+", status)


def test_add_match_opinion_retract(fed: Fed) -> None:
    alpha, beta, gamma = (fed.home(n) for n in NAMES)
    added = ok_json("add", "--home", alpha, "--hash", f"pdq:{PDQ.upper()}",
                    "--label", "entity:example", "--expires", "30d", "--note", "test")  # fmt: skip
    signal_id = added["signals"][0]["id"]
    wait_until(lambda: fed.status_of("gamma", signal_id) == "active")

    near, far = at_once(["match", "--home", gamma, "--hash", f"pdq:{PDQ_NEAR}", "--json"],
                        ["match", "--home", gamma, "--hash", f"pdq:{PDQ_FAR}"])  # fmt: skip
    assert (near.returncode, far.returncode) == (0, 1), near.stderr + far.stderr
    hit = json.loads(near.stdout)["results"][0]["hits"][0]
    assert (hit["id"], hit["member_name"], hit["distance"]) == (signal_id, "alpha", 7)
    assert hit["labels"] == ["entity:example"]

    ok("opinion", "--home", beta, signal_id, "confirm", "--label", "entity:example")
    wait_until(lambda: fed.signal("gamma", signal_id).get("tallies", {}).get("confirm"))
    human = ok("match", "--home", gamma, "--hash", f"pdq:{PDQ}")
    assert "from alpha" in human and "entity:example" in human and "confirm 1" in human

    ok("retract", "--home", alpha, signal_id, "--reason", "listed in error")
    wait_until(lambda: fed.status_of("gamma", signal_id) == "retracted")
    assert hm("match", "--home", gamma, "--hash", f"pdq:{PDQ}").returncode == 1


def test_add_image_and_match_edited_copy(fed: Fed, tmp_path: Path) -> None:
    original, edited = demo_images(tmp_path)
    adding, hashing = each([["add", "--home", fed.home("beta"), str(original), "--json"],
                            ["hash", str(original), "--json"]])  # fmt: skip
    added, hashed = json.loads(adding), json.loads(hashing)["files"][0]
    assert [s["type"] for s in added["signals"]] == ["pdq", "md5"]
    assert hashed["hashes"]["pdq"] == added["signals"][0]["value"]
    # a new process reads what the node wrote (readers must never lose the node's WAL)
    again = ok_json("add", "--home", fed.home("beta"), str(original))
    assert [s["new"] for s in again["signals"]] == [False, False]
    pdq_id = added["signals"][0]["id"]
    wait_until(lambda: fed.status_of("alpha", pdq_id) == "active")
    result = json.loads(ok("match", "--home", fed.home("alpha"), str(edited), "--json"))
    hits = result["results"][0]["hits"]
    assert [h["id"] for h in hits] == [pdq_id] and 0 < hits[0]["distance"] <= 31


def test_offline_writes_are_gossiped_by_the_next_serve(fed: Fed) -> None:
    gamma = fed.nodes["gamma"]
    gamma.stop()
    try:
        home = str(gamma.home)
        match = ["match", "--home", home, "--hash", f"pdq:{PDQ}"]
        needs_node = at_once(["status", "--home", home], match)
        for refused in needs_node:
            assert "no node is running" in one_line_error(refused)
        hashes = fed.root / "hashes.txt"
        hashes.write_text("# three hashes\nmd5:" + "1" * 32 + "\nsha1:" + "2" * 40 + "\n\n"
                          "url:HTTP://Example.COM/a/../b\n")  # fmt: skip
        first = ok_json("import", "--home", str(gamma.home), str(hashes), "--label", "incident:t1")
        second = ok_json("import", "--home", str(gamma.home), str(hashes))
        assert (first["added"], second["added"], second["skipped"]) == (3, 0, 3)
        ok("peers", "add", "--home", str(gamma.home), fed.nodes["alpha"].url)
    finally:
        gamma.start()
    ids = set(first["ids"])
    wait_until(lambda: all(fed.status_of("alpha", i) == "active" for i in ids))
    listed = ok_json("signals", "--home", fed.home("alpha"), "--member", "gamma",
                     "--label", "incident:t1")  # fmt: skip
    assert {s["id"] for s in listed["signals"]} == ids


def test_export_then_import_restores_identical_state(fed: Fed) -> None:
    wait_until(fed.converged)
    backup = fed.root / "alpha.jsonl"
    ok("export", "--home", fed.home("alpha"), "-o", str(backup))
    restored = fed.root / "alpha-restored"  # a new machine: the home's secrets, no database
    restored.mkdir()
    for name in ("member.key", "api.token", "config.toml", "federation.json"):
        shutil.copy2(fed.nodes["alpha"].home / name, restored / name)
    lines = backup.read_bytes().splitlines()
    result = ok_json("import", "--home", str(restored), str(backup))
    assert result["counts"] == {"accepted": len(lines), "duplicate": 0, "pending": 0,
                                "rejected": 0}  # fmt: skip
    home = NodeHome(restored)
    with Store.open(home.db_path, home.federation(), readonly=True) as store:
        state = store.materialised_state(now_ms=time.time_ns() // 1_000_000)
        assert list(store.all_records()) == lines
    assert fed.digests() == {hashlib.sha256(encode_canonical(state)).hexdigest()}
    again = ok_json("import", "--home", str(restored), str(backup))
    assert again["counts"]["duplicate"] == len(lines)
    online = ok_json("import", "--home", fed.home("beta"), str(backup))  # through the local API
    assert online["counts"]["duplicate"] == len(lines)


def test_csv_export_lists_active_signals(fed: Fed) -> None:
    text = ok("export", "--home", fed.home("beta"), "--format", "csv")
    header, *rows = text.splitlines()
    assert header == ",".join(CSV_COLUMNS)
    active = ok_json("signals", "--home", fed.home("beta"), "--limit", "10000")["signals"]
    assert len(rows) == len(active)
    assert {r.split(",")[0] for r in rows} <= {"pdq", "md5", "sha1", "url"}


def test_bad_input_is_one_line_and_writes_nothing(fed: Fed) -> None:
    alpha = fed.home("alpha")
    before = wait_until(fed.converged)
    bad_list = fed.root / "bad.txt"
    bad_list.write_text("md5:" + "3" * 32 + "\nmd5:nothex\n")
    missing, newcomer = fed.root / "no-such-home", fed.root / "newcomer"
    *refused, created = at_once(
        ["add", "--home", alpha, "--hash", "foo:ab"],
        ["add", "--home", alpha, "--hash", "pdq:xyz"],
        ["import", "--home", alpha, str(bad_list)],
        ["signals", "--home", str(missing)],
        ["init", "--home", str(newcomer), "--name", "newcomer"],
    )
    expected = (
        "unknown signal type",
        "pdq hash is 64 hex",
        "bad.txt:2",
        "not a hashmesh node home",
    )
    for result, words in zip(refused, expected, strict=True):
        assert words in one_line_error(result)
    assert created.returncode == 0
    tampered_backup = fed.root / "tampered.jsonl"
    backup = fed.root / "alpha.jsonl"  # written by an earlier test, unless run apart from it
    if not backup.exists():
        ok("export", "--home", alpha, "-o", str(backup))
    first, *rest = backup.read_bytes().splitlines()
    tampered_backup.write_bytes(b"\n".join([first.replace(b'"seq":1', b'"seq":2'), *rest]))
    assert "failed verification" in one_line_error(
        hm("import", "--home", alpha, str(tampered_backup))
    )
    assert fed.digests() == before
    assert not missing.exists()

    tampered = fed.root / "tampered.json"
    document = json.loads(fed.genesis.read_text())
    document["body"]["threshold"] = 1
    tampered.write_bytes(encode_canonical(document))  # canonical, but the signatures fail
    assert "bad signature: signature does not verify" in one_line_error(
        hm("federation", "join", "--home", str(newcomer), str(tampered))
    )
    assert not (newcomer / "federation.json").exists()

    shutil.copy2(tampered, newcomer / "federation.json")  # tampered after joining
    assert "federation.json is damaged" in one_line_error(hm("signals", "--home", str(newcomer)))
    assert not (newcomer / "hashmesh.db").exists()
