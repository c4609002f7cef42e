"""What operators type and what ``hashmesh export`` / ``hashmesh import`` read and write.

- A hash on the command line is ``TYPE:VALUE`` (``pdq:f8f8…``, ``md5:…``,
  ``url:https://…``); the value is turned into its canonical form (SPEC 5.3) or refused.
- An expiry is an ISO 8601 date or time (``2026-12-31``, ``2026-12-31T12:00:00Z``; no zone
  means UTC) or a duration from now: a number and one of ``s m h d w`` (``30d``).
- **jsonl** (export and import): one stored record per line, its canonical bytes exactly as
  signed -- a complete, verifiable backup that any node merges through the sync checks.
- **csv** (export): one row per active signal, with a header; the columns are ``CSV_COLUMNS``
  (``signal_type`` uses python-threatexchange's names: pdq, phash, dhash, md5, sha1, sha256, url)::

      signal_type    pdq | phash | dhash | md5 | sha1 | sha256 | url
      signal_value   the canonical value
      labels         space-separated labels
      member_name    the contributing member's name
      member         the contributing member's identity (first public key)
      id             the signal's record id
      author         the signing key (differs from member after a key rotation)
      seq            the record's position in the author's log
      created        the record's ts, ISO 8601 UTC (advisory: the author's clock)
      expires        ISO 8601 UTC, or empty for never
      note           the contributor's note, or empty
      confirm, dispute, seen   opinion tallies

- **hash list** (import): a CSV whose header names ``signal_type`` and ``signal_value``
  (an optional ``labels`` column adds space-separated labels per row, so an exported csv can be
  imported again), or plain text with one ``TYPE:VALUE`` per line. Blank lines and lines
  starting with ``#`` are ignored.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from node.errors import InputError, explain
from protocol.errors import RemoteProtocolError
from protocol.labels import normalise_labels
from protocol.signal_types import canonical_value

CSV_COLUMNS: tuple[str, ...] = (
    "signal_type",
    "signal_value",
    "labels",
    "member_name",
    "member",
    "id",
    "author",
    "seq",
    "created",
    "expires",
    "note",
    "confirm",
    "dispute",
    "seen",
)
DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d{1,9})([smhdw])")


@dataclass(frozen=True, slots=True)
class HashEntry:
    """One hash to contribute: canonical type and value, extra labels, where it came from."""

    type: str
    value: str
    labels: tuple[str, ...] = ()
    source: str = ""


def parse_hash(text: str, source: str = "--hash") -> HashEntry:
    """``TYPE:VALUE`` as a canonical HashEntry; InputError naming source otherwise."""
    kind, sep, value = text.strip().partition(":")
    if not sep or not kind or not value:
        raise InputError(f"{source}: expected TYPE:VALUE (like pdq:f8f8…), got {text!r}")
    return _entry(kind.strip().lower(), value, (), source)


def _entry(kind: str, value: str, labels: Sequence[str], source: str) -> HashEntry:
    try:
        return HashEntry(kind, canonical_value(kind, value), normalise_labels(labels), source)
    except RemoteProtocolError as e:
        raise InputError(f"{source}: {explain(e, kind=False)}") from e


def parse_expiry(text: str | None, now_ms: int) -> int | None:
    """An expiry (ISO date/time or duration like 30d) as ms since the epoch; None for never."""
    if text is None:
        return None
    match = _DURATION.fullmatch(text.strip())
    if match:
        expires = now_ms + int(match[1]) * DURATION_UNITS_S[match[2]] * 1000
    else:
        expires = _iso_ms(text.strip())
    if expires <= now_ms:
        raise InputError(f"--expires {text!r} is not in the future")
    return expires


def _iso_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"--expires must be an ISO date (2026-12-31) or a duration (30d), got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def iso_ms(ms: int | None) -> str:
    """ms since the epoch as ISO 8601 UTC (``2026-11-22T08:00:00.000Z``); '' for None."""
    if ms is None:
        return ""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- jsonl ------------------------------------------------------------------------------


def is_record_stream(data: bytes) -> bool:
    """Does the file hold signed records (jsonl) rather than a hash list?"""
    first = next((line for line in data.splitlines() if line.strip()), b"")
    return first.lstrip().startswith(b"{")


def record_lines(data: bytes) -> list[bytes]:
    """The record lines of a jsonl file (blank lines skipped; bytes otherwise untouched)."""
    return [line for line in data.split(b"\n") if line.strip()]


def batches(lines: Sequence[bytes], max_records: int, max_bytes: int) -> Iterator[list[bytes]]:
    """lines in consecutive batches of at most max_records lines and about max_bytes."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        if batch and (len(batch) >= max_records or size + len(line) + 1 > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 1
    if batch:
        yield batch


# ---- csv --------------------------------------------------------------------------------


def csv_text(signals: Iterable[dict[str, object]]) -> Iterator[str]:
    """The csv export: the header, then one line per signal (rows of ``Store.signals``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for signal in signals:
        writer.writerow(csv_row(signal))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def csv_row(signal: dict[str, object]) -> list[str]:
    tallies = signal.get("tallies")
    tally = tallies if isinstance(tallies, dict) else {}
    labels = signal.get("labels")
    expires = signal.get("expires")
    return [
        str(signal["type"]),
        str(signal["value"]),
        " ".join(labels) if isinstance(labels, list) else "",
        str(signal.get("member_name") or ""),
        str(signal["member"]),
        str(signal["id"]),
        str(signal["author"]),
        str(signal["seq"]),
        iso_ms(int(str(signal["ts"]))),
        iso_ms(int(expires) if isinstance(expires, int) else None),
        str(signal.get("note") or ""),
        *(str(tally.get(verdict, 0)) for verdict in ("confirm", "dispute", "seen")),
    ]


# ---- hash lists -------------------------------------------------------------------------


def parse_hash_list(text: str, source: str) -> list[HashEntry]:
    """Every hash of a hash list (csv with a header, or TYPE:VALUE lines), validated."""
    lines = text.splitlines()
    header = next((line for line in lines if _content(line)), "")
    if "signal_type" in header and "signal_value" in header:
        return _parse_csv(text, source)
    return [
        parse_hash(line, f"{source}:{number}")
        for number, line in enumerate(lines, start=1)
        if _content(line)
    ]


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _parse_csv(text: str, source: str) -> list[HashEntry]:
    rows = csv.DictReader(line for line in io.StringIO(text) if _content(line))
    entries = []
    for number, row in enumerate(rows, start=1):
        kind, value = row.get("signal_type"), row.get("signal_value")
        where = f"{source}: data row {number}"
        if not kind or not value:
            raise InputError(f"{where}: signal_type and signal_value are required")
        labels = (row.get("labels") or "").split()
        entries.append(_entry(kind.strip().lower(), value, labels, where))
    return entries
