"""Sync messages and decisions, without a network (SPEC section 10).

A node's frontier is the newest (seq, id) of every author it holds, plus its fork evidence.
Two nodes reconcile by comparing frontiers: this module says what to pull, what to push and
how to check a peer's answers; the node performs the HTTP exchanges and the merges.

- ``frontier_digest`` lets an idle exchange cost a few hundred bytes: the asker sends the
  digest of its own frontier and the answerer replies "same" when its digest is equal.
- ``plan_pulls`` asks for every author where the peer is ahead, or at the same seq with
  another id. Each request starts one record *before* the local head (``after = seq - 1``),
  so the first record returned overlaps the local head: if its id differs, the merge finds
  a fork instead of silently following a diverging chain.
- ``next_page`` starts each following page one seq back too (``after = last seq - 1``), so
  a fork whose two records straddle a page boundary shows on the next page; paging still
  always moves forward.
- ``plan_pushes`` names what the peer lacks, so one exchange heals both sides.
- ``capped_heads`` lists a frozen author at its cap (the last seq that can count): nodes
  that stored different records past a fork or a removal (before they learned of it) then
  report equal frontiers, instead of re-sending and re-pulling that author every round.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from protocol.chain import Head
from protocol.encoding import MAX_SAFE_INTEGER, JsonValue, encode_canonical
from protocol.errors import SyncError
from protocol.records import is_record_id

DEFAULT_PAGE_RECORDS = 1000
MAX_PAGE_RECORDS = 5000
MAX_FRONTIER_AUTHORS = 100_000


@dataclass(frozen=True, slots=True)
class Frontier:
    """A node's newest (seq, id) per author and the fork evidence it holds (as JSON)."""

    heads: Mapping[str, Head]
    forks: tuple[dict[str, JsonValue], ...] = ()

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "heads": [self.heads[a].to_json() for a in sorted(self.heads)],
            "forks": list(self.forks),
        }

    def digest(self) -> str:
        return frontier_digest(self.heads.values(), self.forks)


def frontier_digest(heads: Iterable[Head], forks: Iterable[Mapping[str, JsonValue]] = ()) -> str:
    """SHA-256 of the canonical frontier: equal digests mean nothing to exchange."""
    body = {
        "heads": [h.to_json() for h in sorted(heads, key=lambda h: h.author)],
        "forks": sorted(f"{f.get('author')}/{f.get('seq')}" for f in forks),
    }
    return hashlib.sha256(encode_canonical(body)).hexdigest()


def parse_frontier(value: object) -> Frontier:
    """A peer's frontier from its JSON answer; raises SyncError on any malformation."""
    if not isinstance(value, dict) or not {"heads", "forks"} <= set(value):
        raise SyncError("a frontier is an object with heads and forks")
    heads, forks = value["heads"], value["forks"]
    if not isinstance(heads, list) or len(heads) > MAX_FRONTIER_AUTHORS:
        raise SyncError("heads must be a list", field="heads")
    if not isinstance(forks, list) or not all(isinstance(f, dict) for f in forks):
        raise SyncError("forks must be a list of objects", field="forks")
    parsed: dict[str, Head] = {}
    for item in heads:
        head = _parse_head(item)
        if head.author in parsed:
            raise SyncError("an author appears twice in heads", author=head.author)
        parsed[head.author] = head
    return Frontier(parsed, tuple(forks))


def _parse_head(item: object) -> Head:
    if not isinstance(item, dict) or set(item) != {"author", "seq", "id"}:
        raise SyncError("a head is an object with author, seq and id", field="heads")
    author, seq, rid = item["author"], item["seq"], item["id"]
    if not is_record_id(author) or not is_record_id(rid):
        raise SyncError("head author and id are 64 lowercase hex", field="heads")
    if type(seq) is not int or seq < 1:
        raise SyncError("head seq must be a positive integer", field="heads", author=str(author))
    return Head(str(author), seq, str(rid))


def capped_heads(
    heads: Mapping[str, Head],
    caps: Mapping[str, int | None],
    id_at: Callable[[str, int], str],
) -> dict[str, Head]:
    """The heads a node reports and plans with (SPEC 10.2): an author whose log is frozen at
    cap ``c`` (``Membership.caps``: a fork at c + 1, a removal naming c, a rotation at c) and
    whose head is past c is listed at its record at seq c (``id_at(author, c)``: the chain is
    linked, so a node holding a later head holds it, and every correct node holds the same
    one), or left out when c is 0. Other heads are unchanged."""
    out = dict(heads)
    for author, cap in caps.items():
        head = out.get(author)
        if cap is None or head is None or head.seq <= cap:
            continue
        if cap == 0:
            del out[author]
        else:
            out[author] = Head(author, cap, id_at(author, cap))
    return out


@dataclass(frozen=True, slots=True)
class LogRequest:
    """Ask a peer for author's records with seq > after, at most limit of them."""

    author: str
    after: int
    limit: int

    def query(self) -> dict[str, str]:
        return {"after": str(self.after), "limit": str(self.limit)}


def plan_pulls(
    local: Mapping[str, Head], remote: Frontier, limit: int = DEFAULT_PAGE_RECORDS
) -> list[LogRequest]:
    """The log requests that fetch everything remote holds beyond local (one page each)."""
    requests = []
    for author, theirs in sorted(remote.heads.items()):
        mine = local.get(author)
        if mine is None:
            requests.append(LogRequest(author, 0, limit))
        elif theirs.seq > mine.seq or (theirs.seq == mine.seq and theirs.id != mine.id):
            requests.append(LogRequest(author, mine.seq - 1, limit))
    return requests


def next_page(request: LogRequest, received: int, last_seq: int | None) -> LogRequest | None:
    """The follow-up request after a page of received records, or None when done.

    The next page starts one seq back (``after = last_seq - 1``): a page may end between the
    two records of a fork (two records at one seq), and the overlap brings the second one,
    so the merge finds the fork. Paging must move forward: the next ``after`` is at least
    one past this one, and a full page whose last record is not past ``after`` (a peer that
    ignores ``after``, or lies about seqs) ends the pull instead of asking again.
    """
    if received < request.limit or last_seq is None or last_seq <= request.after:
        return None
    return LogRequest(request.author, max(last_seq - 1, request.after + 1), request.limit)


def plan_pushes(local: Mapping[str, Head], remote: Frontier) -> list[tuple[str, int]]:
    """(author, after) for every author where local holds records the remote lacks."""
    pushes = []
    for author, mine in sorted(local.items()):
        theirs = remote.heads.get(author)
        if theirs is None:
            pushes.append((author, 0))
        elif mine.seq > theirs.seq:
            pushes.append((author, theirs.seq))
    return pushes


def lag(local: Mapping[str, Head], remote: Frontier) -> tuple[int, int]:
    """(records the remote has that local lacks, records local has that the remote lacks)."""
    behind = sum(
        max(0, h.seq - (local[a].seq if a in local else 0)) for a, h in remote.heads.items()
    )
    ahead = sum(
        max(0, h.seq - (remote.heads[a].seq if a in remote.heads else 0)) for a, h in local.items()
    )
    return behind, ahead


def parse_log_request(after: str | None, limit: str | None, maximum: int) -> tuple[int, int]:
    """Validate the query of ``GET /v1/log/{author}``."""
    try:
        after_n = int(after) if after is not None else 0
        limit_n = int(limit) if limit is not None else DEFAULT_PAGE_RECORDS
    except ValueError as e:
        raise SyncError("after and limit must be integers", field="query") from e
    if not 0 <= after_n <= MAX_SAFE_INTEGER:  # no seq is larger
        raise SyncError(
            "after must be a seq, 0 to 2^53 - 1", field="after", expected=">= 0", actual=after_n
        )
    if not 1 <= limit_n <= maximum:
        raise SyncError(
            "limit must be between 1 and the maximum",
            field="limit",
            expected=f"1..{maximum}",
            actual=limit_n,
        )
    return after_n, limit_n


def split_ndjson(body: bytes, max_records: int) -> list[bytes]:
    """The lines of an NDJSON body: its framing only (a final newline, no blank lines, at most
    max_records lines). Each line is then a record to verify on its own (section 4.2): an
    oversize or malformed line is that line's rejection, not the batch's."""
    if not body:
        return []
    if not body.endswith(b"\n"):
        raise SyncError("NDJSON body must end with a newline")
    lines = body[:-1].split(b"\n")
    if len(lines) > max_records:
        raise SyncError("too many records in one message", expected=max_records, actual=len(lines))
    for number, line in enumerate(lines, start=1):
        if not line:
            raise SyncError(f"line {number} of the NDJSON body is empty", field="body")
    return lines


def join_ndjson(records: Iterable[bytes]) -> bytes:
    return b"".join(r + b"\n" for r in records)


# Rejections that mean "our views differ" (membership, chain position), not a bad sender.
VIEW_DEPENDENT_ERRORS = frozenset({"MembershipError", "SeqGapError", "PrevMismatchError"})


def is_misbehaviour(error: Mapping[str, object] | None) -> bool:
    """Does a merge rejection (RemoteProtocolError.to_json()) show the sender sent bad data?"""
    return error is not None and error.get("error") not in VIEW_DEPENDENT_ERRORS


def claimed_last_seq(lines: Sequence[bytes]) -> int | None:
    """The seq the last line of a log page claims (unverified: only to ask for the next page).

    The records are verified when merged; a false claim can only make the next request ask
    for the wrong range, which the following anti-entropy round repairs.
    """
    if not lines:
        return None
    try:
        seq = orjson.loads(lines[-1]).get("seq")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return seq if type(seq) is int and seq > 0 else None


def check_log_page(lines: list[bytes], request: LogRequest) -> None:
    """A peer's log page must not be longer than asked for (records verify in the merge)."""
    if len(lines) > request.limit:
        raise SyncError(
            "peer sent more records than asked for", expected=request.limit, actual=len(lines)
        )


def push_width(author: str, *, source: str | None, own_key: str, fanout: int) -> int | None:
    """To how many peers a node pushes a record it has just stored (SPEC 10.3).

    None means every peer: the node's own records. A record that came straight from its
    author's node (source, the key that signed the push, is the author) goes to one peer:
    the author has pushed it to every peer it knows. Anything else goes to ``fanout`` peers.
    The node never pushes a record back to its source.
    """
    if author == own_key:
        return None
    if source == author:
        return 1
    return fanout
