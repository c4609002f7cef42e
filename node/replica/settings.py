"""A replica's settings (``hashmesh replica``'s options and their environment variables).

The node is named by its URL; an ``https`` node is reached only pinned, by the SHA-256 of
its TLS public key, as peers reach it (``https://node:7400/#spki=<64 hex>``, the seed URL
``hashmesh card`` prints; node.net.tls). A plain ``http`` URL is for a node on the same
host or a private network (its loopback local API, or behind a TLS-terminating Service).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from node.config import split_seed
from node.errors import ConfigError

if TYPE_CHECKING:
    from node.net.tls import SpkiPin

DEFAULT_PORT: Final = 8471
STALE_MODES: Final = ("serve", "refuse")


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    node_url: str  # the node's origin, no trailing slash
    token: str
    pin: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_lag_s: float = 5.0  # readiness bound
    stale: str = "serve"  # what /v1/match does when lagging: "serve" or "refuse" (503)
    poll_wait_s: float = 2.0  # the feed's long poll (at most max_lag_s / 2)
    rebuild_jitter_s: float = 10.0  # random wait before a new snapshot after an epoch change
    retry_max_s: float = 10.0  # backoff cap while the node is unreachable
    timeout_s: float = 30.0  # connect, and read beyond the long poll's wait
    api_token: str | None = None  # required of the replica's own clients when set

    def __post_init__(self) -> None:
        if not self.token.strip():
            raise ConfigError("the replica token is empty")
        if self.stale not in STALE_MODES:
            raise ConfigError(f"--stale must be one of {', '.join(STALE_MODES)}")
        for name in ("max_lag_s", "poll_wait_s", "retry_max_s", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
        if not self.rebuild_jitter_s >= 0:
            raise ConfigError("rebuild_jitter_s must be 0 or more")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1..65535, got {self.port}")

    @classmethod
    def for_node(cls, url: str, token: str, **options: object) -> ReplicaSettings:
        """Settings for the node at url (``#spki=<hex>`` pins an https node)."""
        base, pin = split_seed(url)
        if base.startswith("https://") and pin is None:
            raise ConfigError(
                f"an https node is reached pinned: give its URL as {base}#spki=<64 hex> "
                "(the seed URL 'hashmesh card' prints on the node)"
            )
        return cls(node_url=base.rstrip("/"), token=token.strip(), pin=pin, **options)  # type: ignore[arg-type]

    def ssl(self) -> SpkiPin | bool:
        """aiohttp's ``ssl=`` for requests to the node: the pin, or default checks (http)."""
        from node.net.tls import SpkiPin  # aiohttp and cryptography: not for every command

        return SpkiPin(self.pin) if self.pin else True
