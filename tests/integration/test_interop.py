"""The bridges to tools members already run, against a real node: lookup by hash in HMA's
shape (``GET /v1/lookup``).

One federation of two founders for the module; only ``a`` runs (``hashmesh serve``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import NodeProc, found_federation

from node.home import NodeHome
from protocol.federation import Federation

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
    federation, (a, b) = found_federation(root, ["a", "b"])
    try:
        a.start()
        yield Fed(federation, a, b, root)
    finally:
        a.stop()


def add(node: NodeProc, kind: str, value: str, labels: tuple[str, ...] = (LABEL,)) -> str:
    answer = node.api("POST", "/v1/signals", {"type": kind, "value": value, "labels": labels})
    return str(answer["signals"][0]["id"] if "signals" in answer else answer["id"])


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
