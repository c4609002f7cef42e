"""The bridges to tools members already run, against a real node: lookup by hash in HMA's
shape (``GET /v1/lookup``) and the STIX 2.1 export.

One federation of two founders for the module; only ``a`` runs (``hashmesh serve``).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import NodeProc, found_federation, hm

from node.home import NodeHome
from protocol.bodies import Body, OpinionBody, RetractBody, SignalBody
from protocol.federation import Federation
from protocol.records import Record, decode_record, sign_record

pytestmark = pytest.mark.slow

PDQ = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22"
NEAR = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b2d"  # 4 bits off
MD5 = "9e107d9d372bb6826bd81d3542a419d6"
LABEL = "entity:test"


@dataclass
class Fed:
    federation: Federation
    a: NodeProc
    b: NodeProc
    c: NodeProc  # its records stand for a third member's (the pytx test's)
    root: Path


def get(node: NodeProc, path: str, **params: str) -> tuple[int, dict[str, Any]]:
    query = urllib.parse.urlencode(params)
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.local_port}{path}?{query}",
        headers={"Authorization": f"Bearer {NodeHome(node.home).token()}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    root = tmp_path_factory.mktemp("interop")
    federation, (a, b, c) = found_federation(root, ["a", "b", "c"])
    try:
        a.start()
        yield Fed(federation, a, b, c, root)
    finally:
        a.stop()


def add(node: NodeProc, kind: str, value: str, labels: tuple[str, ...] = (LABEL,)) -> str:
    answer = node.api("POST", "/v1/signals", {"type": kind, "value": value, "labels": labels})
    return str(answer["signals"][0]["id"] if "signals" in answer else answer["id"])


def listed(node: NodeProc, kind: str, value: str) -> str:
    """The node member's active signal of this hash, added unless an earlier test on this
    worker did (the local API signs a hash again each time it is posted)."""
    status, found = get(node, "/v1/lookup", signal_type=kind, signal=value, radius="0")
    assert status == 200, found
    mine = [hit["id"] for hit in found["hits"] if hit["author"] == node.key]
    return str(mine[0]) if mine else add(node, kind, value)


def test_lookup_answers_a_hash_with_provenance_as_match_does(fed: Fed) -> None:
    signal = add(fed.a, "pdq", PDQ)
    add(fed.a, "md5", MD5)
    status, near = get(fed.a, "/v1/lookup", signal_type="pdq", signal=NEAR.upper())
    assert status == 200, near
    assert near["matched"] is True and near["signal_type"] == "pdq"
    (hit,) = near["hits"]
    assert hit["id"] == signal and hit["distance"] == 4 and LABEL in hit["labels"]
    match = fed.a.api("POST", "/v1/match", {"type": "pdq", "value": NEAR})["results"][0]
    assert {k: v for k, v in near.items() if k != "signal_type"} == match

    status, exact = get(fed.a, "/v1/lookup", signal_type="video_md5", signal=MD5)
    assert status == 200 and exact["matched"] and exact["signal_type"] == "video_md5"
    status, tight = get(fed.a, "/v1/lookup", signal_type="pdq", signal=NEAR, radius="2")
    assert status == 200 and tight["matched"] is False and tight["hits"] == []


@pytest.mark.parametrize(
    ("params", "title"),
    [
        ({"signal": PDQ}, "missing query parameter signal_type"),
        ({"signal_type": "pdq"}, "missing query parameter signal"),
        ({"signal_type": "bogus", "signal": PDQ}, "invalid query parameter signal_type"),
        ({"signal_type": "pdq", "signal": "xyz"}, "invalid hash"),
        ({"signal_type": "pdq", "signal": PDQ, "radius": "-1"}, "invalid query parameter radius"),
        ({"signal_type": "pdq", "signal": PDQ, "colour": "red"}, "invalid query parameter colour"),
    ],
)
def test_lookup_refuses_bad_input_by_name(fed: Fed, params: dict[str, str], title: str) -> None:
    status, problem = get(fed.a, "/v1/lookup", **params)
    assert status == 400, problem
    assert problem["title"].startswith(title), problem


# ---- STIX 2.1 export ------------------------------------------------------------------------


def import_ndjson(node: NodeProc, data: bytes) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.local_port}/v1/import", data, method="POST",
        headers={"Authorization": f"Bearer {NodeHome(node.home).token()}",
                 "Content-Type": "application/x-ndjson"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:
        return dict(json.loads(answer.read()))


def signed(fed: Fed, who: NodeProc, seq: int, prev: str | None, body: Body) -> Record:
    return sign_record(NodeHome(who.home).key(), fed=fed.federation.id, seq=seq, prev=prev,
                       ts=1_700_000_000_000 + seq, body=body)  # fmt: skip


def test_stix_export_parses_and_round_trips_ids_labels_and_opinions(fed: Fed) -> None:
    stix2 = pytest.importorskip("stix2", reason="the stix extra (stix2) is not installed")
    listed(fed.a, "pdq", PDQ)  # whichever tests ran before on this worker
    url = add(fed.a, "url", "https://example.org/watch?v=1")
    gone = add(fed.a, "sha256", "ab" * 32, labels=(LABEL, "behaviour:graphic-violence"))
    fed.a.api("POST", f"/v1/signals/{gone}/retract", {"reason": "mistake"})
    first = signed(fed, fed.b, 1, None, OpinionBody(url, "dispute", (LABEL,), "a news report"))
    second = signed(fed, fed.b, 2, first.id, OpinionBody(gone, "seen", (), "on our platform"))
    data = b"".join(r.canonical + b"\n" for r in (first, second))
    imported = import_ndjson(fed.a, data)
    assert imported["counts"]["accepted"] == 2, imported

    out = fed.root / "bundle.json"
    result = hm("export", "--home", str(fed.a.home), "--format", "stix", "-o", str(out))
    assert result.returncode == 0, result.stderr
    bundle = stix2.parse(out.read_text(), allow_custom=False)
    by_type: dict[str, list[Any]] = {}
    for obj in bundle.objects:
        by_type.setdefault(obj.type, []).append(obj)
    signals = fed.a.api("GET", "/v1/signals?active=false&limit=1000")["signals"]
    signals += fed.a.api("GET", "/v1/signals?active=true&limit=1000")["signals"]
    indicators = {i.external_references[0].external_id: i for i in by_type["indicator"]}
    assert set(indicators) == {s["id"] for s in signals}
    for s in signals:
        indicator = indicators[s["id"]]
        assert list(indicator.get("labels", [])) == s["labels"]
        assert indicator.revoked == (s["status"] == "retracted")
        assert s["value"] in indicator.pattern
    assert (
        "file:hashes.x_pdq"
        in indicators[next(s["id"] for s in signals if s["type"] == "pdq")].pattern
    )
    assert {i.name for i in by_type["identity"]} == {"a", "b", "c"}
    (opinion,) = by_type["opinion"]
    assert opinion.opinion == "disagree" and opinion.explanation == "a news report"
    assert opinion.object_refs == [indicators[url].id]
    assert opinion.external_references[0].external_id == first.id
    (sighting,) = by_type["sighting"]
    assert (
        sighting.sighting_of_ref == indicators[gone].id
        and sighting.description == "on our platform"
    )

    again = fed.root / "again.json"
    assert (
        hm("export", "--home", str(fed.a.home), "--format", "stix", "-o", str(again)).returncode
        == 0
    )
    assert {o.id for o in stix2.parse(again.read_text()).objects} == {o.id for o in bundle.objects}


# ---- python-threatexchange: the exchange driven by pytx's own fetch loop --------------------


class PytxState:
    """What HMA's fetcher keeps for one collaboration: the records and the checkpoint, both
    pickled between runs (as HMA and pytx's CLI store them)."""

    def __init__(self) -> None:
        self.records: bytes = pickle.dumps({})
        self.checkpoint: bytes | None = None

    def fetch(self, api: Any, signal_types: list[Any], abandon_after: int | None = None) -> int:
        """One fetch run: pytx's loop (stale checkpoint clears, deltas merged with
        naive_fetch_merge, the progress time never goes back); the deltas merged."""
        records = pickle.loads(self.records)
        checkpoint = None if self.checkpoint is None else pickle.loads(self.checkpoint)
        if checkpoint is not None and checkpoint.is_stale():
            records, checkpoint = {}, None
        merged = 0
        for delta in api.fetch_iter(signal_types, checkpoint):
            previous = None if checkpoint is None else checkpoint.get_progress_timestamp()
            now = delta.checkpoint.get_progress_timestamp()
            assert previous is None or now is None or previous <= now  # HMA asserts this
            api.naive_fetch_merge(records, delta.updates)
            checkpoint = delta.checkpoint
            self.records, self.checkpoint = pickle.dumps(records), pickle.dumps(checkpoint)
            merged += 1
            if abandon_after is not None and merged >= abandon_after:
                break  # HMA abandons a fetch after 4 minutes: the checkpoint must resume
        return merged

    def held(self) -> dict[str, Any]:
        return dict(pickle.loads(self.records))


def active_ids(node: NodeProc, kinds: tuple[str, ...] = ("pdq", "md5")) -> set[str]:
    """The active signals of the types the pytx test fetches (PdqSignal, VideoMD5Signal)."""
    signals = node.api("GET", "/v1/signals?active=true&limit=10000")["signals"]
    return {s["id"] for s in signals if s["type"] in kinds}


def test_pytx_fetch_follows_the_node_resumes_and_restarts_on_a_new_epoch(fed: Fed) -> None:
    pytx = pytest.importorskip(
        "node.interop.pytx_exchange", reason="the threatexchange extra is absent"
    )
    from threatexchange.signal_type.md5 import VideoMD5Signal
    from threatexchange.signal_type.pdq.signal import PdqSignal

    types = [PdqSignal, VideoMD5Signal]
    collab = pytx.HashmeshCollabConfig(name="fed", node_url=f"http://127.0.0.1:{fed.a.local_port}")
    credentials = pytx.HashmeshCredentials(NodeHome(fed.a.home).token())
    api = pytx.HashmeshSignalExchangeAPI.for_collab(collab, credentials)
    listed(fed.a, "pdq", PDQ)  # whichever tests ran before on this worker
    many = [add(fed.a, "md5", f"{n:032x}") for n in range(1, 1_200)]  # more than one page
    store = PytxState()
    assert store.fetch(api, types, abandon_after=1) == 1  # abandoned after one page
    assert 0 < len(store.held()) < len(active_ids(fed.a))
    store.fetch(api, types)  # resumes from the saved checkpoint
    assert set(store.held()) == active_ids(fed.a)
    record = store.held()[many[0]]
    assert record.signal_type == "video_md5" and record.is_mine and record.labels == [LABEL]

    fed.a.api("POST", f"/v1/signals/{many[0]}/retract", {"reason": "mistake"})
    disputed = many[1]
    dispute = signed(fed, fed.c, 1, None, OpinionBody(disputed, "dispute", (), "not ours"))
    also = signed(fed, fed.c, 2, dispute.id, SignalBody("pdq", PDQ, ("entity:other",)))
    imported = import_ndjson(fed.a, dispute.canonical + b"\n" + also.canonical + b"\n")
    assert imported["counts"]["accepted"] == 2, imported
    expires = int(time.time() * 1000) + 1_500
    body = {"type": "md5", "value": "c" * 32, "labels": [LABEL], "expires": expires}
    soon = fed.a.api("POST", "/v1/signals", body)["id"]
    store.fetch(api, types)
    assert soon in store.held() and many[0] not in store.held()
    assert store.held()[disputed].disputes == 1
    opinions = store.held()[disputed].get_as_opinions()
    assert [o.category.name for o in opinions] == ["POSITIVE_CLASS", "NEGATIVE_CLASS"]
    time.sleep(1.6)
    store.fetch(api, types)  # the expiry is a delete
    assert soon not in store.held() and set(store.held()) == active_ids(fed.a)

    strict = pytx.HashmeshSignalExchangeAPI.for_collab(
        pytx.HashmeshCollabConfig(name="strict", node_url=collab.node_url, drop_disputed=True),
        credentials,
    )
    filtered = PytxState()
    filtered.fetch(strict, types)
    assert set(filtered.held()) == active_ids(fed.a) - {disputed}

    # pytx's own matcher: its PDQ index, built from the fetched records, finds the image
    converted = api.naive_convert_to_signal_type(types, collab, store.held())
    assert converted[PdqSignal] and PDQ in converted[PdqSignal]
    index = PdqSignal.get_index_cls().build(converted[PdqSignal].items())
    (match,) = index.query(NEAR)  # one entry a hash: a's and c's signals of PDQ in one
    held = {match.metadata.signal_id, *(other.signal_id for other in match.metadata.also)}
    assert held == {k for k, v in store.held().items() if v.value == PDQ} and also.id in held
    assert match.metadata.get_as_aggregate_opinion().tags == {LABEL, "entity:other"}

    # the node's database is replaced (a new epoch): the checkpoint turns stale, then a
    # fresh fetch holds exactly the new database's list
    stale = PytxState()
    stale.records, stale.checkpoint = store.records, store.checkpoint
    checkpoint = pickle.loads(stale.checkpoint)
    checkpoint.epoch = "0" * 16
    stale.checkpoint = pickle.dumps(checkpoint)
    stale.fetch(api, types)
    assert pickle.loads(stale.checkpoint).is_stale()
    stale.fetch(api, types)
    assert set(stale.held()) == active_ids(fed.a)


def noise_png(path: Path, seed: int) -> Path:
    """A photo-like PNG with plenty of structure (PDQ quality 100)."""
    import numpy as np
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((32, 32, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).resize((256, 256)).save(path)
    return path


def test_the_threatexchange_cli_fetches_the_node_and_matches_a_listed_photo(
    fed: Fed, tmp_path: Path
) -> None:
    """pytx's own CLI, the extension registered as its docs say: fetch, its dataset, and
    ``threatexchange match photo`` on an image the federation lists (hashed by hashmesh).

    The collaboration ``photos`` keeps one label, so pytx's PDQ index holds exactly one hash:
    the case faiss pickles unreadably (ThreatExchange #1318) unless node.interop.pytx_exchange mends
    it; then ``fed`` (everything) is fetched beside it."""
    pytest.importorskip("node.interop.pytx_exchange", reason="the threatexchange extra is absent")
    from node.media.hashing import hash_image

    cli = Path(sys.executable).parent / "threatexchange"
    env = dict(os.environ, HOME=str(tmp_path), HASHMESH_API_TOKEN=NodeHome(fed.a.home).token())

    def tx(*args: str) -> str:
        done = subprocess.run([str(cli), *args], env=env, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout + done.stderr

    def counts() -> dict[str, str]:
        return dict(line.split(": ") for line in tx("dataset", "-S").split("\n") if ": " in line)

    image, unrelated = noise_png(tmp_path / "listed.png", 1), noise_png(tmp_path / "other.png", 2)
    listed(fed.a, "pdq", PDQ)
    photo = add(fed.a, "pdq", hash_image(image.read_bytes()).pdq, labels=("entity:cli-photo",))
    url = f"http://127.0.0.1:{fed.a.local_port}"
    tx("config", "extensions", "add", "node.interop.pytx_exchange")
    tx("config", "collab", "edit", "hashmesh", "photos", "--create", "--node-url", url,
       "--labels", "entity:cli-photo")  # fmt: skip
    assert "Up to date" in tx("fetch")
    assert counts() == {"pdq": "1"}

    matched = [line for line in tx("match", "photo", str(image)).splitlines() if line]
    assert matched == ["pdq 0 (photos) POSITIVE_CLASS entity:cli-photo"]
    assert [line for line in tx("match", "photo", str(unrelated)).splitlines() if line] == []

    tx("config", "collab", "edit", "hashmesh", "fed", "--create", "--node-url", url)
    assert "Up to date" in tx("fetch")
    signals = fed.a.api("GET", "/v1/signals?active=true&limit=10000")["signals"]
    assert photo in {s["id"] for s in signals}
    fetched = counts()
    assert int(fetched["pdq"]) == len({s["value"] for s in signals if s["type"] == "pdq"})
    assert int(fetched.get("video_md5", "0")) == len(
        {s["value"] for s in signals if s["type"] == "md5"}
    )  # pytx indexes by hash value


def test_pytx_pdq_index_matches_after_pickling_as_it_did_before(tmp_path: Path) -> None:
    """pytx's PDQ index pickled (as its CLI and HMA store it) and loaded again answers as
    the index it was. faiss alone writes unreadably a hash map with a bucket that holds all
    of a power of two of hashes (one hash; 2 or 4 near-identical ones); every other index
    keeps faiss's bytes."""
    pytest.importorskip("node.interop.pytx_exchange", reason="the threatexchange extra is absent")
    import faiss
    from threatexchange.signal_type.pdq.pdq_index import PDQIndex

    near = [PDQ, NEAR, PDQ[:-2] + "00", PDQ[:-4] + "0000", "00" * 16 + PDQ[32:]]
    far = "0f" * 32
    cases = [([PDQ], True), (near[:2], True), (near[:3], False), (near[:4], True),
             ([*near[:3], far], False), ([*near, far], False)]  # fmt: skip
    for entries, mended in cases:
        index = PDQIndex.build([(h, i) for i, h in enumerate(entries)])
        path = tmp_path / "pdq.index"
        with path.open("wb") as out:
            index.serialize(out)
        with path.open("rb") as back:
            loaded = PDQIndex.deserialize(back)
        for query in (PDQ, NEAR, far):
            want = sorted((m.metadata, m.similarity_info.distance) for m in index.query(query))
            got = sorted((m.metadata, m.similarity_info.distance) for m in loaded.query(query))
            assert got == want, (len(entries), query)
        assert [m.metadata for m in loaded.query(PDQ)]  # never vacuous: PDQ is in every one
        stock = bytes(faiss.serialize_index_binary(index.index.faiss_index))
        assert (bytes(index.index.__getstate__()) != stock) == mended, len(entries)


def test_a_follower_of_the_feed_ends_at_the_active_list_under_concurrent_merges(fed: Fed) -> None:
    """One thread imports c's signals and retractions in batches while the reader pages
    the feed from its cursor; once the writes stop and it catches up, it holds exactly the
    node's active list."""
    c_key = NodeHome(fed.c.home).key()
    records = []
    heads = [r for r in _records(fed.a) if r["author"] == c_key.public]
    seq = max((r["seq"] for r in heads), default=0)
    prev = next((r["id"] for r in heads if r["seq"] == seq), None)
    ids = []
    for n in range(300):
        seq += 1
        if n % 5 == 4:  # retract one of the earlier ones
            body: Body = RetractBody(ids[-3], "mistake")
        else:
            body = SignalBody("md5", f"{7_000_000 + n:032x}", (LABEL,))
        record = sign_record(c_key, fed=fed.federation.id, seq=seq, prev=prev,
                             ts=1_700_000_000_000 + seq, body=body)  # fmt: skip
        ids.append(record.id)
        records.append(record)
        prev = record.id

    def write() -> None:
        for i in range(0, len(records), 20):
            batch = b"".join(r.canonical + b"\n" for r in records[i : i + 20])
            assert import_ndjson(fed.a, batch)["counts"]["accepted"] == len(records[i : i + 20])

    held: dict[str, Any] = {}
    cursor = 0

    def follow() -> int:
        nonlocal cursor
        seen = 0
        while True:
            status, page = get(fed.a, "/v1/changes", after=str(cursor), limit="50")
            assert status == 200, page
            for change in page["changes"]:
                signal = change["signal"]
                if signal is not None and signal["status"] == "active":
                    held[change["id"]] = signal
                else:
                    held.pop(change["id"], None)
                cursor = change["cursor"]
                seen += 1
            if not page["changes"]:
                return seen

    writer = threading.Thread(target=write)
    writer.start()
    while writer.is_alive():
        follow()
    writer.join()
    follow()
    active = fed.a.api("GET", "/v1/signals?active=true&limit=10000")["signals"]
    assert set(held) == {s["id"] for s in active}
    assert all(held[s["id"]]["tallies"] == s["tallies"] for s in active)


def _records(node: NodeProc) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.local_port}/v1/records",
        headers={"Authorization": f"Bearer {NodeHome(node.home).token()}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        lines = answer.read().splitlines()
    out = []
    for line in lines:
        record = json.loads(line)
        record["id"] = decode_record(line, record["fed"]).id
        out.append(record)
    return out
