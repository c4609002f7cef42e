"""The transparency report: what the federation's records say, per member, label and month.

``build_report(records, federation)`` is a pure function of the record *set*: it folds the
records with ``protocol.fold_state`` and counts, from the counted records only,

- signals added, retracted, expired, disputed and confirmed -- per member identity, per label
  (``(unlabelled)`` for signals without labels) and per UTC month of the record's ``ts``;
  "disputed"/"confirmed" means at least one member's *latest* counted opinion on the signal
  is that verdict (SPEC 8.3: a member's opinion on its own signal does not count); a signal
  is counted under the month of its own ``ts``, its retraction under the month of the retract
  record, its dispute under the month of the earliest such latest opinion;
- opinions given per member (latest verdicts);
- the time from a signal to its first dispute (the earliest counted ``dispute`` opinion on it,
  whoever gave it and whatever they think now, but never its own contributor's: SPEC 8.3):
  median and p90 by nearest rank, in ms of
  *log time* -- record timestamps are advisory (SPEC 12.5), set by their authors and never
  checked against a clock, so these durations are what the authors claim;
- retraction, dispute and confirmation rates as numerator/denominator and integer
  parts-per-million;
- sightings (``sightings``): members' latest counted ``seen`` opinions -- a member saying the
  hash matched content on its platform (hashmesh nodes can publish them on a first match,
  node.moderation.sightings) -- in total, per label (signals sighted, sightings) and for the
  ``MAX_SIGHTED_SIGNALS`` signals sighted by the most members (then by id).

Expiry is evaluated at the newest counted record's ``ts`` ("as of" in log time), never at the
wall clock. The JSON (``report_bytes``) is canonical (RFC 8785), has no floats and no clock
reading, and everything in it is sorted, so the same records give byte-identical JSON on any
machine. ``records_digest`` (SHA-256 over the sorted ids of the counted records and the fork
evidence records, each hex id followed by a newline) lets two auditors see that they
reported on the same records. ``render_html`` draws the charts with matplotlib (Agg, inline
SVG) into one self-contained page.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from node.audit.engine import records_digest
from protocol import Federation, Record, fold_state
from protocol.bodies import OpinionBody
from protocol.encoding import JsonValue, encode_canonical
from protocol.fold import SignalState, State, opinion_counts, signal_status

METRICS: Final = ("signals_added", "retracted", "expired", "disputed", "confirmed")
VERDICT_METRICS: Final = {
    "dispute": "disputes_given",
    "confirm": "confirms_given",
    "seen": "seen_given",
}
UNLABELLED: Final = "(unlabelled)"  # not a valid label token, so it cannot collide with one
PPM: Final = 1_000_000
MAX_CHART_MONTHS: Final = 60  # the tables list everything; the charts stay readable
MAX_CHART_LABELS: Final = 30
MAX_SIGHTED_SIGNALS: Final = 100
DAY_MS: Final = 86_400_000
DIGEST_OF: Final = "sorted ids of the counted records and the fork evidence records, hex + LF"
LOG_TIME_NOTE: Final = (
    "times are record ts values (log time): advisory, set by each author, never checked "
    "against a clock"
)

Counter = dict[str, dict[str, int]]  # bucket -> metric -> count


def civil_date(ts_ms: int) -> tuple[int, int, int]:
    """(year, month, day) in UTC of a timestamp in ms, for any ts the protocol allows (up to
    2^53 - 1 ms, far beyond ``datetime``'s year 9999): days to civil date, in integers."""
    z = ts_ms // DAY_MS + 719_468
    era, doe = divmod(z, 146_097)
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, doy - (153 * mp + 2) // 5 + 1


def month_of(ts_ms: int) -> str:
    """The UTC month ``YYYY-MM`` of a record timestamp."""
    year, month, _ = civil_date(ts_ms)
    return f"{year:04d}-{month:02d}"


def rate(numerator: int, denominator: int) -> dict[str, JsonValue]:
    ppm = None if denominator == 0 else numerator * PPM // denominator
    return {"numerator": numerator, "denominator": denominator, "ppm": ppm}


def nearest_rank(sorted_values: Sequence[int], percent: int) -> int | None:
    """The nearest-rank percentile: the smallest value with at least percent% at or below it."""
    if not sorted_values:
        return None
    rank = max(1, -(-percent * len(sorted_values) // 100))
    return sorted_values[rank - 1]


def _bump(counter: Counter, bucket: str, metric: str, by: int = 1) -> None:
    row = counter.setdefault(bucket, {})
    row[metric] = row.get(metric, 0) + by


def build_report(records: Sequence[Record], federation: Federation) -> dict[str, JsonValue]:
    """The transparency report of a set of valid records (see the module docstring)."""
    state = fold_state(records, federation, 0)  # membership and counting ignore the time
    counted = {r.id: r for r in records if state.membership.counts(r) and r.fed == federation.id}
    as_of = max((r.ts for r in counted.values()), default=0)
    evidence = {r.id for proof in state.forks.values() for r in (proof.first, proof.second)}
    by_member, by_label, by_month = _signal_counters(state, counted, as_of)
    return {
        "report": "hashmesh transparency report",
        "v": 1,
        "federation": {
            "id": federation.id,
            "name": federation.name,
            "threshold": federation.threshold,
        },
        "records": len(counted.keys() | evidence),
        "records_digest": records_digest(counted.keys() | evidence),
        "records_digest_of": DIGEST_OF,
        "log_time": {
            "first_ts": min((r.ts for r in counted.values()), default=0),
            "as_of_ts": as_of,
            "note": LOG_TIME_NOTE,
        },
        "totals": _totals(state, counted, as_of),
        "rates": _rates(_sum(by_member)),
        "time_to_first_dispute_ms": _time_to_dispute(state, counted),
        "members": _members(state, by_member),
        "labels": [_bucket("label", label, row) for label, row in sorted(by_label.items())],
        "months": [
            _bucket("month", month, row) | {"added_by_member": _added_by(row)}
            for month, row in sorted(by_month.items())
        ],
        "sightings": _sightings(state),
        "forks": [{"author": a, "seq": p.seq} for a, p in sorted(state.forks.items())],
        "freezes": [
            {"key": k, "seq": seq, "reason": reason}
            for k, (seq, reason) in sorted(state.membership.freezes.items())
        ],
    }


def status_at(signal: SignalState, as_of: int) -> str:
    """A signal's status with expiry evaluated at as_of (log time)."""
    return signal_status(signal.expires, signal.retracted_by is not None, as_of)


def _signal_counters(
    state: State, counted: Mapping[str, Record], as_of: int
) -> tuple[Counter, Counter, Counter]:
    by_member: Counter = {m: {} for m in state.members}
    by_label: Counter = {}
    by_month: Counter = {}
    verdicts = _latest_verdict_ts(state, counted)
    for signal in state.signals.values():
        labels = signal.labels or (UNLABELLED,)
        events = [("signals_added", signal.ts)]
        status = status_at(signal, as_of)
        if status == "retracted" and signal.retracted_by is not None:
            events.append(("retracted", counted[signal.retracted_by].ts))
        if status == "expired":
            events.append(("expired", signal.expires or 0))
        for verdict, metric in (("dispute", "disputed"), ("confirm", "confirmed")):
            if (signal.id, verdict) in verdicts:
                events.append((metric, verdicts[(signal.id, verdict)]))
        for metric, ts in events:
            _bump(by_member, signal.member, metric)
            for label in labels:
                _bump(by_label, label, metric)
            _bump(by_month, month_of(ts), metric)
        _bump(by_month, month_of(signal.ts), "by:" + signal.member)
    return by_member, by_label, by_month


def _latest_verdict_ts(state: State, counted: Mapping[str, Record]) -> dict[tuple[str, str], int]:
    """(signal, verdict) -> earliest ts among the latest opinions with that verdict."""
    out: dict[tuple[str, str], int] = {}
    for opinion in state.opinions.values():
        ts = counted[opinion.record].ts
        key = (opinion.signal, opinion.verdict)
        out[key] = min(ts, out.get(key, ts))
    return out


def _bucket(name: str, value: str, row: Mapping[str, int]) -> dict[str, JsonValue]:
    return {name: value} | _metrics(row)


def _metrics(row: Mapping[str, int]) -> dict[str, JsonValue]:
    return {m: row.get(m, 0) for m in METRICS}


def _added_by(row: Mapping[str, int]) -> dict[str, JsonValue]:
    return {k[3:]: n for k, n in sorted(row.items()) if k.startswith("by:")}


def _sum(counter: Counter) -> dict[str, int]:
    total: dict[str, int] = {}
    for row in counter.values():
        for metric, n in row.items():
            total[metric] = total.get(metric, 0) + n
    return total


def _rates(row: Mapping[str, int]) -> dict[str, JsonValue]:
    added = row.get("signals_added", 0)
    return {
        "retraction": rate(row.get("retracted", 0), added),
        "dispute": rate(row.get("disputed", 0), added),
        "confirmation": rate(row.get("confirmed", 0), added),
    }


def _totals(state: State, counted: Mapping[str, Record], as_of: int) -> dict[str, JsonValue]:
    kinds: dict[str, int] = {}
    for record in counted.values():
        kinds[record.kind] = kinds.get(record.kind, 0) + 1
    statuses = {"active": 0, "expired": 0, "retracted": 0}
    for signal in state.signals.values():
        statuses[status_at(signal, as_of)] += 1
    by_kind: dict[str, JsonValue] = dict(sorted(kinds.items()))
    by_status: dict[str, JsonValue] = dict(statuses)
    return {
        "counted_records_by_kind": by_kind,
        "signals_by_status": by_status,
        "opinions_latest": len(state.opinions),
        "members": sum(1 for m in state.members.values() if not m.removed),
        "members_removed": sum(1 for m in state.members.values() if m.removed),
    }


def _members(state: State, by_member: Counter) -> list[JsonValue]:
    given: Counter = {m: {} for m in state.members}
    for opinion in state.opinions.values():
        _bump(given, opinion.member, VERDICT_METRICS[opinion.verdict])
    out: list[JsonValue] = []
    for identity, member in sorted(state.members.items()):
        row = by_member.get(identity, {})
        entry: dict[str, JsonValue] = {"identity": identity, "name": member.name}
        entry |= {"role": member.role, "removed": member.removed, "keys": len(member.keys)}
        entry |= _metrics(row) | {m: given[identity].get(m, 0) for m in VERDICT_METRICS.values()}
        out.append(entry | {"rates": _rates(row)})
    return out


def _sightings(state: State) -> dict[str, JsonValue]:
    """Latest counted ``seen`` opinions per signal, per label, and the most sighted signals."""
    seen_by: dict[str, list[str]] = {}
    for opinion in state.opinions.values():
        signal = state.signals.get(opinion.signal)
        if opinion.verdict == "seen" and signal and opinion_counts(opinion.member, signal.member):
            seen_by.setdefault(opinion.signal, []).append(opinion.member)
    by_label: Counter = {}
    for sid, members in seen_by.items():
        for label in state.signals[sid].labels or (UNLABELLED,):
            _bump(by_label, label, "signals_sighted")
            _bump(by_label, label, "sightings", len(members))
    ranked = sorted(seen_by.items(), key=lambda item: (-len(item[1]), item[0]))
    return {
        "signals_sighted": len(seen_by),
        "sightings": sum(len(m) for m in seen_by.values()),
        "labels": [{"label": label, "signals_sighted": row["signals_sighted"],
                    "sightings": row["sightings"]} for label, row in sorted(by_label.items())],
        "signals": [{"signal": sid, "labels": _json_list(state.signals[sid].labels),
                     "sightings": len(members), "members": _json_list(sorted(members))}
                    for sid, members in ranked[:MAX_SIGHTED_SIGNALS]],
    }  # fmt: skip


def _json_list(items: Iterable[str]) -> list[JsonValue]:
    return list(items)


def _time_to_dispute(state: State, counted: Mapping[str, Record]) -> dict[str, JsonValue]:
    first: dict[str, int] = {}
    owner = state.membership.owner
    for record in counted.values():
        body = record.body
        if (
            isinstance(body, OpinionBody)
            and body.verdict == "dispute"
            and body.signal in state.signals
            and opinion_counts(owner[record.author], state.signals[body.signal].member)
        ):
            first[body.signal] = min(record.ts, first.get(body.signal, record.ts))
    deltas = sorted(ts - state.signals[sid].ts for sid, ts in first.items())
    return {
        "signals": len(deltas),
        "median": nearest_rank(deltas, 50),
        "p90": nearest_rank(deltas, 90),
        "negative": sum(1 for d in deltas if d < 0),
        "method": "nearest rank over (first counted dispute ts - signal ts); " + LOG_TIME_NOTE,
    }


def report_bytes(report: Mapping[str, JsonValue]) -> bytes:
    """The canonical JSON of a report: the bytes two auditors compare."""
    return encode_canonical(dict(report))


# -- HTML ------------------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update(
        {
            "svg.hashsalt": "hashmesh",
            "svg.fonttype": "none",
            "text.parse_math": False,
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    import matplotlib.pyplot as plt

    return plt


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    _plt().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _names(report: Mapping[str, Any]) -> dict[str, str]:
    return {m["identity"]: f"{m['name']} ({m['identity'][:8]})" for m in report["members"]}


def busiest(rows: Sequence[Mapping[str, Any]], limit: int, score: Sequence[str]) -> list[Any]:
    """At most limit rows, the ones with the highest sum of the score metrics, in their order."""
    if len(rows) <= limit:
        return list(rows)
    ranked = sorted(range(len(rows)), key=lambda i: (-sum(rows[i][k] for k in score), i))
    return [rows[i] for i in sorted(ranked[:limit])]


def chart_contributions(report: Mapping[str, Any]) -> str:
    """Stacked bars: signals contributed per month, one colour per member."""
    plt = _plt()
    shown = busiest(report["months"], MAX_CHART_MONTHS, ("signals_added",))
    months = [m["month"] for m in shown]
    names = _names(report)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    bottom = [0] * len(months)
    for identity in sorted(names):
        counts = [m["added_by_member"].get(identity, 0) for m in shown]
        if any(counts):
            ax.bar(months, counts, bottom=bottom, label=names[identity])
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    cut = f" ({len(shown)} busiest months)" if len(shown) < len(report["months"]) else ""
    ax.set_title(f"Signals contributed per month (UTC, log time) per member{cut}")
    ax.set_ylabel("signals")
    ax.tick_params(axis="x", labelrotation=45)
    if any(bottom):
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _svg(fig)


def chart_labels(report: Mapping[str, Any]) -> str:
    """Horizontal bars: disputes and retractions per label."""
    plt = _plt()
    rows = busiest(report["labels"], MAX_CHART_LABELS, ("disputed", "retracted"))
    labels = [r["label"] for r in rows]
    y = list(range(len(labels)))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * max(1, len(labels))))
    height = 0.4
    ax.barh([i - height / 2 for i in y], [r["disputed"] for r in rows], height, label="disputed")
    ax.barh([i + height / 2 for i in y], [r["retracted"] for r in rows], height, label="retracted")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    cut = f" ({len(rows)} labels with the most)" if len(rows) < len(report["labels"]) else ""
    ax.set_title(f"Disputed and retracted signals per label{cut}")
    ax.set_xlabel("signals")
    ax.legend(fontsize=7)
    return _svg(fig)


def chart_members(report: Mapping[str, Any]) -> str:
    """Grouped bars: each member's signals added, retracted, disputed and confirmed."""
    plt = _plt()
    members = [m for m in report["members"] if m["role"] == "member"]
    names = [f"{m['name']}" for m in members]
    x = list(range(len(members)))
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.2
    for n, metric in enumerate(("signals_added", "retracted", "disputed", "confirmed")):
        ax.bar(
            [i + (n - 1.5) * width for i in x], [m[metric] for m in members], width, label=metric
        )
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_title("Per member: signals added, retracted, disputed, confirmed")
    ax.legend(fontsize=7)
    return _svg(fig)


def render_html(report: Mapping[str, Any]) -> str:
    """A self-contained HTML page: summary, the charts (inline SVG), and the tables."""
    data = report_bytes(report)
    report = json.loads(data)  # canonical member order: the same page from dict or JSON
    e = html.escape
    fed = report["federation"]
    digest = hashlib.sha256(data).hexdigest()
    charts = [chart_contributions(report), chart_labels(report), chart_members(report)]
    ttd = report["time_to_first_dispute_ms"]
    rates = report["rates"]
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>hashmesh transparency report: {e(fed['name'])}</title><style>{_CSS}</style>"
        f"</head><body><h1>Transparency report: {e(fed['name'])}</h1>",
        f"<p>Federation <code>{e(fed['id'])}</code>. {report['records']} records counted, "
        f"digest <code>{e(report['records_digest'])}</code> ({e(report['records_digest_of'])})."
        f" Report JSON SHA-256 <code>{digest}</code>.</p>",
        f"<p class='note'>{e(report['log_time']['note'])}. As of log time "
        f"{_when(report['log_time']['as_of_ts'])}.</p>",
        "<h2>Rates</h2>"
        + _table(
            ["rate", "numerator", "denominator", "per million"],
            [[k, v["numerator"], v["denominator"], v["ppm"]] for k, v in rates.items()],
        ),
        f"<p>Time from contribution to first dispute ({ttd['signals']} signals): median "
        f"{_duration(ttd['median'])}, p90 {_duration(ttd['p90'])}.</p>",
        "<h2>Charts</h2>" + "".join(f"<figure>{svg}</figure>" for svg in charts),
        "<h2>Members</h2>"
        + _table(
            ["member", "role", *METRICS, "disputes given", "confirms given"],
            [
                [
                    f"{m['name']} ({m['identity'][:12]})",
                    m["role"] + (" (removed)" if m["removed"] else ""),
                    *(m[k] for k in METRICS),
                    m["disputes_given"],
                    m["confirms_given"],
                ]
                for m in report["members"]
            ],
        ),
        "<h2>Labels</h2>"
        + _table(
            ["label", *METRICS], [[r["label"], *(r[k] for k in METRICS)] for r in report["labels"]]
        ),
        _sightings_html(report["sightings"]),
        "<h2>Months (UTC)</h2>"
        + _table(
            ["month", *METRICS], [[r["month"], *(r[k] for k in METRICS)] for r in report["months"]]
        ),
        "<h2>Recompute</h2><p>Anyone holding the records can recompute this report: "
        "<code>hashmesh report --db COPY.db --json | sha256sum</code> prints the JSON SHA-256 "
        "above when the records are the same.</p></body></html>",
    ]
    return "\n".join(parts)


def _sightings_html(sightings: Mapping[str, Any]) -> str:
    head = (
        f"<h2>Sightings</h2><p>{sightings['sightings']} sightings (members' latest <em>seen</em> "
        f"opinions: the hash matched on their platform) of {sightings['signals_sighted']} "
        "signals.</p>"
    )
    if not sightings["signals"]:
        return head
    return (
        head
        + _table(["label", "signals sighted", "sightings"],
                 [[r["label"], r["signals_sighted"], r["sightings"]] for r in sightings["labels"]])
        + _table(["signal", "labels", "sightings"],
                 [[r["signal"][:16], " ".join(r["labels"]), r["sightings"]]
                  for r in sightings["signals"]])
    )  # fmt: skip


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    e = html.escape
    out = ["<table><thead><tr>", *(f"<th>{e(str(h))}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out += ["<tr>", *(f"<td>{e('-' if c is None else str(c))}</td>" for c in row), "</tr>"]
    out.append("</tbody></table>")
    return "".join(out)


def _when(ts_ms: int) -> str:
    year, month, day = civil_date(ts_ms)
    minutes = ts_ms % DAY_MS // 60_000
    return f"{year:04d}-{month:02d}-{day:02d} {minutes // 60:02d}:{minutes % 60:02d} UTC"


def _duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    if abs(ms) < 60_000:
        return f"{ms / 1000:.1f} s"
    if abs(ms) < 86_400_000:
        return f"{ms / 3_600_000:.1f} h"
    return f"{ms / 86_400_000:.1f} days"


_CSS: Final = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
code{font-size:.85em;word-break:break-all}table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}th:first-child,td:first-child
{text-align:left}.note{color:#555;font-size:.9em}figure{margin:1rem 0}
svg{max-width:100%;height:auto}
"""
