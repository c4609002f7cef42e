"""The transparency report counts sightings (issue 20): members' latest counted ``seen``
opinions, per signal and per label; a later verdict replaces a sighting, and a member's
opinion on its own signal does not count."""

from __future__ import annotations

from store_helpers import T0, key, make_federation

from node.audit.report import build_report, render_html
from protocol import Body, OpinionBody, Record, SignalBody, SigningKey, sign_record

FOUNDERS = [key(11), key(12), key(13)]
FED = make_federation(FOUNDERS, threshold=2)


def log(author: SigningKey, *bodies: Body) -> list[Record]:
    records: list[Record] = []
    for n, body in enumerate(bodies):
        prev = records[-1].id if records else None
        records.append(sign_record(author, fed=FED.id, seq=n + 1, prev=prev, ts=T0 + n, body=body))
    return records


def test_sightings_are_counted_per_signal_and_label() -> None:
    a, b, c = FOUNDERS
    ours = log(
        a,
        SignalBody("sha256", f"{1:064x}", ("entity:alpha",)),
        SignalBody("sha256", f"{2:064x}", ("entity:alpha", "incident:7")),
        SignalBody("sha256", f"{3:064x}", ()),
    )
    s1, s2, s3 = ours
    own = OpinionBody(s3.id, "seen")  # on its own signal: does not count
    ours.append(sign_record(a, fed=FED.id, seq=4, prev=s3.id, ts=T0 + 9, body=own))
    # b's dispute of s3 replaces its sighting of it
    theirs = log(b, OpinionBody(s1.id, "seen"), OpinionBody(s3.id, "seen"),
                 OpinionBody(s3.id, "dispute"))  # fmt: skip
    third = log(c, OpinionBody(s1.id, "seen"), OpinionBody(s2.id, "seen"))
    report = build_report([*ours, *theirs, *third], FED)
    sightings = report["sightings"]
    assert sightings == {
        "signals_sighted": 2,
        "sightings": 3,
        "labels": [
            {"label": "entity:alpha", "signals_sighted": 2, "sightings": 3},
            {"label": "incident:7", "signals_sighted": 1, "sightings": 1},
        ],
        "signals": [
            {"signal": s1.id, "labels": ["entity:alpha"], "sightings": 2,
             "members": sorted([b.public, c.public])},
            {"signal": s2.id, "labels": ["entity:alpha", "incident:7"], "sightings": 1,
             "members": [c.public]},
        ],
    }  # fmt: skip
    page = render_html(report)
    assert "<h2>Sightings</h2>" in page and "3 sightings" in page and "incident:7" in page
