"""Malformed requests to every route get a 4xx problem body and change nothing.

One two-member federation of real ``hashmesh serve`` processes for the module. Node ``a``
holds one signal of its own and one of ``b``'s, and takes images of up to
``MAX_IMAGE_BYTES`` (more than ``max_request_bytes``); every case is sent to ``a`` (the
local API with its bearer token, the peer API signed with ``b``'s member key) and must be
answered with its expected 4xx status, ``Content-Type: application/problem+json`` and a body
whose ``status`` is the HTTP status and whose ``title`` says what failed. After every case
``a``'s state and frontier digests, record counts and peers are what they were before the
sweep. aiohttp's own 404 and 405 answers go
through ``problem_middleware`` too, so they are problem bodies like the handlers' errors.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import images
import pytest
from harness import NodeProc, found_federation, wait_until, with_bad_signature
from images import blank_png
from PIL import Image

from node.home import NodeHome
from node.net.httpsig import sign_request
from protocol.bodies import SignalBody
from protocol.keys import SigningKey
from protocol.records import sign_record

PDQ = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22"
UNKNOWN_ID = "ab" * 32
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # [limits] max_request_bytes default
MAX_IMAGE_BYTES = 6 * 1024 * 1024  # [limits] max_image_bytes of node a in this module
BOUNDARY = "hashmeshtestboundary"
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
NDJSON = {"Content-Type": "application/x-ndjson"}
OCTETS = {"Content-Type": "application/octet-stream"}
TEXT = {"Content-Type": "text/plain"}
URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}  # what curl -d sends


@dataclass
class Fed:
    a: NodeProc
    b: NodeProc
    member: SigningKey  # b's key: signs peer requests to a
    fed_id: str
    own: str  # a signal a contributed
    other: str  # a signal b contributed, known to a
    stored: bytes  # a record a holds, as an NDJSON line (pushing it again is a duplicate)
    before: dict[str, Any] = field(default_factory=dict)


Response = tuple[int, dict[str, str], bytes]


def send(
    port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> Response:
    url = f"http://127.0.0.1:{port}{path}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), e.read()


def bearer(node: NodeProc) -> dict[str, str]:
    return {"Authorization": f"Bearer {NodeHome(node.home).token()}"}


def snapshot(node: NodeProc) -> dict[str, Any]:
    store = node.api("GET", "/v1/status?digest=1")["store"]
    peers = sorted(p["url"] for p in node.api("GET", "/v1/peers")["peers"])
    keep = ("state_digest", "frontier_digest", "records", "pending", "signals", "forks")
    return {k: store[k] for k in keep} | {"peers": peers}


def signal_ids(node: NodeProc) -> set[str]:
    return {row["id"] for row in node.api("GET", "/v1/signals?limit=100")["signals"]}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    federation, nodes = found_federation(tmp_path_factory.mktemp("api_errors"), ["a", "b"])
    try:
        limits = f"[limits]\nmax_image_bytes = {MAX_IMAGE_BYTES}\n"
        with (nodes[0].home / "config.toml").open("a") as config:
            config.write(limits)
        for node in nodes:
            node.start()
        a, b = nodes
        labels = ["entity:test"]
        own = a.api("POST", "/v1/signals", {"type": "pdq", "value": PDQ, "labels": labels})["id"]
        body = {"type": "md5", "value": "e" * 32, "labels": labels}
        other = b.api("POST", "/v1/signals", body)["id"]
        wait_until(lambda: {own, other} <= signal_ids(a) and {own, other} <= signal_ids(b))
        wait_until(lambda: snapshot(a)["state_digest"] == snapshot(b)["state_digest"])
        stored = send(a.port, "GET", "/v1/records", None, bearer(a))[2].split(b"\n")[0] + b"\n"
        member = NodeHome(b.home).key()
        state = Fed(a, b, member, federation.id, own, other, stored)
        state.before = snapshot(a)
        yield state
    finally:
        for node in nodes:
            node.stop()


# -- request bodies ------------------------------------------------------------------------


def js(value: object) -> bytes:
    return json.dumps(value).encode()


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart/form-data body of (field name, filename or None, bytes)."""
    out = io.BytesIO()
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def png() -> bytes:
    image = Image.new("RGB", (64, 64))
    image.putdata([(x * 4 % 256, y * 4 % 256, x * y % 256) for y in range(64) for x in range(64)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def padded_png(size: int) -> bytes:
    """png() grown to size bytes (by a chunk decoders skip)."""
    return images.padded_png(png(), size)


def with_png(*fields: tuple[str, bytes]) -> Callable[[Fed], bytes]:
    """A multipart body with a real image and the given form fields (made when sent)."""
    return lambda f: multipart(("file", "x.png", png()), *((k, None, v) for k, v in fields))


def signal_with(**changes: object) -> bytes:
    """A valid POST /v1/signals body with changes (``...`` drops a member)."""
    valid = {"type": "pdq", "value": "0" * 63 + "7", "labels": ["entity:test"]}
    return js({k: v for k, v in (valid | changes).items() if v is not ...})


def pushed(f: Fed, nibble: str, *, tamper: bool = False, fed: str | None = None) -> bytes:
    """b's next record (seq 3, after its announce and its signal), made invalid: changed
    after signing, or signed for another federation."""
    assert tamper or fed
    body = SignalBody("md5", nibble * 32, ("entity:test",))
    record = sign_record(f.member, fed=fed or f.fed_id, seq=3, prev=f.other, ts=1, body=body)
    raw = record.canonical
    if tamper:
        raw = with_bad_signature(raw, record.sig)
    return raw + b"\n"


NOT_AN_IMAGE = b"this is plain text, not an image\n" * 10
DEEP = b"[" * 100_000 + b"]" * 100_000
OVERSIZE = b" " * MAX_REQUEST_BYTES + b"{}"
TEXT_FORM = multipart(("file", "x.jpg", NOT_AN_IMAGE))
BAD_CHARSET = {"Content-Type": "application/json; charset=no-such-charset"}


# -- the cases -----------------------------------------------------------------------------

Body = bytes | Callable[[Fed], bytes] | None


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str  # may name {own}, {other} and {member}
    status: int
    body: Body
    headers: dict[str, str]
    auth: str  # token | none | wrong | peer (b's key) | stranger (not a member)


CASES: list[Case] = []


def case(
    id: str,
    path: str,
    body: Body = None,
    status: int = 400,
    *,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    auth: str = "token",
) -> None:
    """A case; POST if it has a body, else GET; a body is sent as JSON by default."""
    method = method or ("GET" if body is None else "POST")
    if headers is None:
        headers = {} if body is None else JSON
    CASES.append(Case(id, method, path, status, body, headers, auth))


S, OWN = "/v1/signals", "/v1/signals/{own}"
RETRACT, OPINIONS = OWN + "/retract", OWN + "/opinions"
LOCAL_ROUTES = [
    ("GET", "/v1/status"), ("GET", S), ("POST", S), ("GET", OWN), ("POST", RETRACT),
    ("POST", OPINIONS), ("POST", "/v1/votes"), ("POST", "/v1/hash"), ("POST", "/v1/match"),
    ("GET", "/v1/peers"), ("POST", "/v1/peers"), ("POST", "/v1/sync"), ("GET", "/v1/records"),
    ("POST", "/v1/import"),
]  # fmt: skip
JSON_ROUTES = [
    ("signals", S), ("retract", RETRACT), ("opinions", OPINIONS), ("votes", "/v1/votes"),
    ("match", "/v1/match"), ("peers", "/v1/peers"), ("sync", "/v1/sync"),
]  # fmt: skip


def route_name(method: str, path: str) -> str:
    return f"{method}-" + path.strip("/").replace("/", "-").replace("{own}", "id")


# no or a wrong bearer token, on every local route
for method, path in LOCAL_ROUTES:
    case(f"no-token-{route_name(method, path)}", path, js({}), 401, method=method, auth="none")
    case(f"wrong-token-{route_name(method, path)}", path, js({}), 401, method=method, auth="wrong")

# bodies that are not a JSON object, on every JSON route
for name, path in JSON_ROUTES:
    case(f"{name}-invalid-json", path, b'{"type": ')
    case(f"{name}-invalid-utf8", path, b'{"note": "\xff\xfe"}')
    case(f"{name}-json-list", path, js([{"type": "pdq"}]))
    case(f"{name}-json-string", path, js("pdq"))
    case(f"{name}-json-number", path, b"42")
    case(f"{name}-json-null", path, b"null")
    case(f"{name}-deep-nesting", path, DEEP)
    case(f"{name}-unknown-charset", path, js({}), headers=BAD_CHARSET)
    case(f"{name}-oversize", path, OVERSIZE, 413)
    case(f"{name}-text-plain", path, js({}), 415, headers=TEXT)
    case(f"{name}-urlencoded", path, js({}), 415, headers=URLENCODED)
    case(f"{name}-no-content-type", path, js({}), 415, headers={"Content-Type": ""})
    case(f"{name}-unknown-field", path, js({"no_such_field": 1}))

# POST /v1/signals, JSON
case("signals-empty-body", S, b"")
case("signals-empty-object", S, js({}))
case("signals-missing-type", S, signal_with(type=...))
case("signals-missing-value", S, signal_with(value=...))
case("signals-type-not-string", S, signal_with(type=1))
case("signals-value-not-string", S, signal_with(value=123))
case("signals-value-list", S, signal_with(value=[PDQ]))
case("signals-unknown-type", S, signal_with(type="sha3"))
case("signals-pdq-not-hex", S, signal_with(value="z" * 64))
case("signals-pdq-short", S, signal_with(value="0" * 63))
case("signals-pdq-long", S, signal_with(value="0" * 65))
case("signals-pdq-empty", S, signal_with(value=""))
case("signals-md5-wrong-length", S, signal_with(type="md5", value=PDQ))
case("signals-url-not-a-url", S, signal_with(type="url", value="not a url"))
case("signals-url-oversize", S, signal_with(type="url", value="https://x.org/" + "a" * 9000))
case("signals-value-oversize", S, signal_with(value="0" * 100_000))
case("signals-labels-string", S, signal_with(labels="entity:test"))
case("signals-labels-object", S, signal_with(labels={"a": 1}))
case("signals-labels-ints", S, signal_with(labels=[1, 2]))
case("signals-labels-null-item", S, signal_with(labels=[None]))
case("signals-label-invalid", S, signal_with(labels=["bad label!"]))
case("signals-label-blank", S, signal_with(labels=[" "]))
case("signals-label-oversize", S, signal_with(labels=["entity:" + "x" * 64]))
case("signals-label-not-in-taxonomy", S, signal_with(labels=["other:thing"]))
case("signals-too-many-labels", S, signal_with(labels=[f"entity:{i}" for i in range(17)]))
case("signals-note-not-string", S, signal_with(note=5))
case("signals-note-oversize", S, signal_with(note="n" * 1001))
case("signals-expires-string", S, signal_with(expires="tomorrow"))
case("signals-expires-negative", S, signal_with(expires=-1))
case("signals-expires-zero", S, signal_with(expires=0))
case("signals-expires-float", S, signal_with(expires=1.5e12))
case("signals-expires-bool", S, signal_with(expires=True))
case("signals-expires-over-2^53", S, signal_with(expires=2**53))
case("signals-expires-huge", S, signal_with(expires=10**40))
case("signals-int-5000-digits", S, signal_with(expires=0).replace(b"0}", b"9" * 5000 + b"}"))
case("signals-nan", S, b'{"type":"pdq","value":NaN}')
case("signals-misspelt-labels", S, signal_with(labels=..., lables=["entity:test"]))
case("signals-pdq-all-zero", S, signal_with(value="0" * 64))
case("signals-pdq-all-one", S, signal_with(value="f" * 64))
case("signals-pdq-near-zero", S, signal_with(value="0" * 56 + "0000ffff"))  # 16 bits set
case("signals-phash-flat", S, signal_with(type="phash", value="8" + "0" * 15))
case("signals-dhash-all-zero", S, signal_with(type="dhash", value="0" * 16))

# POST /v1/signals, multipart image
case("signals-form-no-file", S, multipart(("labels", None, b"entity:test")), headers=FORM)
case("signals-form-not-an-image", S, TEXT_FORM, 422, headers=FORM)
case("signals-form-empty-file", S, multipart(("file", "x.jpg", b"")), 422, headers=FORM)
case("signals-form-bad-label", S, with_png(("labels", b"bad label!")), headers=FORM)
case("signals-form-label-not-in-taxonomy", S, with_png(("labels", b"other:x")), headers=FORM)
case("signals-form-note-oversize", S, with_png(("note", b"n" * 1001)), headers=FORM)
case("signals-form-note-not-utf8", S, with_png(("note", b"\xff\xfe")), headers=FORM)
case("signals-form-labels-not-utf8", S, with_png(("labels", b"\xff")), headers=FORM)
case("signals-form-truncated", S, TEXT_FORM[:40], headers=FORM)
no_boundary = {"Content-Type": "multipart/form-data"}
case("signals-form-no-boundary", S, multipart(("file", "x", b"x")), headers=no_boundary)
case("signals-form-unknown-field", S, with_png(("lables", b"entity:test")), headers=FORM)
case("signals-form-allow-not-bool", S, with_png(("allow_low_quality", b"yes")), headers=FORM)
BLACK = multipart(("file", "black.png", blank_png(64, 64)))
ALLOWED_BLACK = multipart(
    ("file", "black.png", blank_png(64, 64)), ("allow_low_quality", None, b"true")
)
case("signals-form-featureless-image", S, BLACK, 422, headers=FORM)
case("signals-form-featureless-forced-degenerate", S, ALLOWED_BLACK, headers=FORM)
case(
    "signals-form-two-images",
    S,
    lambda f: multipart(("file", "a.png", png()), ("file", "b.png", png())),
    headers=FORM,
)
case(
    "signals-form-over-max-image-bytes",
    S,
    lambda f: multipart(("file", "x.png", padded_png(MAX_IMAGE_BYTES + 1))),
    413,
    headers=FORM,
)
case("signals-form-wrong-content-type", S, TEXT_FORM, 415, headers=TEXT)

# GET /v1/signals: every bad query parameter
for query in [
    "limit=x", "offset=x", "limit=1.5", "limit=", "limit=-1", "offset=-1",
    "offset=99999999999999999999999", "limit=99999999999999999999999", "limit=" + "9" * 5000,
    "active=maybe", "active=", "limit=1000000000", "limit=10001", "limit=0", "limit=+5",
    "limit=1_0", "limit=%205", "type=bogus", "type=PDQ", "type=", "member=xyz",
    "member=" + "A" * 64, "label=bad%20label!", "label=", "lmit=5", "limit=1&limit=2",
    "type=pdq&type=md5",
]:  # fmt: skip
    case(f"list-{query[:40]}", f"{S}?{query}")

# GET /v1/signals/{id}: unknown ids are 404
case("get-unknown-id", f"{S}/{UNKNOWN_ID}", status=404)
case("get-id-not-hex", f"{S}/not-a-record-id", status=404)
case("get-id-uppercase", f"{S}/{UNKNOWN_ID.upper()}", status=404)
case("get-id-oversize", f"{S}/" + "a" * 5000, status=404)

# POST /v1/signals/{id}/retract
case("retract-id-not-hex", f"{S}/xyz/retract", js({}))
case("retract-id-uppercase", f"{S}/{UNKNOWN_ID.upper()}/retract", js({}))
case("retract-unknown-id", f"{S}/{UNKNOWN_ID}/retract", js({}), 404)
case("retract-unknown-id-no-body", f"{S}/{UNKNOWN_ID}/retract", None, 404, method="POST")
case("retract-other-members-signal", S + "/{other}/retract", js({}), 403)
case("retract-reason-not-string", RETRACT, js({"reason": 1}))
case("retract-reason-list", RETRACT, js({"reason": ["x"]}))
case("retract-reason-oversize", RETRACT, js({"reason": "r" * 1001}))

# POST /v1/signals/{id}/opinions
case("opinions-id-not-hex", f"{S}/xyz/opinions", js({"verdict": "seen"}))
case("opinions-empty-body", OPINIONS, b"")
case("opinions-missing-verdict", OPINIONS, js({"labels": ["entity:test"]}))
case("opinions-verdict-not-string", OPINIONS, js({"verdict": 1}))
case("opinions-verdict-unknown", OPINIONS, js({"verdict": "maybe"}))
case("opinions-verdict-uppercase", OPINIONS, js({"verdict": "CONFIRM"}))
case("opinions-labels-string", OPINIONS, js({"verdict": "seen", "labels": "x"}))
case("opinions-label-invalid", OPINIONS, js({"verdict": "seen", "labels": ["A B"]}))
case("opinions-label-not-in-taxonomy", OPINIONS, js({"verdict": "seen", "labels": ["o:x"]}))
case("opinions-note-not-string", OPINIONS, js({"verdict": "seen", "note": {}}))
case("opinions-note-oversize", OPINIONS, js({"verdict": "seen", "note": "n" * 1001}))

# POST /v1/votes
KEY = "c" * 64
ADMIT = {"action": "admit", "member": KEY, "name": "x", "role": "member"}
REMOVE = {"action": "remove", "member": KEY, "after": 0}
for name, vote in {
    "empty-object": {},
    "unknown-action": ADMIT | {"action": "promote"},
    "action-not-string": REMOVE | {"action": 1},
    "member-missing": {k: v for k, v in ADMIT.items() if k != "member"},
    "member-not-hex": ADMIT | {"member": "zz"},
    "member-not-string": REMOVE | {"member": 12},
    "admit-no-name": {k: v for k, v in ADMIT.items() if k != "name"},
    "admit-name-not-string": ADMIT | {"name": 7},
    "admit-name-oversize": ADMIT | {"name": "n" * 10_000},
    "admit-unknown-role": ADMIT | {"role": "king"},
    "admit-with-after": ADMIT | {"after": 1},
    "remove-no-after": {k: v for k, v in REMOVE.items() if k != "after"},
    "remove-after-negative": REMOVE | {"after": -1},
    "remove-after-string": REMOVE | {"after": "1"},
    "remove-after-huge": REMOVE | {"after": 10**30},
    "remove-with-name": REMOVE | {"name": "x"},
}.items():
    case(f"votes-{name}", "/v1/votes", js(vote))
case("votes-empty-body", "/v1/votes", b"")

# POST /v1/hash: bytes that are not an image, or too large an image
case("hash-empty-body", "/v1/hash", b"", 422, headers=OCTETS)
case("hash-not-an-image", "/v1/hash", NOT_AN_IMAGE, 422, headers={"Content-Type": "image/jpeg"})
case(
    "hash-truncated-png",
    "/v1/hash",
    lambda f: png()[:100],
    422,
    headers={"Content-Type": "image/png"},
)
case("hash-oversize", "/v1/hash", lambda f: padded_png(MAX_IMAGE_BYTES + 1), 413, headers=OCTETS)
case("hash-9000x9000-black-png", "/v1/hash", lambda f: blank_png(9000, 9000), 413, headers=OCTETS)
case("hash-json", "/v1/hash", js({}), 415)
case("hash-urlencoded", "/v1/hash", lambda f: png(), 415, headers=URLENCODED)
case("hash-form-no-file", "/v1/hash", multipart(("file_", None, b"hello")), headers=FORM)
case("hash-form-unknown-field", "/v1/hash", with_png(("note", b"hello")), headers=FORM)
case("hash-form-not-an-image", "/v1/hash", TEXT_FORM, 422, headers=FORM)
case(
    "hash-form-two-images",
    "/v1/hash",
    lambda f: multipart(("file", "a.png", png()), ("file", "b.png", png())),
    headers=FORM,
)
case(
    "hash-form-oversize",
    "/v1/hash",
    lambda f: multipart(("file", "x.png", padded_png(MAX_IMAGE_BYTES + 1))),
    413,
    headers=FORM,
)

# POST /v1/match
ONE = {"type": "pdq", "value": PDQ}
for name, match in {
    "empty-object": {},
    "hashes-empty": {"hashes": []},
    "hashes-string": {"hashes": PDQ},
    "hashes-object": {"hashes": ONE},
    "hashes-item-not-object": {"hashes": [PDQ]},
    "hashes-item-no-type": {"hashes": [{"value": PDQ}]},
    "hashes-item-no-value": {"hashes": [{"type": "pdq"}]},
    "hashes-item-value-int": {"hashes": [{"type": "pdq", "value": 5}]},
    "hashes-item-type-int": {"hashes": [{"type": 5, "value": PDQ}]},
    "unknown-type": {"hashes": [{"type": "sha3", "value": PDQ}]},
    "bad-pdq": {"hashes": [{"type": "pdq", "value": "g" * 64}]},
    "bad-md5": {"hashes": [{"type": "md5", "value": "0" * 31}]},
    "bad-url": {"hashes": [{"type": "url", "value": "::::"}]},
    "second-item-bad": {"hashes": [ONE, {"type": "pdq", "value": "x"}]},
    "too-many-hashes": {"hashes": [ONE] * 10_001},
    "single-form-bad-value": {"type": "pdq", "value": "nothex"},
    "single-form-no-value": {"type": "pdq"},
    "radius-negative": {"hashes": [ONE], "radius": -1},
    "radius-string": {"hashes": [ONE], "radius": "3"},
    "radius-float": {"hashes": [ONE], "radius": 3.5},
    "radius-bool": {"hashes": [ONE], "radius": True},
    "radius-over-bits": {"hashes": [ONE], "radius": 257},
    "radius-huge": {"hashes": [ONE], "radius": 10**30},
    "radius-on-exact-type": {"hashes": [{"type": "md5", "value": "0" * 32}], "radius": 2},
    "max-hits-zero": {"hashes": [ONE], "max_hits": 0},
    "max-hits-negative": {"hashes": [ONE], "max_hits": -5},
    "max-hits-string": {"hashes": [ONE], "max_hits": "10"},
    "max-hits-null": {"hashes": [ONE], "max_hits": None},
    "misspelt-radius": {"hashes": [ONE], "radious": 3},
    "item-unknown-field": {"hashes": [ONE | {"qualty": 80}]},
    "quality-negative": {"hashes": [ONE | {"quality": -1}]},
    "quality-over-100": {"hashes": [ONE | {"quality": 101}]},
    "quality-string": {"hashes": [ONE | {"quality": "80"}]},
    "quality-float": {"hashes": [ONE | {"quality": 80.0}]},
    "quality-on-md5": {"hashes": [{"type": "md5", "value": "0" * 32, "quality": 80}]},
}.items():
    case(f"match-{name}", "/v1/match", js(match))
case("match-form-no-file", "/v1/match", multipart(("note", None, b"x")), headers=FORM)
case("match-form-unknown-field", "/v1/match", with_png(("radius", b"3")), headers=FORM)
case("match-raw-image", "/v1/match", lambda f: png(), 415, headers={"Content-Type": "image/png"})
case(
    "match-form-over-max-image-bytes",
    "/v1/match",
    lambda f: multipart(("file", "x.png", padded_png(MAX_IMAGE_BYTES + 1))),
    413,
    headers=FORM,
)
case("match-form-truncated", "/v1/match", multipart(("file", "x", b"x"))[:40], headers=FORM)

# POST /v1/peers and POST /v1/sync: a peer URL that is not one
for name, url in {
    "missing": ...,
    "empty": "",
    "int": 42,
    "list": ["http://127.0.0.1:1/"],
    "not-a-url": "not a url",
    "ftp": "ftp://example.com/",
    "oversize": "https://example.com/" + "a" * 10_000,
    "pin-not-hex": "https://example.com/#spki=zz",
    "pin-wrong-name": "https://example.com/#sha=" + "a" * 64,
    "pin-on-http": "http://example.com/#spki=" + "a" * 64,
}.items():
    case(f"peers-url-{name}", "/v1/peers", js({} if url is ... else {"url": url}))
    if url not in (..., ""):  # no peer, or an empty one, is a sync with every peer
        case(f"sync-peer-{name}", "/v1/sync", js({"peer": url}))
case("peers-own-url", "/v1/peers", lambda f: js({"url": f.a.url}))
case("sync-own-url", "/v1/sync", lambda f: js({"peer": f.a.url}))

# POST /v1/import (a bad line is one rejected record: test_import_reports_each_bad_line)
case("import-too-many-records", "/v1/import", b"{}\n" * 2001, headers=NDJSON)
case("import-oversize", "/v1/import", b"{}\n" * (MAX_REQUEST_BYTES // 3 + 1), 413, headers=NDJSON)
case("import-json", "/v1/import", b"{}\n", 415, headers=JSON)

# GET /v1/records: paging parameters
for query in [
    "after_author=xyz", "after_author=" + "A" * 64, "after_seq=3", "limit=0", "limit=-1",
    "limit=x", "after=5", "limit=1&limit=2", "after_author=" + "a" * 64 + "&after_seq=x",
]:  # fmt: skip
    case(f"records-{query[:40]}", f"/v1/records?{query}")

# wrong methods and unknown routes: aiohttp's own 405 and 404, as problem bodies
for method, path in [
    ("DELETE", S), ("PUT", OWN), ("DELETE", OWN), ("GET", RETRACT), ("GET", OPINIONS),
    ("GET", "/v1/votes"), ("GET", "/v1/hash"), ("GET", "/v1/match"), ("PUT", "/v1/peers"),
    ("GET", "/v1/sync"), ("PUT", "/v1/records"), ("GET", "/v1/import"), ("POST", "/v1/status"),
    ("POST", "/metrics"), ("POST", "/healthz"), ("POST", "/readyz"),
]:  # fmt: skip
    case(f"method-{route_name(method, path)}", path, None, 405, method=method)
for path in ["/v1/nothing", "/v2/status", OWN + "/nothing", "/v1/log", "/"]:
    case(f"unknown-route-{route_name('GET', path)}", path, status=404)

# GET /metrics: a relayed request (Forwarded, X-Forwarded-For) needs the token
relayed = {"X-Forwarded-For": "203.0.113.9"}
case("metrics-relayed-no-token", "/metrics", None, 401, headers=relayed, auth="none")
case("metrics-relayed-wrong-token", "/metrics", None, 401, headers=relayed, auth="wrong")

# the peer API, signed with b's member key unless said otherwise
LOG = "/v1/log/{member}"
for method, path in [("GET", "/v1/heads"), ("GET", LOG), ("POST", "/v1/records")]:
    name = path.split("/")[2]
    case(f"peer-unsigned-{name}", path, None, 401, method=method, auth="none")
    case(f"peer-stranger-{name}", path, None, 403, method=method, auth="stranger")
    case(f"peer-bearer-token-{name}", path, None, 401, method=method)
case("peer-log-author-not-hex", "/v1/log/xyz", auth="peer")
case("peer-log-author-uppercase", "/v1/log/" + "AB" * 32, auth="peer")
case("peer-log-author-oversize", "/v1/log/" + "a" * 5000, auth="peer")
for query in [
    "after=x", "after=-1", "after=1.5", "after=", "after=99999999999999999999999",
    "after=9223372036854775808", "after=" + "9" * 5000, "limit=0", "limit=-1", "limit=5001",
    "limit=x", "limit=99999999999999999999999",
]:  # fmt: skip
    case(f"peer-log-{query[:40]}", f"{LOG}?{query}", auth="peer")
PUSHES: list[tuple[str, Body, int]] = [
    ("no-final-newline", b"{}", 400),
    ("empty-line", b"\n", 400),
    ("blank-line-inside", lambda f: f.stored + b"\n" + f.stored, 400),
    ("too-many-records", b"{}\n" * 2001, 400),
    ("line-oversize", b"{" + b" " * 9000 + b"}\n", 422),  # that line's OversizeError
    ("oversize", b"{}\n" * (MAX_REQUEST_BYTES // 3 + 1), 413),
    ("not-json", b"this is not json\n", 422),
    ("json-list", b"[]\n", 422),
    ("json-string", b'"record"\n', 422),
    ("empty-object", b"{}\n", 422),
    ("invalid-utf8", b'{"kind":"\xff"}\n', 422),
    ("deep-nesting", b"[" * 4000 + b"]" * 4000 + b"\n", 422),
    ("bad-signature", lambda f: pushed(f, "4", tamper=True), 422),
    ("other-federation", lambda f: pushed(f, "5", fed="e" * 64), 422),
    ("garbage-after-duplicate", lambda f: f.stored + b"garbage\n", 422),
    ("bad-signature-after-duplicate", lambda f: f.stored + pushed(f, "6", tamper=True), 422),
]
for name, batch, status in PUSHES:
    case(f"peer-records-{name}", "/v1/records", batch, status, headers=NDJSON, auth="peer")
case("peer-records-relay-yes", "/v1/records?relay=yes", lambda f: f.stored, auth="peer")
case("peer-method-post-heads", "/v1/heads", None, 405, method="POST", auth="peer")
case("peer-method-put-records", "/v1/records", None, 405, method="PUT", auth="peer")
case("peer-method-post-log", LOG, None, 405, method="POST", auth="peer")


def test_case_ids_are_distinct() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_request_gets_problem_and_changes_nothing(fed: Fed, case: Case) -> None:
    path = case.path.format(own=fed.own, other=fed.other, member=fed.member.public)
    body = case.body(fed) if callable(case.body) else case.body
    headers = dict(case.headers)
    token = NodeHome(fed.a.home).token()
    if case.auth in ("token", "wrong"):
        headers["Authorization"] = f"Bearer {token}" + ("x" if case.auth == "wrong" else "")
    elif case.auth in ("peer", "stranger"):
        key = fed.member if case.auth == "peer" else SigningKey(b"\x42" * 32)
        url = f"http://127.0.0.1:{fed.a.port}{path}"
        headers |= sign_request(key, case.method, url, body or b"", now_s=time.time())
    status, answer_headers, answer = send(fed.a.port, case.method, path, body, headers)

    assert 400 <= status < 500, (status, answer[:300])
    assert status == case.status, (status, answer[:300])
    content_type = answer_headers.get("Content-Type", "")
    assert content_type.startswith("application/problem+json"), (content_type, answer[:300])
    problem = json.loads(answer)
    assert problem["status"] == status, problem
    assert all(isinstance(problem.get(k), str) and problem[k] for k in ("type", "title", "detail"))
    assert problem["title"] not in ("request failed", "node error"), problem  # says what failed
    assert snapshot(fed.a) == fed.before


def test_multipart_match_fails_closed_on_an_unreadable_image(fed: Fed) -> None:
    """A file that cannot be hashed fails the whole answer (422 problem, no top-level
    ``matched`` a client could read as "clean"); every file's result is still in it."""
    body = multipart(("file", "a.txt", NOT_AN_IMAGE), ("file", "b.png", png()))
    status, headers, answer = send(fed.a.port, "POST", "/v1/match", body, FORM | bearer(fed.a))
    assert status == 422, answer[:300]
    assert headers["Content-Type"].startswith("application/problem+json")
    problem = json.loads(answer)
    assert "matched" not in problem
    assert problem["title"] == "image could not be hashed"
    assert [e["file"] for e in problem["errors"]] == ["a.txt"]
    assert [r["file"] for r in problem["results"]] == ["a.txt", "b.png"]
    assert "error" in problem["results"][0] and "hashes" in problem["results"][1]
    assert snapshot(fed.a) == fed.before


def test_image_uploads_take_up_to_max_image_bytes(fed: Fed) -> None:
    """An image over max_request_bytes (4 MiB) but within max_image_bytes is hashed and
    matched, raw or multipart, on /v1/hash and /v1/match."""
    big = padded_png(MAX_IMAGE_BYTES - 4096)
    assert len(big) > MAX_REQUEST_BYTES
    status, _, answer = send(fed.a.port, "POST", "/v1/hash", big, OCTETS | bearer(fed.a))
    assert status == 200, answer[:300]
    assert json.loads(answer)["hashes"]["sha256"] == hashlib.sha256(big).hexdigest()
    form = multipart(("file", "big.png", big))
    for path in ("/v1/hash", "/v1/match"):
        status, _, answer = send(fed.a.port, "POST", path, form, FORM | bearer(fed.a))
        assert status == 200, (path, answer[:300])
    assert json.loads(answer)["results"][0]["file"] == "big.png"
    assert snapshot(fed.a) == fed.before


def test_import_reports_each_bad_line(fed: Fed) -> None:
    """Not a 4xx by design (``hashmesh import``): a bad line is one rejected record."""
    body = b"not json\n{}\n[]\n" + pushed(fed, "7", tamper=True)
    status, _, answer = send(fed.a.port, "POST", "/v1/import", body, NDJSON | bearer(fed.a))
    assert status == 200, answer[:300]
    counts = json.loads(answer)["counts"]
    assert counts == {"accepted": 0, "duplicate": 0, "pending": 0, "rejected": 4}, counts
    assert snapshot(fed.a) == fed.before


def test_state_unchanged_after_the_sweep(fed: Fed) -> None:
    assert snapshot(fed.a) == fed.before
    assert snapshot(fed.b)["state_digest"] == fed.before["state_digest"]
