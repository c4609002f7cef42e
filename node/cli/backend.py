"""Where an operator command runs: through the running node, or directly on its store.

Mutating commands (add, retract, opinion, member vote, peers add, import) work whether or not
``hashmesh serve`` runs for the home; ``open_backend`` picks the route:

- ``ApiBackend`` when ``NodeHome.runtime()`` says the node runs: every write goes through its
  local API, so the node signs, stores, indexes and gossips at once (two writers on one log
  would fork it). The two lookups the API does not offer -- an author's head seq, "does this
  member already list this hash" -- read the database through a read-only connection, which
  WAL lets run beside the node's writer.
- ``StoreBackend`` when no node runs: the command takes the home's lock (``node.homelock``,
  the one ``hashmesh serve`` holds while it runs), opens the store as its one writer
  (``Store.open(..., create=True)``), signs with the member key and merges; the next
  ``hashmesh serve`` gossips what was written. The authoring rules (taxonomy, "only the
  contributor retracts", ...) are the store's, as through the API: ``Store.append_local``
  asks ``protocol.authoring`` before it signs.

The lock decides, not ``node.json``: a node that holds it is reached through its API (or, while
it starts and has no API yet, the command is refused), and no node can start while an offline
command writes. Both answer in the local API's JSON shapes, so a command prints the same
either way.
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import click

from node.clock import now_ms
from node.config import normalise_peer
from node.errors import ApiError, ConfigError, InputError, refused
from node.home import NodeHome
from node.homelock import SERVE, HomeBusyError, HomeLock
from node.net.client import NodeClient, bearer
from protocol.bodies import Body, OpinionBody, RetractBody, SignalBody, VoteBody
from protocol.errors import AuthoringError, LocalProtocolError
from protocol.federation import Federation
from protocol.keys import SigningKey
from protocol.membership import Membership

if TYPE_CHECKING:  # the store (SQLite, verify pool) loads only when a command needs it
    from node.store.read import SignalQuery
    from node.store.store import Store


# ---- the local API client ---------------------------------------------------------------


class LocalApi(NodeClient):
    """A client of a running node's local API (the bearer token of its home)."""

    @classmethod
    def for_home(cls, home: NodeHome) -> LocalApi:
        info = home.runtime()
        if info is None:
            raise ConfigError(
                f"no node is running for {home.path}: "
                f"start it with 'hashmesh serve --home {home.path}'"
            )
        return cls(str(info["api"]), bearer(home.token()))


# ---- the two backends -------------------------------------------------------------------


class Backend(Protocol):
    """What operator commands need of a node, running or not (answers in local API shapes)."""

    federation: Federation
    online: bool

    def identity(self) -> str: ...
    def author(self, body: Body) -> dict[str, Any]: ...
    def merge(self, batch: Sequence[bytes]) -> dict[str, Any]: ...
    def signals(self, query: SignalQuery) -> list[dict[str, Any]]: ...
    def signal(self, signal_id: str) -> dict[str, Any] | None: ...
    def find_own_signal(self, type: str, value: str) -> str | None: ...
    def head_seq(self, key: str) -> int: ...
    def records(self) -> Iterator[bytes]: ...
    def members(self) -> list[dict[str, Any]]: ...
    def peers(self) -> list[dict[str, Any]]: ...
    def add_peer(self, url: str) -> dict[str, Any]: ...
    def remove_peer(self, url: str) -> dict[str, Any]: ...


@contextlib.contextmanager
def open_backend(home: NodeHome) -> Iterator[Backend]:
    """The running node's API if it runs, else the store itself (created if need be)."""
    home.require()
    federation = home.federation()
    route = _lock_or_api(home)
    if isinstance(route, LocalApi):
        yield ApiBackend(home, federation, route)
        return
    from node.store.store import Store

    with route, Store.open(home.db_path, federation, create=True) as store:
        yield StoreBackend(store, home.key(), federation)


def lock_or_api(home: NodeHome) -> HomeLock | LocalApi:
    """The home's lock, for a command that writes the home itself, or the API of the node
    that holds it (``hashmesh lists`` writes HOME/lists.db this way)."""
    return _lock_or_api(home)


def _lock_or_api(home: NodeHome) -> HomeLock | LocalApi:
    """The home's lock for writing the store here, or the API of the node that holds it."""
    try:
        return HomeLock.acquire(home.path, _command_name())
    except HomeBusyError as busy:
        if home.runtime() is not None:
            return LocalApi.for_home(home)
        if busy.holder.command == SERVE:
            hint = "its local API is not answering (it is starting or stopping): try again soon"
        else:
            hint = "run this command again when it has finished"
        raise HomeBusyError(home.path, busy.holder, hint=hint) from None


def _command_name() -> str:
    """The running CLI command ("import", "member vote admit"), named in the lock file."""
    ctx = click.get_current_context(silent=True)
    return ctx.command_path.partition(" ")[2] if ctx is not None else "unknown"


def _identity(membership: Membership, key: str) -> str:
    return membership.owner.get(key, key)


def _members(membership: Membership) -> list[dict[str, Any]]:
    return [
        {"name": m.name, "identity": m.identity, "key": m.current_key, "role": m.role,
         "removed": m.removed}
        for m in sorted(membership.members.values(), key=lambda m: m.name)
    ]  # fmt: skip


class ApiBackend:
    """Writes through the running node's local API; two lookups read the database."""

    online = True

    def __init__(self, home: NodeHome, federation: Federation, api: LocalApi) -> None:
        self.home = home
        self.federation = federation
        self.api = api

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Store]:
        from node.store.store import Store

        with Store.open(self.home.db_path, self.federation, readonly=True) as store:
            yield store

    def identity(self) -> str:
        with self._reader() as store:
            return _identity(store.membership(), self.home.key().public)

    def author(self, body: Body) -> dict[str, Any]:
        path, payload = api_request(body)
        return dict(self.api.call("POST", path, payload))

    def merge(self, batch: Sequence[bytes]) -> dict[str, Any]:
        data = b"".join(line + b"\n" for line in batch)
        answer = self.api.call_raw("POST", "/v1/import", data, "application/x-ndjson")
        return dict(json.loads(answer))

    def signals(self, query: SignalQuery) -> list[dict[str, Any]]:
        active = None if query.active is None else str(query.active).lower()
        params = {"type": query.type, "label": query.label, "member": query.member,
                  "active": active, "limit": query.limit, "offset": query.offset}  # fmt: skip
        text = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return list(self.api.call("GET", f"/v1/signals?{text}")["signals"])

    def signal(self, signal_id: str) -> dict[str, Any] | None:
        try:
            return dict(self.api.call("GET", f"/v1/signals/{urllib.parse.quote(signal_id)}"))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def find_own_signal(self, type: str, value: str) -> str | None:
        with self._reader() as store:
            identity = _identity(store.membership(), self.home.key().public)
            return store.find_own_signal(identity, type, value, now_ms=now_ms())

    def head_seq(self, key: str) -> int:
        with self._reader() as store:
            head = store.head(key)
            return 0 if head is None else head.seq

    def records(self) -> Iterator[bytes]:
        yield from self.api.lines("/v1/records")

    def members(self) -> list[dict[str, Any]]:
        return list(self.api.call("GET", "/v1/status")["members"])

    def peers(self) -> list[dict[str, Any]]:
        return list(self.api.call("GET", "/v1/peers")["peers"])

    def add_peer(self, url: str) -> dict[str, Any]:
        return dict(self.api.call("POST", "/v1/peers", {"url": normalise_peer(url)}))

    def remove_peer(self, url: str) -> dict[str, Any]:
        return dict(self.api.call("DELETE", "/v1/peers?" + urllib.parse.urlencode({"url": url})))


def api_request(body: Body) -> tuple[str, dict[str, Any]]:
    """The local API path and JSON payload that author body."""
    if isinstance(body, SignalBody):
        return "/v1/signals", {"type": body.type, "value": body.value,
                               "labels": list(body.labels), "note": body.note,
                               "expires": body.expires}  # fmt: skip
    if isinstance(body, RetractBody):
        return f"/v1/signals/{body.signal}/retract", {"reason": body.reason}
    if isinstance(body, OpinionBody):
        payload = {"verdict": body.verdict, "labels": list(body.labels), "note": body.note}
        return f"/v1/signals/{body.signal}/opinions", payload
    if isinstance(body, VoteBody):
        return "/v1/votes", dict(body.to_json())
    raise LocalProtocolError(f"operators do not author {body.KIND} records by hand")


class StoreBackend:
    """Writes directly on the store, as its one writer, when no node runs."""

    online = False

    def __init__(self, store: Store, key: SigningKey, federation: Federation) -> None:
        self.store = store
        self.key = key
        self.federation = federation

    def identity(self) -> str:
        return _identity(self.store.membership(), self.key.public)

    def author(self, body: Body) -> dict[str, Any]:
        api_request(body)  # the same kinds as through the API
        try:
            record = self.store.append_local(self.key, body, ts=now_ms())
        except AuthoringError as e:  # protocol.authoring said no, as the API would
            raise refused(e) from e
        except LocalProtocolError as e:
            raise ApiError(f"this node cannot author that record: {e}", status=409) from e
        return {"id": record.id, "seq": record.seq, "kind": record.kind, "record": record.text}

    def merge(self, batch: Sequence[bytes]) -> dict[str, Any]:
        return self.store.merge(batch, received_ms=now_ms()).to_json()

    def signals(self, query: SignalQuery) -> list[dict[str, Any]]:
        from node.store import read

        return read.signals(self.store.conn, query, now_ms=now_ms())

    def signal(self, signal_id: str) -> dict[str, Any] | None:
        return self.store.signal(signal_id, now_ms=now_ms())

    def find_own_signal(self, type: str, value: str) -> str | None:
        return self.store.find_own_signal(self.identity(), type, value, now_ms=now_ms())

    def head_seq(self, key: str) -> int:
        head = self.store.head(key)
        return 0 if head is None else head.seq

    def records(self) -> Iterator[bytes]:
        return self.store.all_records()

    def members(self) -> list[dict[str, Any]]:
        return _members(self.store.membership())

    def peers(self) -> list[dict[str, Any]]:
        return self.store.peers()

    def add_peer(self, url: str) -> dict[str, Any]:
        url = normalise_peer(url)
        self.store.upsert_peer(url, source="added")
        return {"url": url, "source": "added"}

    def remove_peer(self, url: str) -> dict[str, Any]:
        removed = self.store.remove_peer(normalise_peer(url))
        if removed is None:
            announced = [e.get("urls") for e in self.store.endpoints()]
            if any(isinstance(urls, list) and url in urls for urls in announced):
                raise InputError(f"{url} is announced by a member: it stays while announced")
            raise InputError(f"{url} is not a peer added here (see 'hashmesh peers')")
        return removed
