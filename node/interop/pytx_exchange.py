"""hashmesh as a python-threatexchange exchange, so HMA and pytx fetch the federation's list.

Install with ``pip install 'hashmesh[threatexchange]'``; register the extension with
``threatexchange config extensions add node.interop.pytx_exchange`` (it exports ``TX_MANIFEST``) or,
in HMA, list ``HashmeshSignalExchangeAPI`` in ``exchange_types``. The import path
``node.interop.pytx_exchange`` is stable: HMA pickles ``HashmeshSignalMetadata`` values.

How it maps:

- a collaboration is one hashmesh node's local API (``node_url``), read with the node's API
  token (``HASHMESH_API_TOKEN``, or the file ``~/.hashmesh_api_token``, or passed in);
- a fetch follows the node's change feed (``GET /v1/changes``): the checkpoint holds the
  feed's ``node_epoch`` and cursor, so an abandoned fetch resumes where its last delta ended;
  when the node's database was rebuilt or restored (another epoch) the checkpoint turns
  stale and the next fetch starts over from a cleared state;
- records are keyed by hashmesh signal id: two members listing one hash are two records, and
  one member's retraction deletes only its own; a signal that is not active, or that the
  collaboration's filters drop (labels, members, disputes, confirmations), is a delete;
- ``get_as_opinions()`` turns the contributor and each confirmation into positive opinions
  and each dispute into a negative one, with the signal's labels as tags;
- ``report_opinion`` signs a hashmesh opinion (confirm for a positive opinion, dispute for a
  negative one) on every active signal with that hash.

Synchronous, on the standard library's HTTP client (pytx and HMA call exchanges
synchronously).
"""

import json
import os
import typing as t
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from threatexchange.exchanges import auth
from threatexchange.exchanges import fetch_state as state
from threatexchange.exchanges.collab_config import CollaborationConfigWithDefaults
from threatexchange.exchanges.signal_exchange_api import SignalExchangeAPI
from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest
from threatexchange.signal_type.signal_base import SignalType

from node.media.types import PYTX_NAMES

API_NAME = "hashmesh"
PAGE = 1000
# PYTX_NAMES: hashmesh's type names as python-threatexchange names them (node.media.types)
HASHMESH_NAMES = {v: k for k, v in PYTX_NAMES.items()}


class HashmeshCredentials(auth.CredentialHelper):
    """The node's local API token."""

    ENV_VARIABLE = "HASHMESH_API_TOKEN"
    FILE_NAME = "~/.hashmesh_api_token"

    def __init__(self, token: str) -> None:
        self.token = token

    @classmethod
    def _from_str(cls, s: str) -> "HashmeshCredentials | None":
        return cls(s.strip()) if s.strip() else None

    def _are_valid(self) -> bool:
        return len(self.token) >= 16


@dataclass
class _Required:
    node_url: str = field(metadata={"help": "the node's local API, e.g. http://127.0.0.1:7401"})


@dataclass
class HashmeshCollabConfig(CollaborationConfigWithDefaults, _Required):
    """Which signals of the federation to fetch."""

    labels: t.List[str] = field(  # noqa: UP006 - pytx's CLI reads the typing form
        default_factory=list, metadata={"help": "only signals with any of these labels"}
    )
    members: t.List[str] = field(  # noqa: UP006
        default_factory=list, metadata={"help": "only these members' signals (names or keys)"}
    )
    drop_disputed: bool = field(
        default=False, metadata={"help": "leave out a signal that any member disputes"}
    )
    min_confirmations: int = field(
        default=0, metadata={"help": "only signals confirmed by at least this many members"}
    )

    def __post_init__(self) -> None:
        self.api = API_NAME


@dataclass
class HashmeshCheckpoint(state.FetchCheckpointBase):
    epoch: str
    cursor: int
    progress_s: int = 0  # the newest change's time seen (never goes back)
    stale: bool = False  # the node's database changed under us: start over

    def is_stale(self) -> bool:
        return self.stale

    def get_progress_timestamp(self) -> int | None:
        return self.progress_s


@dataclass
class HashmeshSignalMetadata(state.FetchedSignalMetadata):
    """One hashmesh signal as pytx keeps it."""

    signal_id: str
    signal_type: str  # pytx's name
    value: str
    member: str
    member_name: str
    labels: list[str]
    note: str | None
    confirmations: int
    disputes: int
    seen: int
    is_mine: bool = False

    def get_as_opinions(self) -> t.Sequence[state.SignalOpinion]:
        tags = set(self.labels)
        positive = state.SignalOpinionCategory.POSITIVE_CLASS
        negative = state.SignalOpinionCategory.NEGATIVE_CLASS
        opinions = [state.SignalOpinion(self.is_mine, positive, tags)]
        opinions += [state.SignalOpinion(False, positive, tags)] * self.confirmations
        opinions += [state.SignalOpinion(False, negative, tags)] * self.disputes
        return opinions


class HashmeshError(Exception):
    """The node answered with a problem, or could not be reached."""


class HashmeshSignalExchangeAPI(
    auth.SignalExchangeWithAuth[HashmeshCollabConfig, HashmeshCredentials],
    SignalExchangeAPI[
        HashmeshCollabConfig,
        HashmeshCheckpoint,
        HashmeshSignalMetadata,
        str,
        HashmeshSignalMetadata,
    ],
):
    """Fetch one hashmesh node's view of the federation's list through its change feed."""

    def __init__(self, collab: HashmeshCollabConfig, credentials: HashmeshCredentials) -> None:
        self.collab = collab
        self.token = credentials.token
        self._identity: str | None = None

    @staticmethod
    def get_config_cls() -> type[HashmeshCollabConfig]:
        return HashmeshCollabConfig

    @staticmethod
    def get_checkpoint_cls() -> type[HashmeshCheckpoint]:
        return HashmeshCheckpoint

    @staticmethod
    def get_record_cls() -> type[HashmeshSignalMetadata]:
        return HashmeshSignalMetadata

    @staticmethod
    def get_credential_cls() -> type[HashmeshCredentials]:
        return HashmeshCredentials

    @classmethod
    def get_name(cls) -> str:
        return API_NAME

    @classmethod
    def for_collab(
        cls, collab: HashmeshCollabConfig, credentials: HashmeshCredentials | None = None
    ) -> "HashmeshSignalExchangeAPI":
        return cls(collab, credentials or HashmeshCredentials.get(cls))

    # ---- HTTP -------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: t.Any = None) -> t.Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.collab.node_url.rstrip("/") + path, data, method=method,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as e:
            with e:
                try:
                    problem = json.loads(e.read())
                except ValueError:
                    problem = {}
            raise HashmeshHTTPError(e.code, problem) from None
        except urllib.error.URLError as e:
            raise HashmeshError(f"cannot reach {self.collab.node_url}: {e.reason}") from None

    def identity(self) -> str:
        """This node's member identity (its signals are "mine")."""
        if self._identity is None:
            status = self._call("GET", "/v1/status")
            key = status["node"]["key"]
            found = [m["identity"] for m in status["members"] if m["key"] == key]
            self._identity = str(found[0] if found else key)
        return self._identity

    # ---- fetching ---------------------------------------------------------------------

    def fetch_iter(
        self,
        supported_signal_types: t.Sequence[type[SignalType]],
        checkpoint: HashmeshCheckpoint | None,
    ) -> t.Iterator[state.FetchDelta[str, HashmeshSignalMetadata, HashmeshCheckpoint]]:
        wanted = {s.get_name() for s in supported_signal_types}
        cursor = 0 if checkpoint is None else checkpoint.cursor
        epoch = None if checkpoint is None else checkpoint.epoch
        progress = 0 if checkpoint is None else checkpoint.progress_s
        while True:
            query = {"after": str(cursor), "limit": str(PAGE)}
            if epoch is not None:
                query["epoch"] = epoch
            try:
                page = self._call("GET", "/v1/changes?" + urllib.parse.urlencode(query))
            except HashmeshHTTPError as e:
                if e.status != 409:
                    raise
                stale = HashmeshCheckpoint(str(e.problem.get("epoch", "")), 0, progress, True)
                yield state.FetchDelta({}, stale)  # the next fetch clears and starts over
                return
            epoch = str(page["epoch"])
            updates: dict[str, HashmeshSignalMetadata | None] = {}
            for change in page["changes"]:
                updates[change["id"]] = self._value(change["signal"], wanted)
                progress = max(progress, int(change["ts"]) // 1000)
            cursor = int(page["next"])
            if not page["changes"]:
                if checkpoint is None or checkpoint.epoch != epoch:
                    yield state.FetchDelta({}, HashmeshCheckpoint(epoch, cursor, progress))
                return
            yield state.FetchDelta(updates, HashmeshCheckpoint(epoch, cursor, progress))
            checkpoint = None

    def _value(
        self, signal: dict[str, t.Any] | None, wanted: set[str]
    ) -> HashmeshSignalMetadata | None:
        """The record for a signal's state now, or None (a delete) if pytx should not hold it."""
        if signal is None or signal.get("status") != "active":
            return None
        name = PYTX_NAMES.get(str(signal["type"]))
        if name is None or name not in wanted or not self._kept(signal):
            return None
        tallies = signal.get("tallies") or {}
        return HashmeshSignalMetadata(
            signal_id=str(signal["id"]), signal_type=name, value=str(signal["value"]),
            member=str(signal["member"]), member_name=str(signal.get("member_name") or ""),
            labels=list(signal.get("labels") or []), note=signal.get("note"),
            confirmations=int(tallies.get("confirm", 0)), disputes=int(tallies.get("dispute", 0)),
            seen=int(tallies.get("seen", 0)), is_mine=signal["member"] == self.identity(),
        )  # fmt: skip

    def _kept(self, signal: dict[str, t.Any]) -> bool:
        c = self.collab
        tallies = signal.get("tallies") or {}
        if c.labels and not set(c.labels) & set(signal.get("labels") or []):
            return False
        members = {m.lower() for m in c.members}
        name = str(signal.get("member_name") or "").lower()
        if members and name not in members and str(signal["member"]) not in members:
            return False
        if c.drop_disputed and tallies.get("dispute", 0):
            return False
        return int(tallies.get("confirm", 0)) >= c.min_confirmations

    @classmethod
    def naive_convert_to_signal_type(
        cls,
        signal_types: t.Sequence[type[SignalType]],
        collab: HashmeshCollabConfig,
        fetched: t.Mapping[str, HashmeshSignalMetadata],
    ) -> dict[type[SignalType], dict[str, HashmeshSignalMetadata]]:
        by_name = {s.get_name(): s for s in signal_types}
        converted: dict[type[SignalType], dict[str, HashmeshSignalMetadata]] = {}
        for record in sorted(fetched.values(), key=lambda r: r.signal_id):
            kind = by_name.get(record.signal_type)
            if kind is not None:
                converted.setdefault(kind, {})[record.value] = record
        return converted

    # ---- feedback ---------------------------------------------------------------------

    def report_opinion(
        self, s_type: type[SignalType], signal: str, opinion: state.SignalOpinion
    ) -> None:
        """Confirm (positive) or dispute (negative) every active signal with this hash."""
        kind = HASHMESH_NAMES.get(s_type.get_name())
        if kind is None:
            raise NotImplementedError(f"hashmesh has no {s_type.get_name()} signals")
        if opinion.category == state.SignalOpinionCategory.INVESTIGATION_SEED:
            raise NotImplementedError("hashmesh opinions are confirm, dispute or seen")
        verdict = (
            "confirm" if opinion.category == state.SignalOpinionCategory.POSITIVE_CLASS
            else "dispute"
        )  # fmt: skip
        query = urllib.parse.urlencode({"signal_type": kind, "signal": signal, "radius": "0"})
        hits = self._call("GET", "/v1/lookup?" + query)["hits"]
        for hit in hits:
            if hit["member"] == self.identity():
                continue  # a member's opinion on its own signal does not count
            body = {"verdict": verdict, "labels": sorted(opinion.tags)}
            self._call("POST", f"/v1/signals/{hit['id']}/opinions", body)


class HashmeshHTTPError(HashmeshError):
    def __init__(self, status: int, problem: dict[str, t.Any]) -> None:
        super().__init__(f"node answered {status}: {problem.get('detail', '')}")
        self.status, self.problem = status, problem


def token_from_home(home: str | os.PathLike[str]) -> HashmeshCredentials:
    """The credentials of a node home (its ``api.token``), for a pipeline on the node's host."""
    with open(os.path.join(home, "api.token"), encoding="utf-8") as f:
        return HashmeshCredentials(f.read().strip())


TX_MANIFEST = ThreatExchangeExtensionManifest(apis=(HashmeshSignalExchangeAPI,))
