"""Media at the edge, driven as an operator would: featureless images and hashes, per-file
match answers that fail closed, and the paged record export.

One federation of three founders for the module; only ``a`` runs (``hashmesh serve``). ``b``
and ``c`` never serve: records signed with their keys stand for what peers send, and ``b``'s
home is used for offline commands. CLI commands run as subprocesses (``python -m node``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import NodeProc, found_federation, hm
from images import blank_png, encode
from PIL import Image

from node.home import NodeHome
from protocol.bodies import SignalBody
from protocol.federation import Federation
from protocol.records import Record, sign_record

pytestmark = pytest.mark.slow

ZERO_PDQ = "0" * 64
NEAR_ZERO_PDQ = "0" * 59 + "fffff"  # 20 bits set: within 31 bits of all-zero
BOUNDARY = "hashmeshmediaboundary"
LABEL = "entity:test"


@dataclass
class Fed:
    federation: Federation
    a: NodeProc
    b: NodeProc
    c: NodeProc
    files: Path


def request(
    node: NodeProc, method: str, path: str, body: bytes | None = None, content_type: str = ""
) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {NodeHome(node.home).token()}"}
    if content_type:
        headers["Content-Type"] = content_type
    url = f"http://127.0.0.1:{node.local_port}{path}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, body, headers, method=method), timeout=30
        ) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


def form(*files: tuple[str, bytes]) -> tuple[bytes, str]:
    parts = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    )
    return parts + f"--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def match_json(node: NodeProc, hashes: list[dict[str, Any]]) -> dict[str, Any]:
    status, answer = request(
        node, "POST", "/v1/match", json.dumps({"hashes": hashes}).encode(), "application/json"
    )
    assert status == 200, answer[:300]
    return dict(json.loads(answer))


def signal_count(node: NodeProc) -> int:
    return len(node.api("GET", "/v1/signals?active=false&limit=10000")["signals"]) + len(
        node.api("GET", "/v1/signals?active=true&limit=10000")["signals"]
    )


def signed(fed: Fed, who: NodeProc, seq: int, prev: str | None, body: SignalBody) -> Record:
    key = NodeHome(who.home).key()
    return sign_record(key, fed=fed.federation.id, seq=seq, prev=prev, ts=1, body=body)


def import_records(node: NodeProc, *records: Record) -> dict[str, Any]:
    data = b"".join(r.canonical + b"\n" for r in records)
    status, answer = request(node, "POST", "/v1/import", data, "application/x-ndjson")
    assert status == 200, answer[:300]
    return dict(json.loads(answer))


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    return Image.fromarray(blocks.repeat(16, axis=0).repeat(16, axis=1))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    root = tmp_path_factory.mktemp("media")
    federation, (a, b, c) = found_federation(root, ["a", "b", "c"])
    files = root / "files"
    files.mkdir()
    (files / "black.png").write_bytes(blank_png(64, 64))
    (files / "good.png").write_bytes(encode(picture(1), "PNG"))
    (files / "notimage.jpg").write_bytes(b"this is not a picture\n" * 20)
    try:
        a.start()
        yield Fed(federation, a, b, c, files)
    finally:
        a.stop()


def test_add_refuses_featureless_images_and_values(fed: Fed) -> None:
    """A blank image is refused unless forced; a degenerate value is refused even then, as
    --hash and through the API; nothing is written, online (a) or offline (b)."""
    black, home_a, home_b = str(fed.files / "black.png"), str(fed.a.home), str(fed.b.home)
    before = signal_count(fed.a)
    cases = [
        ([black], "too featureless to list"),
        (["--allow-low-quality", black], "featureless"),
        (["--hash", f"pdq:{ZERO_PDQ}"], "featureless"),
        (["--hash", "pdq:" + "F" * 64], "featureless"),
        (["--hash", f"pdq:{NEAR_ZERO_PDQ}"], "featureless"),
        (["--hash", "md5:" + "ab" * 16, "--hash", f"pdq:{ZERO_PDQ}"], "featureless"),
    ]
    offline = [(home_b, args, message) for args, message in (cases[0], cases[-1])]
    for home, args, message in [(home_a, *case) for case in cases] + offline:
        result = hm("add", "--home", home, "--label", LABEL, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "--allow-low-quality" in hm("add", "--home", home_a, black).stderr
    hash_list = fed.files / "hashes.txt"
    hash_list.write_text(f"md5:{'cd' * 16}\npdq:{ZERO_PDQ}\n")
    result = hm("import", "--home", home_a, "--label", LABEL, str(hash_list))
    assert result.returncode == 2 and "hashes.txt:2" in result.stderr, result.stderr
    body, content_type = form(("black.png", blank_png(64, 64)))
    status, answer = request(fed.a, "POST", "/v1/signals", body, content_type)
    assert status == 422 and json.loads(answer)["title"] == "image too featureless"
    zero = json.dumps({"type": "pdq", "value": ZERO_PDQ}).encode()
    status, answer = request(fed.a, "POST", "/v1/signals", zero, "application/json")
    assert status == 400 and json.loads(answer)["error"] == "InvalidHashError", answer
    assert signal_count(fed.a) == before
    assert json.loads(hm("signals", "--home", home_b, "--all", "--json").stdout)["signals"] == []


def test_featureless_signal_from_a_peer_is_stored_but_never_matched(fed: Fed) -> None:
    """b's all-zero PDQ signal is a valid record (SPEC 5.3): a stores it, but a blank image
    and featureless hashes are reported as too featureless, never matched against it."""
    record = signed(fed, fed.b, 1, None, SignalBody("pdq", ZERO_PDQ, (LABEL,)))
    assert import_records(fed.a, record)["counts"]["accepted"] == 1
    assert fed.a.api("GET", f"/v1/signals/{record.id}")["status"] == "active"

    body, content_type = form(("black.png", blank_png(64, 64)))
    status, answer = request(fed.a, "POST", "/v1/match", body, content_type)
    assert status == 200, answer[:300]
    image = json.loads(answer)
    assert image["matched"] is False and image["results"][0]["featureless"] is True
    pdq = image["results"][0]["results"][0]
    assert pdq["query"]["type"] == "pdq" and pdq["featureless"] and pdq["hits"] == []
    assert "min_pdq_quality" in pdq["reason"]

    answer = match_json(fed.a, [{"type": "pdq", "value": v} for v in (ZERO_PDQ, NEAR_ZERO_PDQ)])
    assert [(r["featureless"], r["matched"]) for r in answer["results"]] == [(True, False)] * 2
    assert not answer["matched"]
    good = encode(picture(2), "PNG")
    status, hashed = request(fed.a, "POST", "/v1/hash", good, "image/png")
    pdq_value = json.loads(hashed)["hashes"]["pdq"]
    low = match_json(fed.a, [{"type": "pdq", "value": pdq_value, "quality": 10}])["results"][0]
    assert low["featureless"] and "quality 10" in low["reason"]

    result = hm("match", "--home", str(fed.a.home), str(fed.files / "black.png"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "too featureless to match" in result.stdout
    result = hm("match", "--home", str(fed.a.home), "--hash", f"pdq:{ZERO_PDQ}", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["results"][0]["featureless"] is True


def test_match_reports_each_file_and_fails_closed(fed: Fed) -> None:
    """`match good.png notimage.jpg`: good.png is matched, notimage.jpg is an error for that
    file, and the exit status is 2 (an unreadable file is not a clean one)."""
    good, bad = str(fed.files / "good.png"), str(fed.files / "notimage.jpg")
    added = hm("add", "--home", str(fed.a.home), "--label", LABEL, good, "--json")
    assert added.returncode == 0, added.stderr
    result = hm("match", "--home", str(fed.a.home), good, bad)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{good}: 2 match(es)"
    assert any(line.startswith(f"{bad}: error: ") for line in lines), result.stdout
    as_json = json.loads(hm("match", "--home", str(fed.a.home), good, bad, "--json").stdout)
    assert as_json["errors"] == 1 and as_json["matched"] is True
    outcome = [("error" in r, r["matched"]) for r in as_json["results"]]
    assert outcome == [(False, True), (True, False)]
    assert hm("match", "--home", str(fed.a.home), good).returncode == 0

    body, content_type = form(("good.png", encode(picture(1), "PNG")), ("bad.jpg", b"x" * 99))
    status, answer = request(fed.a, "POST", "/v1/match", body, content_type)
    problem = json.loads(answer)
    assert status == 422 and "matched" not in problem, answer[:300]
    assert [r["matched"] for r in problem["results"]] == [True, False]


def test_record_export_is_paged(fed: Fed) -> None:
    """GET /v1/records honours after_author, after_seq and limit; a page never splits a seq,
    so c's fork (two records at seq 1) travels in one page."""
    # b's chain, so the export has pages before and after the fork; its first record is the one
    # another test imports (signatures are deterministic), so the order of tests does not matter
    chain = [signed(fed, fed.b, 1, None, SignalBody("pdq", ZERO_PDQ, (LABEL,)))]
    for n in range(2, 4):
        chain.append(signed(fed, fed.b, n, chain[-1].id, SignalBody("md5", f"b{n}" * 16, (LABEL,))))
    first = signed(fed, fed.c, 1, None, SignalBody("md5", "c1" * 16, (LABEL,)))
    twin = signed(fed, fed.c, 1, None, SignalBody("md5", "c2" * 16, (LABEL,)))
    import_records(fed.a, *chain, first, twin)
    status, everything = request(fed.a, "GET", "/v1/records")
    assert status == 200
    lines = everything.splitlines()
    assert {first.canonical, twin.canonical} <= set(lines) and len(lines) >= 6

    pages: list[list[bytes]] = []
    query = "limit=1"
    while True:
        status, answer = request(fed.a, "GET", f"/v1/records?{query}")
        assert status == 200, answer[:300]
        page = answer.splitlines()
        if not page:
            break
        pages.append(page)
        last = json.loads(page[-1])
        query = f"limit=1&after_author={last['author']}&after_seq={last['seq']}"
    assert [line for page in pages for line in page] == lines
    assert sorted(map(len, pages)) == [1] * (len(pages) - 1) + [2]
    assert {first.canonical, twin.canonical} in [set(page) for page in pages]
    status, two = request(fed.a, "GET", "/v1/records?limit=2")
    assert two.splitlines() == lines[:2]
