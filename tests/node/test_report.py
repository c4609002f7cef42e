"""The transparency report (issue 7): exact numbers on a hand-made history, byte-identical
JSON across runs, machines (hash seeds) and an export/import round trip, and the HTML charts."""

from __future__ import annotations

import datetime
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from store_helpers import T0, key, make_federation

from node.audit.engine import load_records
from node.audit.report import (
    build_report,
    busiest,
    civil_date,
    month_of,
    nearest_rank,
    rate,
    render_html,
    report_bytes,
)
from node.audit.sources import open_source
from node.home import init_home
from node.store.store import Store
from protocol import (
    Body,
    OpinionBody,
    Record,
    RetractBody,
    SignalBody,
    SigningKey,
    VoteBody,
    sign_record,
)

REPO = Path(__file__).resolve().parents[2]
FOUNDERS = [key(1), key(2), key(3)]
FED = make_federation(FOUNDERS, threshold=2)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def log(
    author: SigningKey, *items: tuple[int, Body], chain: list[Record] | None = None
) -> list[Record]:
    """author's chain of (ts, body) items, continuing chain if given."""
    records = list(chain or [])
    for ts, body in items:
        prev = records[-1].id if records else None
        records.append(
            sign_record(author, fed=FED.id, seq=len(records) + 1, prev=prev, ts=ts, body=body)
        )
    return records


def signal(n: int, *labels: str, expires: int | None = None) -> SignalBody:
    return SignalBody("sha256", f"{n:064x}", labels, None, expires)


def known_history() -> list[Record]:
    """a signals s1..s4 (s4 expires), retracts s2 in a later month; b and c dispute s1; c
    disputes s3 and then confirms it, as b does."""
    a, b, c = FOUNDERS
    s1, s2, s3, s4 = log(
        a,
        (T0, signal(1, "entity:alpha")),
        (T0 + 1, signal(2, "entity:alpha", "incident:7")),
        (T0 + 2, signal(3)),
        (T0 + 3, signal(4, expires=T0 + 500)),
    )
    ours = log(a, (T0 + 40 * DAY_MS, RetractBody(s2.id)), chain=[s1, s2, s3, s4])
    theirs = log(
        b,
        (s1.ts + 2 * HOUR_MS, OpinionBody(s1.id, "dispute")),
        (T0 + 10, OpinionBody(s3.id, "confirm")),
    )
    others = log(
        c,
        (s1.ts + 5 * HOUR_MS, OpinionBody(s1.id, "dispute")),
        (s3.ts + HOUR_MS, OpinionBody(s3.id, "dispute")),
        (s3.ts + 3 * HOUR_MS, OpinionBody(s3.id, "confirm")),
    )
    return ours + theirs + others


def test_numbers_on_a_known_history() -> None:
    report = json.loads(report_bytes(build_report(known_history(), FED)))
    a, _, c = (k.public for k in FOUNDERS)
    members = {m["identity"]: m for m in report["members"]}
    metrics = ("signals_added", "retracted", "expired", "disputed", "confirmed")
    assert [members[a][k] for k in metrics] == [4, 1, 1, 1, 1]
    assert (members[c]["disputes_given"], members[c]["confirms_given"]) == (1, 1)  # latest only
    assert report["rates"]["retraction"] == {"numerator": 1, "denominator": 4, "ppm": 250_000}
    ttd = report["time_to_first_dispute_ms"]  # s3's first dispute counts though it was revised
    assert (ttd["signals"], ttd["median"], ttd["p90"]) == (2, HOUR_MS, 2 * HOUR_MS)
    labels = {r["label"]: r for r in report["labels"]}
    assert sorted(labels) == ["(unlabelled)", "entity:alpha", "incident:7"]
    assert (labels["entity:alpha"]["retracted"], labels["entity:alpha"]["disputed"]) == (1, 1)
    assert (labels["(unlabelled)"]["signals_added"], labels["(unlabelled)"]["expired"]) == (2, 1)
    months = {m["month"]: m for m in report["months"]}
    assert sorted(months) == ["2025-11", "2026-01"]
    assert months["2025-11"]["added_by_member"] == {a: 4}
    assert (months["2026-01"]["retracted"], months["2026-01"]["signals_added"]) == (1, 0)


def test_helpers_are_exact_integers() -> None:
    assert month_of(0) == "1970-01" and month_of(T0) == "2025-11"
    assert month_of(1_767_225_599_999) == "2025-12" and month_of(1_767_225_600_000) == "2026-01"
    assert civil_date(951_782_400_000) == (2000, 2, 29) and civil_date(951_868_800_000) == (
        2000,
        3,
        1,
    )
    for ts in range(0, 253_402_300_800_000, 7_777_777_777_777):  # what datetime can show
        when = datetime.datetime.fromtimestamp(ts / 1000, datetime.UTC)
        assert civil_date(ts) == (when.year, when.month, when.day)
    assert month_of(2**53 - 1) == "287396-10"  # ts is advisory: any value up to 2^53 - 1
    assert nearest_rank([], 50) is None
    assert [nearest_rank(list(range(1, 11)), p) for p in (50, 90, 100)] == [5, 9, 10]
    assert rate(1, 3) == {"numerator": 1, "denominator": 3, "ppm": 333_333}
    assert rate(0, 0)["ppm"] is None
    rows = [{"n": n % 5} for n in range(12)]
    assert busiest(rows, 4, ("n",)) == [{"n": 3}, {"n": 4}, {"n": 3}, {"n": 4}]  # in order
    assert busiest(rows[:3], 4, ("n",)) == rows[:3]


def generated_history(rng: random.Random, steps: int) -> list[Record]:
    """Founders and an admitted member signing signals, retractions and opinions over four
    months, with one equivocation (a fork) and one non-member's records."""
    keys = [*FOUNDERS, key(4), key(5)]  # key(4) is admitted by two votes; key(5) never is
    logs: dict[str, list[Record]] = {k.public: [] for k in keys}
    signals: list[Record] = []
    for k in FOUNDERS[:2]:
        logs[k.public] = log(k, (T0, VoteBody("admit", key(4).public, name="late", role="member")))
    for step in range(steps):
        k = rng.choice(keys)
        own = [r for r in logs[k.public] if isinstance(r.body, SignalBody)]
        roll, ts = rng.random(), T0 + step * 3 * HOUR_MS + rng.randrange(HOUR_MS)
        if roll < 0.5 or not signals:
            labels = sorted(rng.sample(LABELS, rng.randint(0, 2)))
            expires = rng.choice([None, None, ts + rng.randrange(60 * DAY_MS)])
            body: Body = signal(rng.randrange(10**9), *labels, expires=expires)
        elif roll < 0.65 and own:
            body = RetractBody(rng.choice(own).id)
        else:
            body = OpinionBody(rng.choice(signals).id, rng.choice(VERDICTS))
        logs[k.public] = log(k, (ts, body), chain=logs[k.public])
        if isinstance(body, SignalBody):
            signals.append(logs[k.public][-1])
    victim = logs[FOUNDERS[2].public]
    fork = sign_record(FOUNDERS[2], fed=FED.id, seq=victim[5].seq, prev=victim[5].prev,
                       ts=victim[5].ts, body=signal(-1 % 10**9))  # fmt: skip
    return [r for chain in logs.values() for r in chain] + [fork]


LABELS = ("behaviour:glorification", "entity:alpha", "entity:beta", "incident:7")
VERDICTS = ("confirm", "dispute", "dispute", "seen")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Record]]:
    """A generated history merged into a real store (which refuses the non-member)."""
    records = generated_history(random.Random(11), 900)
    path = tmp_path_factory.mktemp("report") / "node.db"
    with Store.open(path, FED, create=True) as store:
        store.merge([r.canonical for r in records], received_ms=T0)
    return path, records


def report_of(path: Path) -> bytes:
    snap = open_source(str(path), federation=FED)
    try:
        return report_bytes(build_report(load_records(snap).records, FED))
    finally:
        snap.close()


def hashmesh(*args: str | Path, seed: str = "0") -> subprocess.CompletedProcess[bytes]:
    env = os.environ | {"PYTHONHASHSEED": seed}
    command = [sys.executable, "-m", "node", *map(str, args)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=60, check=False)


def test_json_is_byte_identical_across_runs_and_an_export_import_round_trip(
    generated: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    path, _ = generated
    first, second = (
        hashmesh("report", "--db", path, "--json", seed="1"),
        hashmesh("report", "--db", path, "--json", seed="2"),
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout == report_of(path) + b"\n"
    report = json.loads(first.stdout)
    assert report["totals"]["signals_by_status"]["retracted"] > 0 and report["forks"]
    with Store.open(path, FED, readonly=True) as store:
        exported = list(store.all_records())
    export = tmp_path / "records.jsonl"
    export.write_bytes(b"".join(r + b"\n" for r in exported))
    with Store.open(tmp_path / "fresh.db", FED, create=True) as fresh:
        fresh.merge(exported, received_ms=T0 + 1)
    assert report_of(tmp_path / "fresh.db") == first.stdout[:-1]
    assert report_of(export) == first.stdout[:-1]
    home = init_home(tmp_path / "home", name="imported", listen="127.0.0.1:9")
    home.install_federation(FED)
    shutil.copy(tmp_path / "fresh.db", home.db_path)
    assert hashmesh("report", "--home", home.path, "--json").stdout == first.stdout


def test_html_report_contains_the_charts(
    generated: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    path, _ = generated
    out = tmp_path / "report.html"
    result = hashmesh("report", "--db", path, "--out", out)
    assert result.returncode == 0, result.stderr
    page = out.read_text("utf-8")
    assert page.count("<svg") == 3
    titles = ("Signals contributed per month", "Disputed and retracted", "Per member: signals")
    assert all(title in page for title in titles)
    report = json.loads(report_of(path))
    assert report["records_digest"] in page
    assert render_html(report) == page  # the page is deterministic too


def test_report_leaves_out_records_that_do_not_verify(
    generated: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    _, records = generated
    export = tmp_path / "records.jsonl"
    export.write_bytes(b"".join(r.canonical + b"\n" for r in records) + b'{"not":"a record"}\n')
    genesis = tmp_path / "federation.json"
    genesis.write_bytes(FED.to_bytes())
    result = hashmesh("report", "--db", export, "--federation", genesis, "--json")
    assert result.returncode == 0, result.stderr
    assert b"1 stored record(s) failed verification" in result.stderr
    assert result.stdout == report_bytes(build_report(records, FED)) + b"\n"
