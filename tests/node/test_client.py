"""node.net.client against a real HTTP/1.1 server on 127.0.0.1 (the standard library's, in a
thread): JSON, NDJSON lines, problem bodies, an unreachable node, kept-alive connections and
a connection the server dropped while idle, and https refused without a pin; the audit's
``PeerClient.log`` paging a log (``protocol.sync.next_page``, one seq back per page)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from node.audit.sources import PeerClient
from node.errors import ApiError, ConfigError
from node.net.client import NodeClient, bearer
from node.net.tls import TlsRefusedError
from protocol.keys import SigningKey
from protocol.sync import MAX_PAGE_RECORDS

AUDITOR = SigningKey(bytes(range(32)))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, str, dict[str, str], int]]  # method, path, headers, client port
    log: list[bytes]  # what GET /v1/log/{author} pages through, in seq order
    ignore_after: bool  # a node that answers the first page whatever is asked


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def _answer(self, body: bytes) -> None:
        self.server.seen.append(
            (self.command, self.path, dict(self.headers), self.client_address[1])
        )
        status, answer = 200, json.dumps({"path": self.path, "body": body.decode()}).encode()
        if self.path == "/problem":
            status = 409
            answer = b'{"type":"about:blank","title":"conflict","detail":"not now"}'
        elif self.path == "/lines":
            answer = b'{"a":1}\n\n{"b":2}\n'
        elif self.path == "/text":
            answer = b"plain words"
        elif self.path.startswith("/v1/log/"):
            answer = self._log_page()
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        if self.path == "/drop":  # answered, then the connection dropped without a word
            self.close_connection = True

    def _log_page(self) -> bytes:
        query = {k: int(v[0]) for k, v in parse_qs(urlsplit(self.path).query).items()}
        after = 0 if self.server.ignore_after else query["after"]
        page = [line for line in self.server.log if json.loads(line)["seq"] > after]
        return b"".join(line + b"\n" for line in page[: query["limit"]])


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.seen, httpd.log, httpd.ignore_after = [], [], False
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def url_of(server: Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


def test_json_in_and_out_with_a_bearer_token(server: Server) -> None:
    client = NodeClient(url_of(server), bearer("s3cret"))
    assert client.call("POST", "/echo", {"x": 1}) == {"path": "/echo", "body": '{"x": 1}'}
    assert client.call("GET", "/echo?a=b") == {"path": "/echo?a=b", "body": ""}
    (_, _, posted, _), (_, _, got, _) = server.seen
    assert posted["Authorization"] == got["Authorization"] == "Bearer s3cret"
    assert posted["Content-Type"] == "application/json" and "Content-Type" not in got


def test_a_query_is_encoded_and_raw_bodies_keep_their_type(server: Server) -> None:
    client = NodeClient(url_of(server))
    answer = client.call_raw("POST", "/in", b"a\nb\n", "application/x-ndjson", query={"u": "a b&c"})
    assert json.loads(answer) == {"path": "/in?u=a+b%26c", "body": "a\nb\n"}
    assert server.seen[0][2]["Content-Type"] == "application/x-ndjson"


def test_ndjson_lines_stream_without_blank_lines(server: Server) -> None:
    assert list(NodeClient(url_of(server)).lines("/lines")) == [b'{"a":1}', b'{"b":2}']


def test_a_problem_answer_is_an_api_error_with_its_status_and_detail(server: Server) -> None:
    with pytest.raises(ApiError) as refused:
        NodeClient(url_of(server)).call("GET", "/problem")
    assert refused.value.status == 409 and str(refused.value) == "node answered 409: not now"


def test_an_answer_that_is_not_json(server: Server) -> None:
    with pytest.raises(ApiError, match="is not JSON"):
        NodeClient(url_of(server)).call("GET", "/text")


def test_an_unreachable_node_is_a_config_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: nothing answers
        with pytest.raises(ConfigError, match=f"cannot reach the node at http://127.0.0.1:{port}"):
            NodeClient(f"http://127.0.0.1:{port}/").call("GET", "/v1/status")


def test_without_with_every_request_has_its_own_connection(server: Server) -> None:
    client = NodeClient(url_of(server))
    client.call("GET", "/one")
    client.call("GET", "/two")
    assert server.seen[0][3] != server.seen[1][3]


def test_with_keeps_one_connection_and_replaces_one_dropped_while_idle(server: Server) -> None:
    signed: list[str] = []

    def authorise(method: str, url: str, body: bytes) -> dict[str, str]:
        signed.append(url)
        return {"Signature": str(len(signed))}

    with NodeClient(url_of(server), authorise) as client:
        client.call("GET", "/one")
        client.call("GET", "/drop")
        assert client.call("GET", "/three") == {"path": "/three", "body": ""}
    ports = [port for *_, port in server.seen]
    assert ports[0] == ports[1] != ports[2]  # kept alive, then a new one after the drop
    base = url_of(server).rstrip("/")
    # /three was signed twice: for the dropped connection, then afresh for the new one
    assert signed == [f"{base}/one", f"{base}/drop", f"{base}/three", f"{base}/three"]
    assert [headers["Signature"] for _, _, headers, _ in server.seen] == ["1", "2", "4"]


def test_https_without_a_pin_is_refused_before_connecting() -> None:
    with pytest.raises(TlsRefusedError, match="no TLS pin"):
        NodeClient("https://127.0.0.1:9/").call("GET", "/v1/heads")


# ---- the audit's log paging ----------------------------------------------------------------


def entry(seq: int, fork: str = "") -> bytes:
    return json.dumps({"seq": seq, "fork": fork}).encode()


def afters(server: Server) -> list[int]:
    return [int(parse_qs(urlsplit(path).query)["after"][0]) for _, path, _, _ in server.seen]


def test_the_audit_keeps_both_records_of_a_fork_at_a_page_boundary(server: Server) -> None:
    fork_seq = MAX_PAGE_RECORDS  # the first page ends with one of the fork's two records
    server.log = [entry(n) for n in range(1, fork_seq + 1)] + [entry(fork_seq, "second")]
    server.log += [entry(n) for n in range(fork_seq + 1, fork_seq + 11)]
    with PeerClient(url_of(server), AUDITOR) as client:
        kept = client.log("author", fork_seq + 10)
    assert kept == server.log  # every line once, the second fork record too
    assert afters(server) == [0, fork_seq - 1]  # the second page starts one seq back


def test_the_audit_stops_at_the_frontier_it_was_given(server: Server) -> None:
    server.log = [entry(n) for n in range(1, 2 * MAX_PAGE_RECORDS + 1)]
    with PeerClient(url_of(server), AUDITOR) as client:
        kept = client.log("author", MAX_PAGE_RECORDS - 3)
    assert kept == server.log[: MAX_PAGE_RECORDS - 3] and afters(server) == [0]


def test_a_node_that_ignores_after_cannot_keep_the_audit_paging(server: Server) -> None:
    server.log, server.ignore_after = [entry(n) for n in range(1, 3 * MAX_PAGE_RECORDS)], True
    with PeerClient(url_of(server), AUDITOR) as client:
        kept = client.log("author", 3 * MAX_PAGE_RECORDS)
    assert kept == server.log[:MAX_PAGE_RECORDS]  # the one page it answers, once
    assert afters(server) == [0, MAX_PAGE_RECORDS - 1, MAX_PAGE_RECORDS]
