"""How many bytes a peer exchange puts on the wire, as the real HTTP/1.1 messages would.

Bodies are the real ones: canonical record bytes joined as NDJSON, the frontier's JSON, the
push answer's JSON (``sim.store.MergeReport.answer``). Headers are sized from what the node's
aiohttp client and server send: the request line, ``Host``, the three RFC 9421 headers that
``node.net.httpsig.sign_request`` adds (``SIGNATURE_HEADER_BYTES``, checked against it in
``test_wire``), aiohttp's default ``Accept``/``Accept-Encoding``/``User-Agent``, and for a body
``Content-Type`` and ``Content-Length``; an answer's status line, ``Content-Type``,
``Content-Length``, ``Date``, ``Server`` and, for the frontier, ``ETag``. TCP/IP and TLS
framing are not counted (about 60-100 bytes per packet on top).
"""

from __future__ import annotations

SIGNATURE_HEADER_BYTES = 388  # Content-Digest, Signature-Input, Signature: names, ": ", CRLF
CLIENT_DEFAULT_HEADER_BYTES = len(
    "Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nUser-Agent: Python/3.11 aiohttp/3.13.2\r\n"
)
SERVER_HEADER_BYTES = len(
    "Date: Sat, 22 Nov 2025 08:26:40 GMT\r\nServer: Python/3.11 aiohttp/3.13.2\r\n"
)
ETAG_HEADER_BYTES = len('ETag: ""\r\n') + 64
IF_NONE_MATCH_BYTES = len('If-None-Match: ""\r\n') + 64
REASONS = {200: "OK", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 422: "Unprocessable Entity", 503: "Service Unavailable"}  # fmt: skip


def request_header_bytes(method: str, target: str, host: str, body_len: int, extra: int = 0) -> int:
    """Bytes of a signed request's head (request line through the blank line)."""
    size = len(f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n") + SIGNATURE_HEADER_BYTES
    size += CLIENT_DEFAULT_HEADER_BYTES + extra + 2
    if body_len:
        size += len(f"Content-Type: application/x-ndjson\r\nContent-Length: {body_len}\r\n")
    return size


def answer_header_bytes(status: int, body_len: int, content_type: str, *, etag: bool) -> int:
    """Bytes of an answer's head."""
    size = len(f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n") + SERVER_HEADER_BYTES + 2
    if status != 304:
        size += len(f"Content-Type: {content_type}\r\nContent-Length: {body_len}\r\n")
    return size + (ETAG_HEADER_BYTES if etag else 0)
