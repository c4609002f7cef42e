"""Node configuration: ``HOME/config.toml``, overridden by environment, overridden by flags.

Every key, its default and its environment variable::

    name          display name of this member               HASHMESH_NAME
    listen        "127.0.0.1:7400" (loopback by default)    HASHMESH_LISTEN
    url           public URL announced to peers             HASHMESH_URL
                  (default https://LISTEN/, http:// when [tls] enabled = false)
    aliases       other URLs peers may reach this node at (a proxy's name, a second name);
                  a peer request signed for any URL but url and these is refused
                                                            HASHMESH_ALIASES (comma-separated)
    peers         seed peer URLs; "https://host:7400/#spki=<64 hex>" pins the seed's TLS key
                                                            HASHMESH_PEERS (comma-separated)
    api_listen    loopback HOST:PORT of a plain-HTTP listener for the local API, /metrics and
                  health checks ("" = listen port + 1 when TLS is on, none when off)
                                                            HASHMESH_API_LISTEN
    source_address  local IP for outgoing peer connections ("" = chosen by the OS)
    [tls] enabled = true, cert = "tls.crt", key = "tls.key" (paths relative to the home),
          tofu = false (trust unpinned https seeds on first use), proxy_cert = "" (with
          enabled = false behind a TLS-terminating proxy: the proxy's certificate, announced)
    [gossip] interval_s = 2.0, fanout = 3, page_records = 5000, timeout_s = 10.0,
             backoff_max_s = 60.0, relay_asks = 3 (peers asked to relay this node's own
             records; the others get them with relay=0)
    [limits] max_request_bytes = 4194304 (JSON and NDJSON bodies), max_image_bytes = 33554432
             (an image upload to /v1/hash, /v1/match, /v1/signals), max_image_pixels = 40000000
             (pixels decoded per image), max_batch_records = 2000, header_timeout_s = 10.0,
             body_timeout_s = 60.0 (read deadlines, node.net.deadlines), max_video_bytes =
             536870912, max_video_seconds = 10800.0, max_video_frames = 500000,
             video_time_budget_s = 600.0 (a video upload: streamed to disk, decoded in time)
    [media] min_pdq_quality = 50 (below it an image is too featureless to list or match),
            video_interval_s = 1.0 (a frame each second), video_prune_bits = -1 (no pruning),
            dihedral = false (image queries also try the 7 rotations and mirror images)
    [match]  radius per type, min_confirmations, max_dispute_share, ignore_members, and
             [match.labels."LABEL"] / [match.lists."NAME"] (node.matchpolicy)
    [moderation]  the match log, actions on a match, sightings, flood quarantine
                  (``ModerationConfig``; node.moderation)
    [[webhooks]]  url, secret (or secret_env), name, labels, lists, types, min_confirmations:
                  one rule each (``WebhookRule``)
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from node.errors import ConfigError
from node.matchpolicy import RADIUS_BITS, MatchPolicy, parse_config
from protocol.sync import MAX_PAGE_RECORDS
from protocol.urls import normalise_url

DEFAULT_PORT = 7400
CONFIG_FILE = "config.toml"


@dataclass(frozen=True, slots=True)
class GossipConfig:
    interval_s: float = 2.0
    fanout: int = 3
    page_records: int = 5000  # bigger pages amortise verification dispatch (bootstrap)
    timeout_s: float = 10.0
    backoff_max_s: float = 60.0
    relay_asks: int = 3  # peers asked to relay this node's own records (SPEC 10.3)

    def __post_init__(self) -> None:
        if not self.interval_s > 0 or not self.timeout_s > 0 or not self.backoff_max_s > 0:
            raise ValueError("interval_s, timeout_s and backoff_max_s must be positive")
        if self.fanout < 0:
            raise ValueError("fanout must be 0 or more")
        if self.relay_asks < 0:
            raise ValueError("relay_asks must be 0 or more")
        if not 1 <= self.page_records <= MAX_PAGE_RECORDS:
            raise ValueError(f"page_records must be 1..{MAX_PAGE_RECORDS}")


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_request_bytes: int = 4 * 1024 * 1024
    max_image_bytes: int = 32 * 1024 * 1024  # node.media.hashing's defaults (not imported: the
    max_image_pixels: int = 40_000_000  # CLI reads config without loading the image stack)
    max_batch_records: int = 2000
    header_timeout_s: float = 10.0  # a request's headers, from connection or first byte
    body_timeout_s: float = 60.0  # a request's body, from its headers
    max_video_bytes: int = 512 * 1024 * 1024  # node.media.video's defaults, not imported (above)
    max_video_seconds: float = 3 * 3600.0
    max_video_frames: int = 500_000  # frames decoded, hashed or not
    video_time_budget_s: float = 600.0  # decoding one video, wall clock

    def __post_init__(self) -> None:
        if not self.header_timeout_s > 0 or not self.body_timeout_s > 0:
            raise ValueError("header_timeout_s and body_timeout_s must be positive")
        if min(self.max_request_bytes, self.max_image_bytes, self.max_image_pixels) < 1:
            raise ValueError("max_request_bytes, max_image_bytes and max_image_pixels must be >= 1")
        if min(self.max_video_bytes, self.max_video_frames) < 1:
            raise ValueError("max_video_bytes and max_video_frames must be >= 1")
        if not self.max_video_seconds > 0 or not self.video_time_budget_s > 0:
            raise ValueError("max_video_seconds and video_time_budget_s must be positive")


@dataclass(frozen=True, slots=True)
class MediaConfig:
    min_pdq_quality: int = 50  # ThreatExchange's, node.media.hashing.LOW_QUALITY_THRESHOLD
    video_interval_s: float = 1.0  # a video frame hashed each interval (0: every frame)
    video_prune_bits: int = -1  # drop a frame within this many bits of the last kept (-1: off)
    dihedral: bool = False  # image queries also match rotated and mirrored copies

    def __post_init__(self) -> None:
        if not 0 <= self.min_pdq_quality <= 100:
            raise ValueError("min_pdq_quality must be 0..100 (PDQ quality is 0..100)")
        if not self.video_interval_s >= 0:
            raise ValueError("video_interval_s must be 0 or more")
        if not -1 <= self.video_prune_bits <= 256:
            raise ValueError("video_prune_bits must be -1 (off) or 0..256")


@dataclass(frozen=True, slots=True)
class ModerationConfig:
    """``[moderation]``: what the node does with the matches it answers (node.moderation)."""

    match_log: bool = True  # keep a log of every match answered (off: no log, no actions)
    match_log_days: float = 30.0  # how long a logged match is kept
    match_log_max_rows: int = 10_000_000  # and at most this many (the oldest go first)
    queue_max: int = 100_000  # matches waiting to be written; beyond, dropped and counted
    flush_interval_s: float = 0.5  # the log is written in batches this often
    sightings: tuple[str, ...] = ()  # labels whose signals get a `seen` opinion ("*": all)
    sighting_interval_s: float = 60.0  # sightings are published in batches this often
    sighting_batch: int = 20  # and at most this many at a time
    flood_floor: int = 1000  # quarantine when a window's matches pass this (0: never) ...
    flood_factor: float = 10.0  # ... and this many times the signal's baseline per window
    flood_window_s: float = 3600.0
    flood_baseline_days: float = 7.0  # the history the baseline is taken over
    held_max: int = 100  # held webhook deliveries kept per quarantined signal
    webhook_max_attempts: int = 8  # failed attempts before a delivery is dead
    webhook_backoff_s: float = 5.0  # first retry after about this; doubles each time
    webhook_backoff_max_s: float = 3600.0
    webhook_timeout_s: float = 10.0
    webhook_concurrency: int = 8  # deliveries in flight at once

    def __post_init__(self) -> None:
        positive = ("match_log_days", "flush_interval_s", "sighting_interval_s",
                    "flood_factor", "flood_window_s", "flood_baseline_days",
                    "webhook_backoff_s", "webhook_backoff_max_s", "webhook_timeout_s")  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        at_least_one = ("match_log_max_rows", "queue_max", "sighting_batch",
                        "webhook_max_attempts", "webhook_concurrency")  # fmt: skip
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be 1 or more")
        if self.flood_floor < 0 or self.held_max < 0:
            raise ValueError("flood_floor and held_max must be 0 or more")
        for label in self.sightings:
            if not isinstance(label, str) or not label:
                raise ValueError('sightings must be a list of labels (or ["*"])')


@dataclass(frozen=True, slots=True)
class WebhookRule:
    """One ``[[webhooks]]`` rule: a match whose signal passes every filter is POSTed to url,
    signed with secret (node.moderation.webhooks). An empty filter lets everything through."""

    name: str
    url: str
    secret: str = field(repr=False)
    labels: tuple[str, ...] = ()  # the signal has one of these labels
    lists: tuple[str, ...] = ()  # the hit comes from one of these lists ("federation")
    types: tuple[str, ...] = ()  # the signal is of one of these types
    min_confirmations: int = 0  # members' confirm opinions on the signal, at least

    def applies(self, labels: Sequence[str], list_name: str, type_: str, confirms: int) -> bool:
        return (
            (not self.labels or any(label in self.labels for label in labels))
            and (not self.lists or list_name in self.lists)
            and (not self.types or type_ in self.types)
            and confirms >= self.min_confirmations
        )


WEBHOOK_KEYS = frozenset({"name", "url", "secret", "secret_env", "labels", "lists", "types",
                          "min_confirmations"})  # fmt: skip
MIN_SECRET_CHARS = 16


@dataclass(frozen=True, slots=True)
class TlsConfig:
    enabled: bool = True
    cert: str = "tls.crt"
    key: str = "tls.key"
    tofu: bool = False
    proxy_cert: str = ""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    home: Path
    name: str
    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    url: str = f"https://127.0.0.1:{DEFAULT_PORT}/"
    aliases: tuple[str, ...] = ()  # other URLs this node answers signed requests for
    peers: tuple[str, ...] = ()
    seed_pins: dict[str, str] = field(default_factory=dict)  # seed URL -> SPKI fingerprint
    api_listen: str = ""
    source_address: str = ""  # local IP for outgoing peer connections ("" = any)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    match: MatchPolicy = field(default_factory=MatchPolicy)
    moderation: ModerationConfig = field(default_factory=ModerationConfig)
    webhooks: tuple[WebhookRule, ...] = ()

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def api_address(self) -> tuple[str, int] | None:
        """The plain-HTTP loopback listener for operators, if any (see ``api_listen``)."""
        if self.api_listen:
            return split_listen(self.api_listen)
        return ("127.0.0.1", self.port + 1) if self.tls.enabled and self.port else None

    @property
    def answers_to(self) -> tuple[str, ...]:
        """The URLs a peer request may be signed for (SPEC 10.1): ``url`` and ``aliases``."""
        return (self.url, *self.aliases)

    @property
    def tls_cert_path(self) -> Path:
        return self.home / self.tls.cert

    @property
    def tls_key_path(self) -> Path:
        return self.home / self.tls.key

    def with_overrides(
        self, *, listen: str | None = None, peers: Sequence[str] = (), url: str | None = None
    ) -> NodeConfig:
        seeds = [split_seed(p) for p in peers]
        merged = tuple(dict.fromkeys([*self.peers, *(u for u, _ in seeds)]))
        pins = self.seed_pins | {u: pin for u, pin in seeds if pin}
        return replace(
            self,
            listen=listen or self.listen,
            url=normalise_peer(url) if url else self.url,
            peers=merged,
            seed_pins=pins,
        )


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback_host(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_seed(url: str) -> tuple[str, str | None]:
    """A seed peer URL and its optional pin: ``https://host:7400/#spki=<64 hex>``."""
    base, _, fragment = url.strip().partition("#")
    pin = None
    if fragment:
        name, _, value = fragment.partition("=")
        value = value.strip().lower()
        if name != "spki" or len(value) != 64 or set(value) - set("0123456789abcdef"):
            raise ConfigError(f"a seed pin must be '#spki=<64 hex>', got {url!r}")
        if not base.lower().startswith("https://"):
            raise ConfigError(f"only an https:// seed can be pinned: {url!r}")
        pin = value
    return normalise_peer(base), pin


def normalise_peer(url: str) -> str:
    try:
        return normalise_url(url)
    except Exception as e:
        raise ConfigError(f"not a peer URL: {url!r} ({e})") from e


def _section(data: Mapping[str, Any], name: str, cls: type[Any]) -> Any:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = set(cls.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown key(s) in [{name}]: {', '.join(sorted(unknown))}")
    defaults = cls()
    for k, v in raw.items():
        if isinstance(getattr(defaults, k), bool) is not isinstance(v, bool):
            raise ConfigError(f"[{name}] {k}: {v!r} is not a value of its type")
    try:
        return cls(**{k: type(getattr(defaults, k))(v) for k, v in raw.items()})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid value in [{name}]: {e}") from e


TOP_KEYS = {
    "name",
    "listen",
    "url",
    "aliases",
    "peers",
    "api_listen",
    "source_address",
    "gossip",
    "limits",
    "media",
    "tls",
    "match",
    "moderation",
    "webhooks",
}


def load_config(home: Path, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Read HOME/config.toml and apply HASHMESH_* environment overrides."""
    env = os.environ if env is None else env
    path = home / CONFIG_FILE
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run 'hashmesh init --home {home}' first") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s): {', '.join(sorted(unknown))}")
    name = env.get("HASHMESH_NAME", data.get("name"))
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: name is required")
    peers = data.get("peers", [])
    if env.get("HASHMESH_PEERS"):
        peers = [p for p in env["HASHMESH_PEERS"].split(",") if p.strip()]
    if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
        raise ConfigError(f"{path}: peers must be a list of URLs")
    listen = str(env.get("HASHMESH_LISTEN", data.get("listen", f"127.0.0.1:{DEFAULT_PORT}")))
    split_listen(listen)
    tls = _section(data, "tls", TlsConfig)
    url = normalise_peer(str(env.get("HASHMESH_URL", data.get("url")) or _url_for(listen, tls)))
    if tls.enabled and not url.startswith("https://"):
        raise ConfigError(
            f"{path}: url {url!r} is not https:// but [tls] enabled = true; "
            "announce an https:// URL, or set [tls] enabled = false (plain HTTP)"
        )
    aliases = _url_list(path, "aliases", env.get("HASHMESH_ALIASES"), data.get("aliases", []))
    api_listen = str(env.get("HASHMESH_API_LISTEN", data.get("api_listen", "")))
    if api_listen and not is_loopback_host(split_listen(api_listen)[0]):
        raise ConfigError(f"{path}: api_listen serves plain HTTP and must be a loopback address")
    seeds = [split_seed(p) for p in peers]
    return NodeConfig(
        home=home,
        name=name,
        listen=listen,
        url=url,
        aliases=tuple(dict.fromkeys(a for a in aliases if a != url)),
        peers=tuple(dict.fromkeys(u for u, _ in seeds)),
        seed_pins={u: pin for u, pin in seeds if pin},
        api_listen=api_listen,
        source_address=str(data.get("source_address", "")),
        gossip=_section(data, "gossip", GossipConfig),
        limits=_section(data, "limits", LimitsConfig),
        media=_section(data, "media", MediaConfig),
        tls=tls,
        match=parse_config(data.get("match")),
        moderation=_moderation(data),
        webhooks=_webhooks(data.get("webhooks", []), env),
    )


def _moderation(data: Mapping[str, Any]) -> ModerationConfig:
    """``[moderation]``: as ``_section``, with ``sightings`` a list of labels."""
    raw = data.get("moderation", {})
    if not isinstance(raw, dict):
        raise ConfigError("[moderation] must be a table")
    sightings = raw.get("sightings", [])
    if not isinstance(sightings, list) or not all(isinstance(x, str) for x in sightings):
        raise ConfigError('[moderation] sightings must be a list of labels, or ["*"]')
    rest = _section({"moderation": {k: v for k, v in raw.items() if k != "sightings"}},
                    "moderation", ModerationConfig)  # fmt: skip
    labels = tuple(dict.fromkeys(x.strip().lower() for x in sightings))
    return replace(cast(ModerationConfig, rest), sightings=labels)


def _webhooks(raw: object, env: Mapping[str, str]) -> tuple[WebhookRule, ...]:
    """The ``[[webhooks]]`` rules: each needs an http(s) url and a secret of at least
    MIN_SECRET_CHARS characters (``secret``, or ``secret_env`` naming an environment
    variable); names are unique (default ``webhook-N``)."""
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise ConfigError("webhooks must be [[webhooks]] tables")
    rules: list[WebhookRule] = []
    for n, table in enumerate(raw, 1):
        where = f"[[webhooks]] #{n}"
        unknown = set(table) - WEBHOOK_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")
        url = table.get("url")
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise ConfigError(f"{where}: url must be an http:// or https:// URL")
        secret = table.get("secret")
        if "secret_env" in table:
            secret = env.get(str(table["secret_env"]))
            if secret is None:
                raise ConfigError(f"{where}: environment variable {table['secret_env']} is unset")
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_CHARS:
            raise ConfigError(f"{where}: secret must be at least {MIN_SECRET_CHARS} characters")
        filters = {k: table.get(k, []) for k in ("labels", "lists", "types")}
        for key, value in filters.items():
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ConfigError(f"{where}: {key} must be a list of strings")
        confirms = table.get("min_confirmations", 0)
        if type(confirms) is not int or confirms < 0:
            raise ConfigError(f"{where}: min_confirmations must be a whole number >= 0")
        name = table.get("name", f"webhook-{n}")
        if not isinstance(name, str) or not name or name in {r.name for r in rules}:
            raise ConfigError(f"{where}: name must be a string unique among the webhooks")
        rules.append(WebhookRule(name, url, secret, labels=tuple(filters["labels"]),
                                 lists=tuple(filters["lists"]), types=tuple(filters["types"]),
                                 min_confirmations=confirms))  # fmt: skip
    return tuple(rules)


def _url_list(path: Path, key: str, env_value: str | None, value: object) -> list[str]:
    if env_value:
        value = [v for v in env_value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: {key} must be a list of URLs")
    return [normalise_peer(v) for v in value]


def _url_for(listen: str, tls: TlsConfig) -> str:
    host, port = split_listen(listen)
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls.enabled else 'http'}://{host}:{port}/"


def render_seed(url: str) -> str:
    base, pin = split_seed(url)
    return f"{base}#spki={pin}" if pin else base


def render_config(
    name: str,
    listen: str,
    url: str | None = None,
    peers: Sequence[str] = (),
    *,
    tls: bool = True,
) -> str:
    """A commented config.toml for a new node home."""
    url = url or _url_for(listen, TlsConfig(enabled=tls))
    peer_list = ", ".join(f'"{render_seed(p)}"' for p in peers)
    g, lim, media, t = GossipConfig(), LimitsConfig(), MediaConfig(), TlsConfig()
    radii = "\n".join(f"{k} = {MatchPolicy().node_radius(k)}" for k in RADIUS_BITS)
    tls_comment = (
        "HTTPS with this home's certificate; peers pin its key's fingerprint"
        if tls
        else "plain HTTP: this node is reachable from this host only (loopback)"
    )
    return f"""# hashmesh node configuration (every key: deploy/config.example.toml)
name = {_toml_str(name)}
# address the node listens on; loopback by default, set 0.0.0.0:PORT only behind a firewall
listen = {_toml_str(listen)}
# URL other members use to reach this node (announced in a signed record)
url = {_toml_str(normalise_peer(url))}
# seed peers; more are learned from members' signed announce records.
# Pin an https seed with its key fingerprint: "https://host:7400/#spki=<64 hex>"
peers = [{peer_list}]
# loopback plain-HTTP listener for the CLI, /metrics and health checks
# ("" = listen port + 1 when TLS is on)
api_listen = ""

[tls]
enabled = {_toml_bool(tls)}  # {tls_comment}
cert = {_toml_str(t.cert)}
key = {_toml_str(t.key)}
tofu = {_toml_bool(t.tofu)}  # trust an unpinned https seed on first use (until its announce)

[gossip]
interval_s = {g.interval_s}      # anti-entropy interval (jittered +-25%)
fanout = {g.fanout}             # relay fanout (own records go to every peer)
page_records = {g.page_records}    # records per log page
timeout_s = {g.timeout_s}       # timeout of one peer exchange
backoff_max_s = {g.backoff_max_s}  # longest backoff for a failing peer
relay_asks = {g.relay_asks}         # peers asked to relay own records (the others: relay=0)

[limits]
max_request_bytes = {lim.max_request_bytes}   # JSON and NDJSON request bodies
max_image_bytes = {lim.max_image_bytes}    # an image upload (hash, match, add)
max_image_pixels = {lim.max_image_pixels}   # pixels decoded per image (bounds memory)
max_batch_records = {lim.max_batch_records}
header_timeout_s = {lim.header_timeout_s}  # a request's headers must arrive within this
body_timeout_s = {lim.body_timeout_s}     # and its body within this
max_video_bytes = {lim.max_video_bytes}   # a video upload (streamed to disk)
max_video_seconds = {lim.max_video_seconds}  # longest video hashed
max_video_frames = {lim.max_video_frames}   # frames decoded per video
video_time_budget_s = {lim.video_time_budget_s}  # decoding one video, at most

[media]
min_pdq_quality = {media.min_pdq_quality}  # below it an image is too featureless to list or match
video_interval_s = {media.video_interval_s}  # a video frame hashed every this many seconds
video_prune_bits = {media.video_prune_bits}  # drop frames this close to the last kept (-1: off)
dihedral = {_toml_bool(media.dihedral)}  # image queries also match rotated and mirrored copies

[match]
min_confirmations = 0    # a federation hit needs this many confirms by other members
max_dispute_share = 100  # drop a signal disputed by more than this % of its opinions
ignore_members = []      # members (names or keys) whose signals are not answered here

[match.radius]  # Hamming radius per signal type (SPEC 5.3's defaults)
{radii}
# per label: [match.labels."entity:example"] min_confirmations = 1, radius = {{ pdq = 20 }}
# per local list: [match.lists."under-review"] radius = {{ pdq = 16 }}
"""


def _toml_bool(value: bool) -> str:
    return "true" if value else "false"


def _toml_str(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
