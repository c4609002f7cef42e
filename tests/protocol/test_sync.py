"""Sync decisions without a network (SPEC section 10): frontiers, pulls, pushes, paging.

The heart of this file is a sans-I/O reconciliation simulation: a node is a mapping from
author to the list of record ids of that author's log (the record at seq n is ``log[n - 1]``),
and a small driver runs one anti-entropy exchange through ``protocol/sync.py`` exactly as the
node does: frontier, ``plan_pulls``, NDJSON pages served from the peer's log, ``next_page``
with ``claimed_last_seq``, then ``plan_pushes``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol.errors as errors_module
from protocol.chain import Head
from protocol.encoding import MAX_RECORD_BYTES, JsonValue
from protocol.errors import (
    MalformedJsonError,
    MembershipError,
    PrevMismatchError,
    RemoteProtocolError,
    SchemaError,
    SeqGapError,
    SignatureError,
    SyncError,
)
from protocol.sync import (
    DEFAULT_PAGE_RECORDS,
    MAX_FRONTIER_AUTHORS,
    MAX_PAGE_RECORDS,
    VIEW_DEPENDENT_ERRORS,
    Frontier,
    LogRequest,
    capped_heads,
    check_log_page,
    claimed_last_seq,
    frontier_digest,
    is_misbehaviour,
    join_ndjson,
    lag,
    next_page,
    parse_frontier,
    parse_log_request,
    plan_pulls,
    plan_pushes,
    push_width,
    split_ndjson,
)

Log = list[str]
Node = dict[str, Log]


def hexid(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


AUTHORS = tuple(hexid(f"test_sync author {i}") for i in range(4))
ALICE, BOB, CAROL, DAVE = AUTHORS


def record_id(author: str, seq: int, branch: str = "main") -> str:
    return hexid(f"{author}/{seq}/{branch}")


def chain(author: str, length: int, branch: str = "main") -> Log:
    return [record_id(author, n, branch) for n in range(1, length + 1)]


def forked_chain(author: str, length: int, diverge_at: int, branch: str) -> Log:
    """The main chain up to diverge_at - 1, then records of another branch."""
    return [
        record_id(author, n, "main" if n < diverge_at else branch) for n in range(1, length + 1)
    ]


def heads_of(node: Mapping[str, Log]) -> dict[str, Head]:
    return {a: Head(a, len(log), log[-1]) for a, log in node.items() if log}


def frontier_of(node: Mapping[str, Log], forks: tuple[dict[str, Any], ...] = ()) -> Frontier:
    return Frontier(heads_of(node), forks)


def valid_frontier_json() -> dict[str, Any]:
    return {
        "heads": [
            {"author": ALICE, "seq": 3, "id": record_id(ALICE, 3)},
            {"author": BOB, "seq": 1, "id": record_id(BOB, 1)},
        ],
        "forks": [],
    }


# --- the simulation driver ----------------------------------------------------------------


class ForkFoundError(Exception):
    """The merge met a second record at a seq the log already holds."""


class GapFoundError(Exception):
    """The merge met a record that does not follow the log's head."""


def serve_log(log: Log, author: str, request: LogRequest) -> bytes:
    """The peer's answer to GET /v1/log/{author}: records with seq > after, at most limit."""
    after, limit = parse_log_request(str(request.after), str(request.limit), MAX_PAGE_RECORDS)
    lines = [
        orjson.dumps({"author": author, "seq": seq, "id": log[seq - 1]})
        for seq in range(after + 1, min(len(log), after + limit) + 1)
    ]
    return join_ndjson(lines)


def apply_records(node: Node, author: str, records: list[tuple[int, str]]) -> None:
    """Merge (seq, id) records into node's log of author: duplicates pass, forks/gaps raise."""
    log = node.setdefault(author, [])
    for seq, rid in records:
        if seq <= len(log):
            if log[seq - 1] != rid:
                raise ForkFoundError(author, seq)
        elif seq == len(log) + 1:
            log.append(rid)
        else:
            raise GapFoundError(author, seq)
    if not log:
        del node[author]


def decode_page(lines: list[bytes]) -> list[tuple[int, str]]:
    out = []
    for line in lines:
        obj = orjson.loads(line)
        out.append((obj["seq"], obj["id"]))
    return out


@dataclass
class PullTrace:
    requests: list[LogRequest] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    first_page: list[tuple[int, str]] = field(default_factory=list)


def pull(local: Node, remote: Node, limit: int, max_pages: int = 10_000) -> dict[str, PullTrace]:
    """L pulls from P (SPEC 10.3 step 3); returns what was asked and received per author."""
    traces: dict[str, PullTrace] = {}
    theirs = parse_frontier(frontier_of(remote).to_json())
    for request in plan_pulls(heads_of(local), theirs, limit):
        trace = traces.setdefault(request.author, PullTrace())
        page: LogRequest | None = request
        while page is not None:
            assert len(trace.requests) < max_pages, "paging does not terminate"
            trace.requests.append(page)
            lines = split_ndjson(serve_log(remote[page.author], page.author, page), page.limit)
            check_log_page(lines, page)
            records = decode_page(lines)
            if page is request:
                trace.first_page = records
            trace.seqs.extend(seq for seq, _ in records)
            apply_records(local, page.author, records)
            page = next_page(page, len(lines), claimed_last_seq(lines))
    return traces


def push(local: Node, remote: Node, theirs: Frontier) -> list[tuple[str, int]]:
    """L posts to P what P lacks according to P's frontier (SPEC 10.3 step 4)."""
    pushes = plan_pushes(heads_of(local), theirs)
    for author, after in pushes:
        request = LogRequest(author, after, MAX_PAGE_RECORDS)
        lines = split_ndjson(serve_log(local[author], author, request), MAX_PAGE_RECORDS)
        apply_records(remote, author, decode_page(lines))
    return pushes


def reconcile(local: Node, remote: Node, limit: int) -> dict[str, PullTrace]:
    """One exchange of L with P: P's frontier is read once, then pulls, then pushes."""
    theirs = parse_frontier(frontier_of(remote).to_json())
    traces = pull(local, remote, limit)
    push(local, remote, theirs)
    return traces


lengths = st.dictionaries(st.sampled_from(AUTHORS), st.integers(0, 12), max_size=4)


# --- the reconciliation simulation ----------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(local_lengths=lengths, remote_lengths=lengths, limit=st.integers(1, 5))
def test_one_exchange_gives_both_sides_the_union_of_prefix_logs(
    local_lengths: dict[str, int], remote_lengths: dict[str, int], limit: int
) -> None:
    local = {a: chain(a, n) for a, n in local_lengths.items() if n}
    remote = {a: chain(a, n) for a, n in remote_lengths.items() if n}
    authors = set(local) | set(remote)
    expected = {a: max((local.get(a, []), remote.get(a, [])), key=len) for a in authors}
    local_before = heads_of(local)

    traces = reconcile(local, remote, limit)

    assert local == expected
    assert remote == expected
    assert frontier_of(local).digest() == frontier_of(remote).digest()
    assert plan_pulls(heads_of(local), frontier_of(remote), limit) == []
    assert plan_pushes(heads_of(local), frontier_of(remote)) == []
    assert lag(heads_of(local), frontier_of(remote)) == (0, 0)
    for author, trace in traces.items():
        # The first page overlaps the local head by one record, each later page the page
        # before it by one, and no record is skipped: paging walks from the local head to
        # the remote's head, one seq back per page (none back with limit 1).
        start = local_before[author].seq if author in local_before else 1
        assert sorted(set(trace.seqs)) == list(range(start, len(remote[author]) + 1))
        assert len(trace.seqs) == len(set(trace.seqs)) + (len(trace.requests) - 1) * (limit > 1)
        assert all(r.limit == limit for r in trace.requests)
        if author in local_before:
            assert trace.requests[0].after == local_before[author].seq - 1
            assert trace.first_page[0] == (local_before[author].seq, local_before[author].id)


@settings(max_examples=50, deadline=None)
@given(local_lengths=lengths, remote_lengths=lengths, limit=st.integers(1, 5))
def test_reconcile_in_both_directions_is_idempotent(
    local_lengths: dict[str, int], remote_lengths: dict[str, int], limit: int
) -> None:
    local = {a: chain(a, n) for a, n in local_lengths.items() if n}
    remote = {a: chain(a, n) for a, n in remote_lengths.items() if n}
    reconcile(local, remote, limit)
    settled_local, settled_remote = copy.deepcopy(local), copy.deepcopy(remote)

    assert reconcile(remote, local, limit) == {}
    assert reconcile(local, remote, limit) == {}
    assert (local, remote) == (settled_local, settled_remote)


def test_paging_walks_a_long_log_in_pages_of_limit() -> None:
    local: Node = {ALICE: chain(ALICE, 2)}
    remote: Node = {ALICE: chain(ALICE, 11)}

    traces = pull(local, remote, limit=3)

    # each page starts at the last seq of the page before it (one seq back)
    assert [r.after for r in traces[ALICE].requests] == [1, 3, 5, 7, 9]
    assert traces[ALICE].seqs == [2, 3, 4, 4, 5, 6, 6, 7, 8, 8, 9, 10, 10, 11]
    assert local == remote


def test_paging_ends_with_a_page_that_holds_only_the_overlap() -> None:
    local: Node = {}
    remote: Node = {ALICE: chain(ALICE, 4)}

    traces = pull(local, remote, limit=2)

    # pages 1-2, 2-3, 3-4, then 4 alone (short) proves the end
    assert [r.after for r in traces[ALICE].requests] == [0, 1, 2, 3]
    assert local == remote


def test_plan_pulls_asks_for_a_fork_at_the_same_seq_from_one_before_the_head() -> None:
    local: Node = {ALICE: chain(ALICE, 5)}
    remote: Node = {ALICE: forked_chain(ALICE, 5, diverge_at=5, branch="evil")}
    mine, theirs = heads_of(local)[ALICE], heads_of(remote)[ALICE]
    assert (mine.seq, theirs.seq) == (5, 5)
    assert mine.id != theirs.id

    requests = plan_pulls(heads_of(local), frontier_of(remote), limit=10)

    assert requests == [LogRequest(ALICE, 4, 10)]
    lines = split_ndjson(serve_log(remote[ALICE], ALICE, requests[0]), 10)
    first_seq, first_id = decode_page(lines)[0]
    assert first_seq == mine.seq
    assert first_id != mine.id
    with pytest.raises(ForkFoundError):
        pull(local, remote, limit=10)


def test_a_diverging_longer_chain_is_found_as_a_fork_not_followed() -> None:
    local: Node = {ALICE: chain(ALICE, 3)}
    remote: Node = {ALICE: forked_chain(ALICE, 8, diverge_at=2, branch="evil")}

    with pytest.raises(ForkFoundError) as found:
        pull(local, remote, limit=2)

    assert found.value.args == (ALICE, 3)
    assert local == {ALICE: chain(ALICE, 3)}


def test_equal_heads_ask_for_nothing() -> None:
    node: Node = {ALICE: chain(ALICE, 4), BOB: chain(BOB, 1)}
    assert plan_pulls(heads_of(node), frontier_of(node)) == []
    assert plan_pushes(heads_of(node), frontier_of(node)) == []


@settings(max_examples=100, deadline=None)
@given(
    local_len=st.integers(1, 8),
    remote_len=st.integers(1, 8),
    diverge_at=st.integers(1, 9),
    limit=st.integers(1, 5),
)
def test_pull_finds_every_fork_at_or_below_the_local_head_when_the_remote_is_not_behind(
    local_len: int, remote_len: int, diverge_at: int, limit: int
) -> None:
    local: Node = {ALICE: chain(ALICE, local_len)}
    remote: Node = {ALICE: forked_chain(ALICE, remote_len, diverge_at, "evil")}
    fork_visible = diverge_at <= local_len <= remote_len

    try:
        traces = pull(local, remote, limit)
    except ForkFoundError as found:
        assert fork_visible
        assert found.args == (ALICE, local_len)
    else:
        assert not fork_visible
        if remote_len > local_len:
            assert traces[ALICE].first_page[0] == (local_len, record_id(ALICE, local_len))


# --- next_page ------------------------------------------------------------------------------


def test_next_page_is_none_after_a_short_page() -> None:
    assert next_page(LogRequest(ALICE, 0, 10), 9, 9) is None
    assert next_page(LogRequest(ALICE, 0, 10), 0, None) is None


def test_next_page_is_none_without_a_last_seq() -> None:
    assert next_page(LogRequest(ALICE, 0, 10), 10, None) is None


def test_next_page_starts_one_seq_back_from_the_last_seq_of_a_full_page() -> None:
    assert next_page(LogRequest(ALICE, 20, 10), 10, 30) == LogRequest(ALICE, 29, 10)


def test_next_page_always_moves_forward() -> None:
    """A full page that ends one past after (a page of one seq, or of one fork's two
    records) still moves the next page on by one."""
    assert next_page(LogRequest(ALICE, 20, 2), 2, 21) == LogRequest(ALICE, 21, 2)
    assert next_page(LogRequest(ALICE, 20, 1), 1, 21) == LogRequest(ALICE, 21, 1)


def serve_entries(entries: list[tuple[int, str]], request: LogRequest) -> list[tuple[int, str]]:
    """A log page of (seq, id) entries in seq order, two at a seq where the log forks."""
    return [e for e in entries if e[0] > request.after][: request.limit]


def page_through(entries: list[tuple[int, str]], limit: int) -> list[tuple[int, str]]:
    request: LogRequest | None = LogRequest(ALICE, 0, limit)
    received: list[tuple[int, str]] = []
    while request is not None:
        page = serve_entries(entries, request)
        received.extend(page)
        request = next_page(request, len(page), page[-1][0] if page else None)
    return received


def test_a_fork_whose_records_straddle_a_page_boundary_is_pulled_whole() -> None:
    """The first page ends with the fork's first record at seq 3; the second page starts
    at seq 3 again and brings its second record (paging after seq 3 would skip it)."""
    fork = [(1, "a"), (2, "b"), (3, "c"), (3, "c'"), (4, "d")]
    assert serve_entries(fork, LogRequest(ALICE, 0, 3))[-1] == (3, "c")
    assert set(page_through(fork, limit=3)) == set(fork)


@settings(max_examples=150, deadline=None)
@given(
    length=st.integers(1, 12),
    forks=st.sets(st.integers(1, 12), max_size=3),
    limit=st.integers(2, 5),
)
def test_paging_brings_every_record_of_a_forked_log(
    length: int, forks: set[int], limit: int
) -> None:
    entries = sorted([(n, "main") for n in range(1, length + 1)]
                     + [(n, "evil") for n in forks if n <= length])  # fmt: skip
    assert set(page_through(entries, limit)) == set(entries)


def test_next_page_never_asks_again_for_a_range_already_asked() -> None:
    """A full page whose claimed last seq is not past ``after`` ends the pull."""
    request = LogRequest(ALICE, 10, 2)
    try:
        following = next_page(request, 2, 10)
    except SyncError:
        return
    assert following is None or following.after > request.after


def test_pulling_from_a_peer_that_ignores_after_terminates() -> None:
    """End to end: a peer that always answers with the first page is not paged forever."""
    remote_log = chain(ALICE, 3)
    local: Node = {}
    request: LogRequest | None = plan_pulls({}, frontier_of({ALICE: remote_log}), limit=3)[0]
    pages = 0
    while request is not None and pages < 100:
        lines = split_ndjson(serve_log(remote_log, ALICE, LogRequest(ALICE, 0, 3)), 3)
        apply_records(local, ALICE, decode_page(lines))
        request = next_page(request, len(lines), claimed_last_seq(lines))
        pages += 1
    assert request is None


# --- plan_pushes and lag ------------------------------------------------------------------


def test_plan_pushes_sends_a_whole_log_the_remote_lacks_entirely() -> None:
    local: Node = {ALICE: chain(ALICE, 3)}
    assert plan_pushes(heads_of(local), frontier_of({})) == [(ALICE, 0)]
    assert lag(heads_of(local), frontier_of({})) == (0, 3)


def test_plan_pushes_sends_what_follows_the_remote_head_when_it_is_behind() -> None:
    local: Node = {ALICE: chain(ALICE, 7), BOB: chain(BOB, 2)}
    remote: Node = {ALICE: chain(ALICE, 4), BOB: chain(BOB, 2)}
    assert plan_pushes(heads_of(local), frontier_of(remote)) == [(ALICE, 4)]
    assert lag(heads_of(local), frontier_of(remote)) == (0, 3)


def test_plan_pushes_sends_nothing_when_the_remote_is_ahead() -> None:
    local: Node = {ALICE: chain(ALICE, 2)}
    remote: Node = {ALICE: chain(ALICE, 6), BOB: chain(BOB, 1)}
    assert plan_pushes(heads_of(local), frontier_of(remote)) == []
    assert lag(heads_of(local), frontier_of(remote)) == (5, 0)


def test_plan_pushes_sends_nothing_for_equal_seqs_even_with_other_ids() -> None:
    local: Node = {ALICE: chain(ALICE, 3)}
    remote: Node = {ALICE: forked_chain(ALICE, 3, 3, "evil")}
    assert plan_pushes(heads_of(local), frontier_of(remote)) == []
    assert lag(heads_of(local), frontier_of(remote)) == (0, 0)


def test_plan_pushes_and_lag_mix_authors_in_sorted_order() -> None:
    local: Node = {CAROL: chain(CAROL, 1), ALICE: chain(ALICE, 5), BOB: chain(BOB, 1)}
    remote: Node = {ALICE: chain(ALICE, 2), BOB: chain(BOB, 4), DAVE: chain(DAVE, 2)}
    expected = sorted([(ALICE, 2), (CAROL, 0)])
    assert plan_pushes(heads_of(local), frontier_of(remote)) == expected
    assert lag(heads_of(local), frontier_of(remote)) == (3 + 2, 3 + 1)


@settings(max_examples=100, deadline=None)
@given(local_lengths=lengths, remote_lengths=lengths)
def test_lag_counts_the_records_each_side_lacks(
    local_lengths: dict[str, int], remote_lengths: dict[str, int]
) -> None:
    local = {a: chain(a, n) for a, n in local_lengths.items() if n}
    remote = {a: chain(a, n) for a, n in remote_lengths.items() if n}
    behind = sum(max(0, len(remote[a]) - len(local.get(a, []))) for a in remote)
    ahead = sum(max(0, len(local[a]) - len(remote.get(a, []))) for a in local)
    assert lag(heads_of(local), frontier_of(remote)) == (behind, ahead)
    assert lag(heads_of(remote), frontier_of(local)) == (ahead, behind)


# --- capped_heads -------------------------------------------------------------------------


def id_in(node: Mapping[str, Log]) -> Callable[[str, int], str]:
    """The id_at of a node's store: the record it holds at (author, seq)."""
    return lambda author, seq: node[author][seq - 1]


@pytest.mark.parametrize(
    ("cap", "expected_seq"),
    [(None, 7), (9, 7), (7, 7), (4, 4), (1, 1), (0, None)],
    ids=["no-cap", "cap-above-head", "cap-at-head", "past-cap", "cap-1", "cap-0-left-out"],
)
def test_capped_heads_lists_an_author_past_its_cap_at_the_record_at_the_cap(
    cap: int | None, expected_seq: int | None
) -> None:
    node: Node = {ALICE: chain(ALICE, 7), BOB: chain(BOB, 3)}
    capped = capped_heads(heads_of(node), {ALICE: cap}, id_in(node))
    assert capped[BOB] == Head(BOB, 3, record_id(BOB, 3))  # not frozen: unchanged
    if expected_seq is None:
        assert ALICE not in capped
    else:
        assert capped[ALICE] == Head(ALICE, expected_seq, record_id(ALICE, expected_seq))


def test_capped_heads_looks_up_only_heads_past_their_cap() -> None:
    node: Node = {ALICE: chain(ALICE, 2), CAROL: chain(CAROL, 5)}
    asked: list[tuple[str, int]] = []

    def id_at(author: str, seq: int) -> str:
        asked.append((author, seq))
        return node[author][seq - 1]

    caps: dict[str, int | None] = {ALICE: 3, BOB: 1, CAROL: 2, DAVE: None}
    capped = capped_heads(heads_of(node), caps, id_at)
    assert asked == [(CAROL, 2)]  # ALICE is below its cap, BOB and DAVE are not held
    assert set(capped) == {ALICE, CAROL} and capped[CAROL].seq == 2


def test_nodes_that_stored_different_records_past_a_fork_report_equal_frontiers() -> None:
    """ALICE forked at seq 5: one node holds X5..X7 (accepted before it knew), another Y5.
    Uncapped their digests differ for ever and each plans to pull from the other; capped at
    seq 4 they are equal and plan nothing."""
    forks = ({"author": ALICE, "seq": 5, "records": ["x5", "y5"]},)
    x: Node = {ALICE: forked_chain(ALICE, 7, 5, "x"), BOB: chain(BOB, 2)}
    y: Node = {ALICE: forked_chain(ALICE, 5, 5, "y"), BOB: chain(BOB, 2)}
    assert Frontier(heads_of(x), forks).digest() != Frontier(heads_of(y), forks).digest()
    assert plan_pulls(heads_of(y), Frontier(heads_of(x), forks)) != []
    caps: dict[str, int | None] = {ALICE: 4}
    cx = Frontier(capped_heads(heads_of(x), caps, id_in(x)), forks)
    cy = Frontier(capped_heads(heads_of(y), caps, id_in(y)), forks)
    assert cx.digest() == cy.digest()
    assert plan_pulls(dict(cy.heads), cx) == [] and plan_pushes(dict(cy.heads), cx) == []


# --- parse_frontier -----------------------------------------------------------------------


def test_parse_frontier_round_trips_to_json() -> None:
    forks: tuple[dict[str, Any], ...] = ({"author": ALICE, "seq": 2, "records": ["a", "b"]},)
    frontier = Frontier(heads_of({ALICE: chain(ALICE, 3), BOB: chain(BOB, 1)}), forks)

    parsed = parse_frontier(frontier.to_json())

    assert parsed == frontier
    assert parsed.to_json() == frontier.to_json()
    assert parsed.digest() == frontier.digest()


def test_parse_frontier_accepts_the_valid_example() -> None:
    parsed = parse_frontier(valid_frontier_json())
    assert parsed.heads == {
        ALICE: Head(ALICE, 3, record_id(ALICE, 3)),
        BOB: Head(BOB, 1, record_id(BOB, 1)),
    }
    assert parsed.forks == ()


def test_frontier_to_json_sorts_heads_by_author() -> None:
    heads = heads_of({a: chain(a, 1) for a in reversed(AUTHORS)})
    listed = Frontier(heads).to_json()["heads"]
    assert isinstance(listed, list)
    assert [h["author"] for h in listed if isinstance(h, dict)] == sorted(AUTHORS)


def _head(value: dict[str, Any]) -> dict[str, Any]:
    return value["heads"][0]  # type: ignore[no-any-return]


def _set_head(key: str, item: Any) -> Callable[[dict[str, Any]], Any]:
    def mutate(value: dict[str, Any]) -> Any:
        _head(value)[key] = item
        return value

    return mutate


def _replace(key: str, item: Any) -> Callable[[dict[str, Any]], Any]:
    def mutate(value: dict[str, Any]) -> Any:
        value[key] = item
        return value

    return mutate


def _drop(key: str) -> Callable[[dict[str, Any]], Any]:
    def mutate(value: dict[str, Any]) -> Any:
        del value[key]
        return value

    return mutate


def _extra_head_key(value: dict[str, Any]) -> Any:
    _head(value)["extra"] = 1
    return value


def _drop_head_id(value: dict[str, Any]) -> Any:
    del _head(value)["id"]
    return value


def _duplicate_author(value: dict[str, Any]) -> Any:
    value["heads"].append(dict(_head(value), seq=9))
    return value


MALFORMED: dict[str, Callable[[dict[str, Any]], Any]] = {
    "list instead of object": lambda v: [v],
    "string instead of object": json.dumps,
    "none": lambda v: None,
    "missing heads": _drop("heads"),
    "missing forks": _drop("forks"),
    "heads is an object": _replace("heads", {ALICE: 3}),
    "heads is a string": _replace("heads", "[]"),
    "head is a list": _replace("heads", [[ALICE, 3, record_id(ALICE, 3)]]),
    "head with extra key": _extra_head_key,
    "head without id": _drop_head_id,
    "uppercase author": _set_head("author", ALICE.upper()),
    "uppercase id": _set_head("id", record_id(ALICE, 3).upper()),
    "short author": _set_head("author", ALICE[:-1]),
    "short id": _set_head("id", record_id(ALICE, 3)[:62]),
    "non-hex id": _set_head("id", "g" * 64),
    "author not a string": _set_head("author", 7),
    "seq 0": _set_head("seq", 0),
    "negative seq": _set_head("seq", -1),
    "seq true": _set_head("seq", True),
    "seq as string": _set_head("seq", "3"),
    "seq float": _set_head("seq", 3.0),
    "seq none": _set_head("seq", None),
    "duplicate author": _duplicate_author,
    "forks not a list": _replace("forks", {}),
    "forks holds a string": _replace("forks", ["a/1"]),
    "forks holds a list": _replace("forks", [[ALICE, 1]]),
}


@pytest.mark.parametrize("mutate", MALFORMED.values(), ids=list(MALFORMED))
def test_parse_frontier_refuses_malformations_with_sync_error(
    mutate: Callable[[dict[str, Any]], Any],
) -> None:
    with pytest.raises(SyncError):
        parse_frontier(mutate(valid_frontier_json()))


def test_parse_frontier_refuses_too_many_authors() -> None:
    with pytest.raises(SyncError):
        parse_frontier({"heads": [None] * (MAX_FRONTIER_AUTHORS + 1), "forks": []})


def test_parse_frontier_ignores_unknown_top_level_keys_like_digest() -> None:
    value = valid_frontier_json() | {"digest": "ab" * 32}
    assert parse_frontier(value) == parse_frontier(valid_frontier_json())


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from([ALICE, ALICE.upper(), ALICE[:63], record_id(BOB, 1)])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
head_like = st.dictionaries(
    st.sampled_from(["author", "seq", "id", "extra"]),
    json_scalars,
    min_size=2,
    max_size=4,
)
frontier_like = st.fixed_dictionaries(
    {"heads": st.lists(head_like, max_size=3) | json_values, "forks": json_values}
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, frontier_like))
def test_parse_frontier_returns_a_valid_frontier_or_raises_sync_error(value: object) -> None:
    try:
        frontier = parse_frontier(value)
    except SyncError:
        return
    assert isinstance(value, dict)
    assert isinstance(value["heads"], list)
    assert len(frontier.heads) == len(value["heads"])
    for author, head in frontier.heads.items():
        assert head.author == author
        assert len(author) == 64 and author == author.lower()
        assert len(head.id) == 64 and int(head.id, 16) >= 0 and head.id == head.id.lower()
        assert type(head.seq) is int and head.seq >= 1
    assert all(isinstance(f, dict) for f in frontier.forks)


# --- frontier_digest ----------------------------------------------------------------------

head_lists = st.lists(
    st.builds(
        lambda a, n, b: Head(a, n, record_id(a, n, b)),
        st.sampled_from(AUTHORS),
        st.integers(1, 50),
        st.sampled_from(["main", "other"]),
    ),
    unique_by=lambda h: h.author,
    min_size=1,
)


def spec_digest(heads: list[Head], forks: list[dict[str, JsonValue]]) -> str:
    """SPEC 10.2, independently: SHA-256 of JCS(heads sorted by author, sorted fork names)."""
    body = {
        "heads": [
            {"author": h.author, "seq": h.seq, "id": h.id}
            for h in sorted(heads, key=lambda h: h.author)
        ],
        "forks": sorted(f"{f['author']}/{f['seq']}" for f in forks),
    }
    # for ASCII strings and small integers, JCS is sorted keys without whitespace
    jcs = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(jcs).hexdigest()


@settings(max_examples=100, deadline=None)
@given(heads=head_lists, data=st.data())
def test_frontier_digest_is_independent_of_head_order(
    heads: list[Head], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(heads))
    assert frontier_digest(heads) == frontier_digest(shuffled)
    assert Frontier({h.author: h for h in shuffled}).digest() == frontier_digest(heads)
    assert frontier_digest(heads) == spec_digest(heads, [])


@settings(max_examples=100, deadline=None)
@given(heads=head_lists, index=st.integers(0, 3), bump=st.integers(1, 5))
def test_frontier_digest_changes_when_a_head_seq_changes(
    heads: list[Head], index: int, bump: int
) -> None:
    i = index % len(heads)
    changed = list(heads)
    changed[i] = Head(heads[i].author, heads[i].seq + bump, heads[i].id)
    assert frontier_digest(changed) != frontier_digest(heads)


@settings(max_examples=100, deadline=None)
@given(heads=head_lists, index=st.integers(0, 3))
def test_frontier_digest_changes_when_a_head_id_changes(heads: list[Head], index: int) -> None:
    i = index % len(heads)
    changed = list(heads)
    changed[i] = Head(heads[i].author, heads[i].seq, hexid(heads[i].id))
    assert frontier_digest(changed) != frontier_digest(heads)


@settings(max_examples=50, deadline=None)
@given(heads=head_lists, seq=st.integers(1, 50))
def test_frontier_digest_changes_when_a_fork_is_added(heads: list[Head], seq: int) -> None:
    fork: dict[str, JsonValue] = {"author": heads[0].author, "seq": seq, "records": ["x", "y"]}
    assert frontier_digest(heads, [fork]) != frontier_digest(heads)
    assert Frontier({h.author: h for h in heads}, (fork,)).digest() == spec_digest(heads, [fork])


def test_frontier_digest_is_independent_of_fork_order() -> None:
    heads = list(heads_of({ALICE: chain(ALICE, 2)}).values())
    forks: list[dict[str, JsonValue]] = [{"author": ALICE, "seq": 2}, {"author": BOB, "seq": 1}]
    assert frontier_digest(heads, forks) == frontier_digest(heads, list(reversed(forks)))


def test_frontier_digest_of_different_authors_differs() -> None:
    assert frontier_digest([Head(ALICE, 1, record_id(ALICE, 1))]) != frontier_digest(
        [Head(BOB, 1, record_id(ALICE, 1))]
    )


# --- parse_log_request ----------------------------------------------------------------------


def test_parse_log_request_defaults() -> None:
    assert parse_log_request(None, None, MAX_PAGE_RECORDS) == (0, DEFAULT_PAGE_RECORDS)


def test_parse_log_request_accepts_the_bounds() -> None:
    assert parse_log_request("0", "1", MAX_PAGE_RECORDS) == (0, 1)
    assert parse_log_request("17", str(MAX_PAGE_RECORDS), MAX_PAGE_RECORDS) == (
        17,
        MAX_PAGE_RECORDS,
    )
    assert parse_log_request("5", "10", 10) == (5, 10)


@pytest.mark.parametrize(
    ("after", "limit", "maximum"),
    [
        (None, "0", MAX_PAGE_RECORDS),
        (None, "-1", MAX_PAGE_RECORDS),
        (None, str(MAX_PAGE_RECORDS + 1), MAX_PAGE_RECORDS),
        (None, "11", 10),
        (None, None, 10),  # the default (1000) exceeds a small maximum
        ("-1", None, MAX_PAGE_RECORDS),
        ("abc", None, MAX_PAGE_RECORDS),
        ("1.5", None, MAX_PAGE_RECORDS),
        ("", None, MAX_PAGE_RECORDS),
        (None, "ten", MAX_PAGE_RECORDS),
        (None, "2e3", MAX_PAGE_RECORDS),
        (None, "", MAX_PAGE_RECORDS),
    ],
)
def test_parse_log_request_refuses_out_of_range_or_non_integers(
    after: str | None, limit: str | None, maximum: int
) -> None:
    with pytest.raises(SyncError):
        parse_log_request(after, limit, maximum)


@settings(max_examples=200, deadline=None)
@given(after=st.none() | st.text(max_size=6), limit=st.none() | st.text(max_size=6))
def test_parse_log_request_returns_bounded_integers_or_raises_sync_error(
    after: str | None, limit: str | None
) -> None:
    try:
        after_n, limit_n = parse_log_request(after, limit, 100)
    except SyncError:
        return
    assert after_n >= 0
    assert 1 <= limit_n <= 100


# --- NDJSON -----------------------------------------------------------------------------------

ndjson_lines = st.lists(
    st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b" ")), max_size=10
)


@settings(max_examples=100, deadline=None)
@given(lines=ndjson_lines)
def test_ndjson_round_trips(lines: list[bytes]) -> None:
    body = join_ndjson(lines)
    assert body.count(b"\n") == len(lines)
    assert split_ndjson(body, 10) == lines


def test_ndjson_of_nothing_is_empty() -> None:
    assert join_ndjson([]) == b""
    assert split_ndjson(b"", 0) == []


def test_split_ndjson_accepts_a_line_of_exactly_the_maximum_size() -> None:
    line = b"x" * MAX_RECORD_BYTES
    assert split_ndjson(line + b"\n", 1) == [line]


def test_split_ndjson_accepts_exactly_max_records() -> None:
    assert split_ndjson(b"a\nb\nc\n", 3) == [b"a", b"b", b"c"]


def test_split_ndjson_leaves_an_oversize_line_to_per_line_verification() -> None:
    """Framing only: an oversize line is a record that fails 4.2 step 1 on its own."""
    big = b"x" * (MAX_RECORD_BYTES + 1)
    assert split_ndjson(b"a\n" + big + b"\nb\n", 10) == [b"a", big, b"b"]


@pytest.mark.parametrize(
    ("body", "max_records"),
    [
        (b"a\nb", 10),  # no trailing newline
        (b"a", 10),
        (b"\n", 10),  # one blank line
        (b"a\n\nb\n", 10),  # blank line in the middle
        (b"a\nb\n\n", 10),  # blank line at the end
        (b"a\nb\nc\nd\n", 3),  # too many records
        (b"a\n", 0),
    ],
    ids=[
        "no-newline",
        "single-no-newline",
        "only-newline",
        "blank-middle",
        "blank-end",
        "too-many",
        "max-zero",
    ],
)
def test_split_ndjson_refuses_malformed_bodies(body: bytes, max_records: int) -> None:
    with pytest.raises(SyncError):
        split_ndjson(body, max_records)


# --- claimed_last_seq and check_log_page ------------------------------------------------------


def test_claimed_last_seq_reads_the_last_line() -> None:
    lines = [b'{"seq":3}', b'{"seq":4,"id":"x"}']
    assert claimed_last_seq(lines) == 4


@pytest.mark.parametrize(
    "lines",
    [
        [],
        [b"not json"],
        [b'{"seq":2}', b"{"],
        [b"[1,2]"],
        [b"7"],
        [b'"seq"'],
        [b"null"],
        [b"{}"],
        [b'{"seq":0}'],
        [b'{"seq":-3}'],
        [b'{"seq":2.0}'],
        [b'{"seq":"5"}'],
        [b'{"seq":true}'],
        [b'{"seq":null}'],
        [b'{"seq":99999999999999999999999}'],
        [b"\xff\xfe"],
        [b"[" * 2000],
    ],
    ids=[
        "empty",
        "not-json",
        "last-truncated",
        "array",
        "number",
        "string",
        "null",
        "no-seq",
        "seq-zero",
        "seq-negative",
        "seq-float",
        "seq-string",
        "seq-bool",
        "seq-null",
        "seq-huge",
        "invalid-utf8",
        "deep",
    ],
)
def test_claimed_last_seq_is_none_without_a_positive_integer_seq(lines: list[bytes]) -> None:
    assert claimed_last_seq(lines) is None


def test_claimed_last_seq_ignores_earlier_lines() -> None:
    assert claimed_last_seq([b'{"seq":9}', b"garbage"]) is None


def test_check_log_page_accepts_up_to_the_limit() -> None:
    request = LogRequest(ALICE, 0, 2)
    check_log_page([], request)
    check_log_page([b"a", b"b"], request)


def test_check_log_page_refuses_more_lines_than_asked_for() -> None:
    with pytest.raises(SyncError):
        check_log_page([b"a", b"b", b"c"], LogRequest(ALICE, 0, 2))


def test_log_request_query_names_after_and_limit() -> None:
    assert LogRequest(ALICE, 4, 25).query() == {"after": "4", "limit": "25"}
    assert parse_log_request(**LogRequest(ALICE, 4, 25).query(), maximum=100) == (4, 25)


# --- is_misbehaviour ----------------------------------------------------------------------


@pytest.mark.parametrize("error", [MembershipError, SeqGapError, PrevMismatchError])
def test_view_dependent_rejections_are_not_misbehaviour(error: type[RemoteProtocolError]) -> None:
    assert not is_misbehaviour(error("differs in our views").to_json())


@pytest.mark.parametrize("error", [SignatureError, SchemaError, MalformedJsonError, SyncError])
def test_invalid_data_is_misbehaviour(error: type[RemoteProtocolError]) -> None:
    assert is_misbehaviour(error("bad data").to_json())


def test_no_error_is_not_misbehaviour() -> None:
    assert not is_misbehaviour(None)


def test_view_dependent_error_names_are_real_error_classes() -> None:
    for name in VIEW_DEPENDENT_ERRORS:
        cls = getattr(errors_module, name, None)
        assert isinstance(cls, type) and issubclass(cls, RemoteProtocolError), name
        assert cls("x").code == name


# --- push_width ---------------------------------------------------------------------------

OWN = hexid("test_sync own node key")


@pytest.mark.parametrize("source", [None, OWN, ALICE, BOB])
def test_push_width_sends_own_records_to_every_peer(source: str | None) -> None:
    assert push_width(OWN, source=source, own_key=OWN, fanout=3) is None


def test_push_width_relays_a_record_from_its_author_to_one_peer() -> None:
    assert push_width(ALICE, source=ALICE, own_key=OWN, fanout=3) == 1


@pytest.mark.parametrize("source", [None, BOB, OWN])
@pytest.mark.parametrize("fanout", [0, 3, 7])
def test_push_width_relays_other_records_to_fanout_peers(source: str | None, fanout: int) -> None:
    assert push_width(ALICE, source=source, own_key=OWN, fanout=fanout) == fanout
