"""A blocking client of one node's HTTP API, for commands and tools (gossip has aiohttp's).

``NodeClient`` answers a request's body (``call_raw``), its JSON (``call``) or its NDJSON
lines as they stream (``lines``). Every request is authorised by a function of (method, URL,
body) that returns headers: ``bearer`` (the local API's token) or an RFC 9421 signature made
afresh for each request (``node.net.httpsig.sign_request``, as the audit signs). An
``https`` node is only reached pinned (``node.net.tls.connect_pinned``: refused before a
byte is sent unless its key is the pin).

Used in a ``with`` block a client keeps one connection open across requests (a connection
the node closed while idle is replaced once, the request authorised again); otherwise every
request has its own connection.

Errors: an answer that is not 2xx raises ``ApiError`` (its status, and the problem body's
detail); a node that cannot be reached ``ConfigError``; a pin mismatch, or ``https`` without
a pin, ``TlsRefusedError``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self

from node.errors import ApiError, ConfigError

Authorise = Callable[[str, str, bytes], dict[str, str]]
"""(method, absolute URL, body) -> the headers that authorise this request."""


def bearer(token: str) -> Authorise:
    return lambda method, url, body: {"Authorization": f"Bearer {token}"}


def anonymous(method: str, url: str, body: bytes) -> dict[str, str]:
    return {}


class NodeClient:
    """Requests to the node at ``url`` (its origin: scheme, host and port)."""

    def __init__(
        self,
        url: str,
        authorise: Authorise = anonymous,
        *,
        pin: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        self.base = f"{parts.scheme}://{parts.netloc}"
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.authorise = authorise
        self.pin = pin
        self.timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None
        self._keep = False

    def __enter__(self) -> Self:
        self._keep = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._keep = False
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def call(self, method: str, path: str, value: Any = None) -> Any:
        """A JSON request (no body when value is None); the answer's JSON."""
        data = None if value is None else json.dumps(value).encode()
        answer = self.call_raw(method, path, data)
        try:
            return json.loads(answer or b"null")
        except ValueError as e:
            raise ApiError(f"the answer of {self.base}{path} is not JSON", status=502) from e

    def call_raw(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        content_type: str = "application/json",
        *,
        query: Mapping[str, str] | None = None,
    ) -> bytes:
        """The answer's body; data is sent as content_type. path may hold its own query."""
        with self._exchange(method, path, data, content_type, query) as response:
            return bytes(response.read())

    def lines(self, path: str, *, query: Mapping[str, str] | None = None) -> Iterator[bytes]:
        """GET path's NDJSON answer line by line, as it streams (never all in memory)."""
        with self._exchange("GET", path, None, "", query) as response:
            yield from (line.rstrip(b"\n") for line in response if line.strip())

    @contextlib.contextmanager
    def _exchange(
        self,
        method: str,
        path: str,
        data: bytes | None,
        content_type: str,
        query: Mapping[str, str] | None,
    ) -> Iterator[http.client.HTTPResponse]:
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Content-Type": content_type} if data is not None else {}
        response = self._send(method, target, data, headers)
        try:
            if not 200 <= response.status < 300:
                detail = problem_detail(response.read())
                raise ApiError(f"node answered {response.status}: {detail}", status=response.status)
            yield response
        except (http.client.HTTPException, OSError) as e:  # the answer broke off
            raise self._unreachable(target, e) from e
        finally:
            if not self._keep or not response.isclosed():
                self.close()

    def _send(
        self, method: str, target: str, data: bytes | None, headers: dict[str, str]
    ) -> http.client.HTTPResponse:
        reused = self._connection is not None
        try:
            return self._request(method, target, data, headers)
        except (http.client.HTTPException, OSError) as e:
            self.close()
            if not reused:
                raise self._unreachable(target, e) from e
        try:  # the node closed the idle connection: once more, on a new one
            return self._request(method, target, data, headers)
        except (http.client.HTTPException, OSError) as e:
            self.close()
            raise self._unreachable(target, e) from e

    def _request(
        self, method: str, target: str, data: bytes | None, headers: dict[str, str]
    ) -> http.client.HTTPResponse:
        signed = self.authorise(method, self.base + target, data or b"") | headers
        if self._connection is None:
            self._connection = self._connect()
        self._connection.request(method, target, data, signed)
        return self._connection.getresponse()

    def _connect(self) -> http.client.HTTPConnection:
        if self.https:
            # the TLS room (cryptography, aiohttp) loads only for an https node
            from node.net.tls import TlsRefusedError, connect_pinned

            if self.pin is None:
                raise TlsRefusedError(f"no TLS pin for {self.base}", reason="no_pin")
            connection: http.client.HTTPConnection
            connection = connect_pinned(self.host, self.port, self.pin, timeout=self.timeout_s)
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            connection.connect()
        connection.auto_open = 0  # never reconnect behind our back: unpinned, unsigned
        return connection

    def _unreachable(self, target: str, error: BaseException) -> ConfigError:
        return ConfigError(f"cannot reach the node at {self.base}{target}: {error}")


def problem_detail(body: bytes) -> str:
    """A problem body's detail (or title), else the start of the body."""
    try:
        problem = json.loads(body)
        return str(problem.get("detail") or problem.get("title"))
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")
