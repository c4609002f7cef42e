"""The peer wire against real TLS nodes (issue 13 items 5, 8, 9, 13; issue 14's last bullet).

One federation for the module: members ``a``, ``b`` and ``c`` and an auditor ``audit``, all
serving HTTPS with pinned keys. ``a``, ``b`` and ``audit`` run as ``hashmesh serve``
processes; ``c`` never runs: the tests sign ``c``'s records and push them to ``a``. ``a`` has
short read deadlines (``[limits] header_timeout_s``, ``body_timeout_s``) so slow clients are
cut within seconds. Every request is made by this test with its own signature and its own
TLS connection, pinned like a peer's (``node.net.tls.connect_pinned``).
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import NodeProc, found_federation, hm, wait_until
from peer_signing import DEVIATIONS, sign_deviant
from prometheus_client.parser import text_string_to_metric_families

from node.audit.sources import PeerClient
from node.home import NodeHome
from node.net.httpsig import sign_request
from node.net.tls import connect_pinned
from protocol.bodies import SignalBody
from protocol.keys import SigningKey
from protocol.records import Record, sign_record

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Wire:
    a: NodeProc
    b: NodeProc
    audit: NodeProc
    fed_id: str
    c: SigningKey  # a member whose node never runs: these tests author its records
    auditor: SigningKey
    c_log: list[Record] = field(default_factory=list)

    def next_c_record(self, n: int) -> Record:
        """c's next record (a signal with a distinct md5 value)."""
        prev = self.c_log[-1].id if self.c_log else None
        body = SignalBody("md5", f"{n:032x}", ("entity:test",))
        record = sign_record(self.c, fed=self.fed_id, seq=len(self.c_log) + 1, prev=prev,
                             ts=1_763_800_000_000 + n, body=body)  # fmt: skip
        self.c_log.append(record)
        return record


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    root = tmp_path_factory.mktemp("peer_wire")
    federation, nodes = found_federation(root, ["a", "b", "c"], auditors=["audit"], tls=True)
    a, b, c, audit = nodes
    limits = f"[limits]\nheader_timeout_s = {HEADER_TIMEOUT_S}\nbody_timeout_s = {BODY_TIMEOUT_S}\n"
    (a.home / "config.toml").write_text((a.home / "config.toml").read_text() + limits)
    running = [a, b, audit]
    try:
        for node in running:
            node.start()
        keys = NodeHome(c.home).key(), NodeHome(audit.home).key()
        yield Wire(a, b, audit, federation.id, *keys)
    finally:
        for node in running:
            node.stop()


def https(node: NodeProc, method: str, path: str, body: bytes = b"", **headers: str) -> Answer:
    """One request to node's TLS listener, pinned to its key; ``Host`` may be overridden."""
    connection = connect_pinned("127.0.0.1", node.port, node.spki)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def signed(
    key: SigningKey, method: str, url: str, body: bytes = b"", *, skew_s: float = 0.0
) -> dict[str, str]:
    return sign_request(key, method, url, body, now_s=time.time() + skew_s)


def problem(answer: Answer, status: int) -> dict[str, object]:
    code, headers, body = answer
    assert code == status, (code, body[:300])
    assert headers["Content-Type"].startswith("application/problem+json")
    parsed: dict[str, object] = json.loads(body)
    assert parsed["status"] == status
    return parsed


def records_of(node: NodeProc) -> int:
    return int(node.api("GET", "/v1/status")["store"]["records"])


def timed_out(node: NodeProc) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.local_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hashmesh_requests_timed_out_total":
                return float(sample.value)
    raise AssertionError("no hashmesh_requests_timed_out_total metric")


# ---- a request is bound to the node it was signed for (issue 13 item 8) --------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_request_signed_for_another_node_is_refused_there(wire: Wire, method: str) -> None:
    a, b = wire.a, wire.b
    path = "/v1/heads" if method == "GET" else "/v1/records?relay=0"
    headers = signed(wire.auditor, method, b.url + path.lstrip("/"))
    before = records_of(a)
    assert https(b, method, path, **headers)[0] == 200  # b, for whom it was signed, answers
    replayed = https(a, method, path, **headers, Host=f"127.0.0.1:{b.port}")
    assert "answers only to" in str(problem(replayed, 421)["detail"])
    fresh = signed(wire.auditor, method, b.url + path.lstrip("/"))  # never used at b either
    assert https(a, method, path, **fresh, Host=f"127.0.0.1:{b.port}")[0] == 421
    assert records_of(a) == before


def test_a_request_signed_for_a_made_up_authority_is_refused(wire: Wire) -> None:
    made_up = "https://hashmesh.made-up.example:7400/"
    headers = signed(wire.auditor, "GET", made_up + "v1/heads")
    answer = https(wire.a, "GET", "/v1/heads", **headers, Host="hashmesh.made-up.example:7400")
    assert "hashmesh.made-up.example" in str(problem(answer, 421)["detail"])


# ---- the clock window is +-300 s both ways (issue 13 item 9) --------------------------------


def test_a_peer_whose_clock_is_6_s_fast_syncs(wire: Wire) -> None:
    """Pull everything, then push a new record, every request created 6 s in the future."""
    a = wire.a
    with PeerClient(a.url, wire.auditor, clock=lambda: time.time() + 6, pin=a.spki) as fast:
        heads = fast.get_json("/v1/heads")
        assert isinstance(heads, dict) and isinstance(heads["heads"], list)
        for head in heads["heads"]:
            assert len(fast.log(head["author"], head["seq"])) == head["seq"]
    record = wire.next_c_record(9)
    body = record.canonical + b"\n"
    headers = signed(wire.c, "POST", a.url + "v1/records", body, skew_s=6)
    status, _, answer = https(a, "POST", "/v1/records", body, **headers)
    assert status == 200, answer[:300]
    assert json.loads(answer)["counts"]["accepted"] == 1
    wait_until(
        lambda: record.id in {s["id"] for s in a.api("GET", "/v1/signals?limit=100")["signals"]}
    )


# ---- the RFC 9421 profile and the query are enforced (issue 14) ----------------------------


@pytest.mark.parametrize("deviation", list(DEVIATIONS))
def test_a_node_refuses_every_deviation_from_the_signature_profile(
    wire: Wire, deviation: str
) -> None:
    a = wire.a
    headers = sign_deviant(wire.auditor, "GET", a.url + "v1/heads", b"", deviation,
                           now_s=time.time())  # fmt: skip
    answer = https(a, "GET", "/v1/heads", **headers)
    if deviation == "none":  # a signature made from the SPEC alone, not by node.httpsig
        assert answer[0] == 200, answer[2][:300]
    else:
        problem(answer, 401)


@pytest.mark.parametrize(
    ("method", "query", "name"),
    [
        ("GET", "after=0&after=5", "after"),
        ("GET", "limit=10&after=0&limit=20", "limit"),
        ("POST", "relay=0&relay=1", "relay"),
    ],
)
def test_a_repeated_query_parameter_is_refused_by_name(
    wire: Wire, method: str, query: str, name: str
) -> None:
    a = wire.a
    path = (f"/v1/log/{a.key}" if method == "GET" else "/v1/records") + "?" + query
    answer = https(a, method, path, **signed(wire.auditor, method, a.url + path.lstrip("/")))
    refused = problem(answer, 400)
    assert refused["field"] == name and f"'{name}'" in str(refused["detail"]), refused


# ---- an oversize line is one line's rejection (issue 13 item 13) ----------------------------


def test_an_oversize_line_is_rejected_alone_and_the_valid_lines_are_stored(wire: Wire) -> None:
    a = wire.a
    first, second = wire.next_c_record(1), wire.next_c_record(2)
    oversize = b'{"padding":"' + b"x" * 9000 + b'"}'
    body = first.canonical + b"\n" + oversize + b"\n" + second.canonical + b"\n"
    answer = https(
        a, "POST", "/v1/records", body, **signed(wire.c, "POST", a.url + "v1/records", body)
    )
    refused = problem(answer, 422)
    assert refused["counts"] == {"accepted": 2, "duplicate": 0, "pending": 0, "rejected": 1}
    [outcome] = refused["outcomes"]  # type: ignore[misc]
    assert (outcome["index"], outcome["status"], outcome["id"]) == (1, "rejected", None)
    assert outcome["error"]["error"] == "OversizeError" and outcome["error"]["detail"]
    stored = {s["id"] for s in a.api("GET", "/v1/signals?limit=100")["signals"]}
    assert {first.id, second.id} <= stored


# ---- frontier deltas (SPEC 10.2) --------------------------------------------------------------


def get_heads(wire: Wire, **headers: str) -> tuple[int, dict[str, Any]]:
    """a's /v1/heads answer to the auditor, with these extra headers."""
    auth = signed(wire.auditor, "GET", wire.a.url + "v1/heads")
    status, _, body = https(wire.a, "GET", "/v1/heads", **auth, **headers)
    return status, json.loads(body) if body else {}


def test_an_asker_that_reads_deltas_gets_only_what_changed_since_its_frontier(
    wire: Wire,
) -> None:
    a = wire.a
    _, before = get_heads(wire)  # a remembers the frontiers it answers
    record = wire.next_c_record(20)
    body = record.canonical + b"\n"
    pushed = https(a, "POST", "/v1/records?relay=0", body,
                   **signed(wire.c, "POST", a.url + "v1/records?relay=0", body))  # fmt: skip
    assert pushed[0] == 200, pushed[2][:300]
    _, full = get_heads(wire)
    assert {"author": wire.c.public, "seq": record.seq, "id": record.id} in full["heads"]
    since = {"If-None-Match": f'"{before["digest"]}"'}
    status, delta = get_heads(wire, **since, **{"Hm-Recent": ""})
    assert status == 200
    assert (delta["since"], delta["digest"]) == (before["digest"], full["digest"])
    assert delta["authors"] == [wire.c.public]  # only c's head moved
    assert delta["heads"] == [{"author": wire.c.public, "seq": record.seq, "id": record.id}]
    assert delta["forks"] == full["forks"]
    # an asker that does not send Hm-Recent (a node from before deltas) gets everything
    assert get_heads(wire, **since) == (200, full)
    # a's frontier is one the asker had: "at"
    recent = {"Hm-Recent": f"{'1' * 16}, {str(full['digest'])[:16]}"}
    status, at = get_heads(wire, **{"If-None-Match": f'"{"0" * 64}"'}, **recent)
    assert (status, at) == (200, {"at": full["digest"], "digest": full["digest"]})
    counters = a.api("GET", "/v1/status")["counters"]
    assert counters["heads_delta"] >= 1 and counters["heads_at"] >= 1


def test_a_malformed_hm_recent_is_refused(wire: Wire) -> None:
    a = wire.a
    answer = https(a, "GET", "/v1/heads", **signed(wire.auditor, "GET", a.url + "v1/heads"),
                   **{"Hm-Recent": "not-a-digest"})  # fmt: skip
    assert problem(answer, 400)["field"] == "Hm-Recent"


# ---- read deadlines on both listeners (issue 14) --------------------------------------------


def connect(node: NodeProc, listener: str) -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", node.port if listener == "tls" else node.local_port)
    )
    if listener == "plain":
        return sock
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # this test only trickles bytes; nothing is trusted
    return context.wrap_socket(sock)


def trickle(sock: socket.socket, data: bytes, *, interval_s: float, within_s: float) -> bytes:
    """Send data one byte per interval until the server answers or closes; what it sent
    (b"" if it closed without an answer). Fails if it does neither within within_s."""
    deadline = time.monotonic() + within_s
    received = b""
    sock.settimeout(interval_s)
    for byte in data:
        if time.monotonic() > deadline:
            break
        try:
            sock.sendall(bytes([byte]))
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionError, ssl.SSLError):
            return received
        if not chunk:
            return received
        received += chunk
        return received + read_to_close(sock, deadline)
    raise AssertionError(f"still open after {within_s} s, received {received[:200]!r}")


def read_to_close(sock: socket.socket, deadline: float) -> bytes:
    received = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionError, ssl.SSLError):
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the connection stayed open after {received[:200]!r}")


@pytest.mark.parametrize("listener", ["tls", "plain"])
def test_slow_request_headers_are_cut(wire: Wire, listener: str) -> None:
    a = wire.a
    before = timed_out(a)
    sock = connect(a, listener)
    try:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = trickle(sock, b"X-Slow: " + b"a" * 200, interval_s=0.25,
                         within_s=HEADER_TIMEOUT_S + 8)  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert answer == b"" and elapsed >= HEADER_TIMEOUT_S - 0.5, (answer, elapsed)
    wait_until(lambda: timed_out(a) >= before + 1)
    assert a.api("GET", "/v1/status")["node"]  # the node is unharmed


@pytest.mark.parametrize("listener", ["tls", "plain"])
def test_a_slow_request_body_is_answered_408_and_closed(wire: Wire, listener: str) -> None:
    a = wire.a
    before = timed_out(a)
    sock = connect(a, listener)
    try:
        head = b"POST /v1/records HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 200\r\n"
        sock.sendall(head + b"Content-Type: application/x-ndjson\r\n\r\n")
        answer = trickle(sock, b"{" * 200, interval_s=0.25, within_s=BODY_TIMEOUT_S + 8)
    finally:
        sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b"application/problem+json" in head and b"did not arrive" in body, answer[:500]
    wait_until(lambda: timed_out(a) >= before + 1)


# ---- live audit of a TLS node (issue 13 item 5) ---------------------------------------------


def test_live_audit_of_a_tls_node_pinned_by_the_url(wire: Wire, tmp_path: Path) -> None:
    a, b = wire.a, wire.b
    home = tmp_path / "auditor"  # the auditor's key and federation, but no database
    shutil.copytree(wire.audit.home, home, ignore=shutil.ignore_patterns("hashmesh.db*", "*.log"))
    pinned = hm("audit", "--node", f"{a.url}#spki={a.spki}", "--home", home, "--json")
    assert pinned.returncode == 0, pinned.stdout[-2000:] + pinned.stderr[-2000:]
    out = json.loads(pinned.stdout)
    assert (out["kind"], out["clean"]) == ("node", True) and out["counts"]["valid"] > 0
    unpinned = hm("audit", "--node", a.url, "--home", home, "--json")
    assert unpinned.returncode == 2 and "no TLS pin" in unpinned.stderr, unpinned.stderr
    wrong = hm("audit", "--node", f"{a.url}#spki={b.spki}", "--home", home, "--json")
    assert wrong.returncode == 2 and "TLS pin mismatch" in wrong.stderr, wrong.stderr


def test_live_audit_of_a_tls_node_pinned_by_its_members_announce(wire: Wire) -> None:
    a, audit = wire.a, wire.audit
    pinned = {"pin": a.spki, "source": "announce"}
    wait_until(lambda: any(p["url"] == a.url and p["tls"] == pinned
                           for p in audit.api("GET", "/v1/status")["peers"]))  # fmt: skip
    result = hm("audit", "--node", a.url, "--home", audit.home, "--json")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert json.loads(result.stdout)["clean"] is True
