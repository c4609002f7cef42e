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
  and each dispute into a negative one, with the signal's labels as tags; pytx's index and
  dataset keep one record a hash, so ``naive_convert_to_signal_type`` folds the signals of
  one hash into one record whose opinions are all of theirs;
- ``report_opinion`` signs a hashmesh opinion (confirm for a positive opinion, dispute for a
  negative one) on every active signal with that hash.

Synchronous, on the standard library's HTTP client (pytx and HMA call exchanges
synchronously).

Importing this module also mends how pytx pickles its PDQ index (``PDQMultiHashIndex``,
faiss's ``IndexBinaryMultiHash``), so that ``threatexchange match`` finds what ``fetch``
indexed: see ``_multihash_state``.
"""

import json
import logging
import os
import struct
import typing as t
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace

import faiss
import numpy as np
import numpy.typing as npt
from threatexchange.exchanges import auth
from threatexchange.exchanges import fetch_state as state
from threatexchange.exchanges.collab_config import CollaborationConfigWithDefaults
from threatexchange.exchanges.signal_exchange_api import SignalExchangeAPI
from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest
from threatexchange.signal_type.pdq.pdq_faiss_matcher import PDQMultiHashIndex
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
    # the other signals with this hash, where pytx keeps one record a hash (its index and
    # dataset, from naive_convert_to_signal_type): their opinions count too
    also: tuple["HashmeshSignalMetadata", ...] = ()

    def get_as_opinions(self) -> t.Sequence[state.SignalOpinion]:
        tags = set(self.labels)
        positive = state.SignalOpinionCategory.POSITIVE_CLASS
        negative = state.SignalOpinionCategory.NEGATIVE_CLASS
        opinions = [state.SignalOpinion(self.is_mine, positive, tags)]
        opinions += [state.SignalOpinion(False, positive, tags)] * self.confirmations
        opinions += [state.SignalOpinion(False, negative, tags)] * self.disputes
        for other in self.also:
            opinions += other.get_as_opinions()
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
        """pytx keys by hash: the signals with one hash (two members listing it) become one
        record, the first by signal id, holding the others in ``also``."""
        by_name = {s.get_name(): s for s in signal_types}
        converted: dict[type[SignalType], dict[str, HashmeshSignalMetadata]] = {}
        for record in sorted(fetched.values(), key=lambda r: r.signal_id):
            kind = by_name.get(record.signal_type)
            if kind is None:
                continue
            by_value = converted.setdefault(kind, {})
            first = by_value.get(record.value)
            by_value[record.value] = (
                record if first is None else replace(first, also=(*first.also, record))
            )
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
        answer = self._call("GET", "/v1/lookup?" + query)
        for hit in [*answer["hits"], *answer.get("suppressed", ())]:  # suppressed: still signals
            if hit.get("source", {}).get("kind", "federation") != "federation":
                continue  # an entry of a local list, not a signal
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


# ---- pytx's PDQ index, pickled so that it matches after loading --------------------------
#
# pytx's CLI builds its PDQ index (``PDQIndex`` over ``PDQMultiHashIndex``, a faiss
# ``IndexBinaryIDMap2`` around an ``IndexBinaryMultiHash``: 16 hash maps keyed by 16 bits of
# the hash each) after ``fetch``, pickles it to ``~/.threatexchange/index/pdq.index``, and
# ``match`` unpickles it; HMA stores it the same way. The pickle is faiss's own
# ``serialize_index_binary``, whose ``write_binary_multi_hash_map`` writes each bucket's
# length in ``id_bits`` bits, the fewest that hold an id (``ntotal <= 2**id_bits``). A bucket
# holding all ``ntotal`` ids when ``ntotal`` is a power of two does not fit: its length is
# written as 0 (the carry spills into the next field) and the maps read back empty or out of
# step. With one PDQ hash (``id_bits`` 0) every bucket is such a bucket, so the loaded index
# never matches, though ``dataset`` lists the hash and the unpickled index holds it; two or
# four near-identical hashes lose most of their buckets. (faiss-cpu 1.7.4 to 1.15.1 with
# threatexchange 1.2.17; ThreatExchange issue #1318.) faiss's reader takes
# ``id_bits`` from the stream, so such maps written with one bit more are read back whole
# by any faiss: ``_multihash_state`` writes them so and leaves every other index byte for
# byte as faiss wrote it.

_FOURCC = 4
_HEADER = 21  # a binary index's header: d, code_size (int32), ntotal (int64), trained, metric
_MIH_FIELDS = 12  # IndexBinaryMultiHash's b, nhash, nflip (int32) after its storage


def _multihash_state(self: PDQMultiHashIndex) -> npt.NDArray[np.uint8]:
    """``PDQMultiHashIndex.__getstate__``: faiss's bytes, with the hash maps it would write
    unreadably written again so that they load whole."""
    stock: npt.NDArray[np.uint8] = faiss.serialize_index_binary(self.faiss_index)
    n = int(self.mih_index.ntotal)
    if n == 0 or n & (n - 1):
        return stock  # not a power of two: every bucket's length fits in faiss's id_bits
    try:
        mended = _mended_multihash(self, bytes(stock))
    except ValueError as e:  # a layout this does not know: faiss's bytes as they are
        logging.getLogger(__name__).warning("PDQ index pickled as faiss writes it: %s", e)
        return stock
    return stock if mended is None else np.frombuffer(mended, dtype=np.uint8).copy()


def _mended_multihash(index: PDQMultiHashIndex, stock: bytes) -> bytes | None:
    """``stock`` with its hash maps rewritten, or None when faiss wrote them readably."""
    mih = index.mih_index
    n, nhash, b = int(mih.ntotal), int(mih.nhash), int(mih.b)
    inner = bytes(faiss.serialize_index_binary(mih))
    storage = bytes(faiss.serialize_index_binary(mih.storage))
    head = _FOURCC + _HEADER
    if not (
        stock[:_FOURCC] == b"IBM2" and stock[head : head + len(inner)] == inner
        and inner[:_FOURCC] == b"IBHm" and inner[head : head + len(storage)] == storage
        and b % 8 == 0 and 0 < b <= 64 and nhash * b <= 8 * int(mih.code_size)
    ):  # fmt: skip
        raise ValueError("not an IndexBinaryIDMap2 around an IndexBinaryMultiHash")
    start = pos = head + len(storage) + _MIH_FIELDS
    written = []  # each map's id_bits as faiss wrote it
    for _ in range(nhash):
        id_bits, _sz, length = struct.unpack_from("<iQQ", inner, pos)
        written.append(id_bits)
        pos += struct.calcsize("<iQQ") + length
    if pos != len(inner):
        raise ValueError("hash maps of an unexpected length")
    if n < 1 << min(written):
        return None  # every bucket's length fits (a faiss that writes a bit more)
    codes = np.asarray(mih.storage.reconstruct_n(0, n), dtype=np.uint8)
    width = b // 8
    parts = codes[:, : nhash * width].reshape(n, nhash, width).astype(np.uint64)
    keys = (parts << (8 * np.arange(width, dtype=np.uint64))).sum(axis=2, dtype=np.uint64)
    largest = max(int(np.unique(keys[:, h], return_counts=True)[1].max()) for h in range(nhash))
    if largest < 1 << min(written):
        return None
    maps = b"".join(_multihash_map(keys[:, h], b, n.bit_length()) for h in range(nhash))
    mended = stock[:head] + inner[:start] + maps + stock[head + len(inner) :]
    if int(faiss.deserialize_index_binary(np.frombuffer(mended, np.uint8)).ntotal) != n:
        raise ValueError("the rewritten index does not load")
    return mended


def _multihash_map(keys: npt.NDArray[np.uint64], b: int, id_bits: int) -> bytes:
    """One hash map as faiss's ``read_binary_multi_hash_map`` reads it: ``id_bits``, the
    number of buckets, and a bitstring (least significant bit first) of each bucket's key
    (``b`` bits), length and ids (``id_bits`` each)."""
    order = np.argsort(keys, kind="stable")  # ids in each bucket ascending, as faiss adds them
    bucket_keys, first, counts = np.unique(keys[order], return_index=True, return_counts=True)
    fields = len(bucket_keys) * 2 + len(keys)
    values = np.empty(fields, dtype=np.uint64)
    widths = np.full(fields, id_bits)
    at = first + 2 * np.arange(len(bucket_keys))  # each bucket's key field
    values[at], widths[at], values[at + 1] = bucket_keys, b, counts
    is_id = np.ones(fields, dtype=bool)
    is_id[at] = is_id[at + 1] = False
    values[is_id] = order
    shifts = np.arange(max(b, id_bits), dtype=np.uint64)
    bits = ((values[:, None] >> shifts) & 1).astype(np.uint8)[shifts[None, :] < widths[:, None]]
    packed = np.packbits(bits, bitorder="little").tobytes()
    return struct.pack("<iQQ", id_bits, len(bucket_keys), len(packed)) + packed


if getattr(PDQMultiHashIndex, "__getstate__", None) is not _multihash_state:
    setattr(PDQMultiHashIndex, "__getstate__", _multihash_state)  # noqa: B010 - a method

TX_MANIFEST = ThreatExchangeExtensionManifest(apis=(HashmeshSignalExchangeAPI,))
