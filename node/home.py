"""The node home directory: the member key, API token, config, genesis and database.

Layout::

    HOME/config.toml       configuration (node.config)
    HOME/member.key        the member's Ed25519 seed, hex (mode 0600)
    HOME/api.token         bearer token of the local operator API (mode 0600)
    HOME/tls.key           the node's TLS private key, P-256 PEM (mode 0600)
    HOME/tls.crt           its self-signed certificate; peers pin its key (node.tls)
    HOME/federation.json   the verified genesis document, once joined
    HOME/hashmesh.db       the SQLite store (+ -wal, -shm)
    HOME/node.json         written while `hashmesh serve` runs: its URL and pid
    HOME/node.lock         flock of the one process writing the home (node.homelock)
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from node.config import TlsConfig, load_config, normalise_peer, render_config, split_listen
from node.errors import ConfigError, NodeError, explain
from protocol.errors import RemoteProtocolError
from protocol.federation import Federation, check_name, parse_genesis
from protocol.keys import SigningKey

KEY_FILE = "member.key"
TOKEN_FILE = "api.token"
GENESIS_FILE = "federation.json"
DB_FILE = "hashmesh.db"
RUNTIME_FILE = "node.json"


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")


@dataclass(frozen=True, slots=True)
class NodeHome:
    path: Path

    @property
    def key_path(self) -> Path:
        return self.path / KEY_FILE

    @property
    def token_path(self) -> Path:
        return self.path / TOKEN_FILE

    @property
    def genesis_path(self) -> Path:
        return self.path / GENESIS_FILE

    @property
    def db_path(self) -> Path:
        return self.path / DB_FILE

    @property
    def runtime_path(self) -> Path:
        return self.path / RUNTIME_FILE

    def exists(self) -> bool:
        return self.key_path.exists()

    def require(self) -> NodeHome:
        if not self.exists():
            raise ConfigError(
                f"{self.path} is not a hashmesh node home (no {KEY_FILE}); "
                f"run 'hashmesh init --home {self.path} --name NAME' first"
            )
        return self

    def key(self) -> SigningKey:
        self.require()
        try:
            return SigningKey.from_hex(self.key_path.read_text("utf-8").strip())
        except Exception as e:
            raise ConfigError(f"{self.key_path} does not hold a valid key") from e

    def token(self) -> str:
        self.require()
        return self.token_path.read_text("utf-8").strip()

    def federation(self) -> Federation:
        self.require()
        try:
            data = self.genesis_path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(
                f"{self.path} has not joined a federation yet: "
                "run 'hashmesh federation join federation.json'"
            ) from None
        try:
            return parse_genesis(data)
        except RemoteProtocolError as e:
            raise ConfigError(
                f"{self.genesis_path} is damaged ({explain(e)}); re-install it with "
                f"'hashmesh federation join --home {self.path} GENESIS', GENESIS being the "
                "federation's signed genesis document (every founder holds a copy)"
            ) from e

    def has_federation(self) -> bool:
        return self.genesis_path.exists()

    def install_federation(self, federation: Federation) -> bool:
        """Install the verified genesis; True when it replaced a damaged federation.json.

        A damaged file is replaced only when that is safe: no database yet, or a database
        that belongs to this very federation. A home of another federation is refused.
        """
        repaired = False
        if self.has_federation():
            try:
                current = self.federation()
            except ConfigError as damaged:
                self._check_reinstall(federation, damaged)
                repaired = True
            else:
                if current.id != federation.id:
                    raise ConfigError(
                        f"{self.path} already belongs to federation {current.name!r} ({current.id})"
                    )
        tmp = self.genesis_path.with_suffix(".tmp")
        tmp.write_bytes(federation.to_bytes())
        os.replace(tmp, self.genesis_path)
        return repaired

    def _check_reinstall(self, federation: Federation, damaged: ConfigError) -> None:
        """Refuse to replace a damaged federation.json with the genesis of another
        federation than the one the home's database belongs to."""
        if not self.db_path.exists():
            return
        from node.store import schema  # SQLite loads only when a home must be repaired

        cause = damaged.__cause__
        what = f"{self.genesis_path} is damaged ({explain(cause) if cause else damaged})"
        try:
            stored = schema.database_federation(self.db_path)
        except NodeError as e:
            raise ConfigError(
                f"{what}, and {self.db_path} does not say which federation it holds ({e}); "
                f"move both aside to start this home over with {federation.name!r}"
            ) from e
        if stored.id != federation.id:
            raise ConfigError(
                f"{what}; its database {self.db_path} belongs to federation {stored.name!r} "
                f"({stored.id}), not {federation.name!r} ({federation.id}): join with the "
                f"genesis of {stored.name!r} to re-install it"
            )

    def runtime(self) -> dict[str, object] | None:
        """The running node's URL and pid, if `hashmesh serve` is running for this home."""
        try:
            info = json.loads(self.runtime_path.read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        pid = info.get("pid")
        if not isinstance(pid, int) or not _alive(pid):
            return None
        return dict(info)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def init_home(
    path: Path,
    *,
    name: str,
    listen: str,
    url: str | None = None,
    peers: tuple[str, ...] = (),
    seed: bytes | None = None,
    tls: bool | None = None,
) -> NodeHome:
    """Create a node home: key (0600), API token (0600), TLS key (0600) and certificate, config.

    Refuses an existing home. ``tls=None`` chooses: HTTPS unless the node listens on loopback
    and announces a loopback URL (then nothing it serves leaves this host); the choice is
    written into config.toml explicitly. All or nothing: every input is checked first, and if
    anything fails while writing, what was created is removed again (no half-made home).
    """
    from node.net.tls import loopback_only

    home = NodeHome(path)
    if home.exists():
        raise ConfigError(f"{path} is already a node home; refusing to overwrite its key")
    try:
        check_name(name)
    except RemoteProtocolError as e:
        raise ConfigError(f"--name {name!r}: {explain(e, kind=False)}") from e
    host = split_listen(listen)[0]
    if tls is None:
        tls = not loopback_only(host, normalise_peer(url) if url else None)
    if tls and url and not normalise_peer(url).startswith("https://"):
        raise ConfigError(
            f"--url {url} is plain HTTP but this node would serve TLS: announce an https:// URL, "
            "or pass --no-tls (plain HTTP, e.g. behind a TLS-terminating proxy)"
        )
    config = render_config(name, listen, url, peers, tls=tls)  # validates before writing
    top = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
    before = set(path.iterdir()) if path.is_dir() else set()
    try:
        _write_home(home, config, name=name, hosts=[host, *_url_hosts(url)], seed=seed)
        load_config(path)  # what every command reads next must load
    except BaseException:
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)
        elif path.is_dir():
            for created in set(path.iterdir()) - before:
                created.unlink()
        raise
    return home


def _url_hosts(url: str | None) -> list[str]:
    from node.net.tls import url_hosts

    return url_hosts(url) if url else []


def _write_home(
    home: NodeHome, config: str, *, name: str, hosts: list[str], seed: bytes | None
) -> None:
    from node.net.tls import create_certificate

    home.path.mkdir(parents=True, exist_ok=True)
    key = SigningKey(seed if seed is not None else secrets.token_bytes(32))
    _write_secret(home.key_path, key.seed.hex())
    _write_secret(home.token_path, secrets.token_urlsafe(32))
    defaults = TlsConfig()
    now = datetime.datetime.now(datetime.UTC)
    create_certificate(
        home.path / defaults.cert, home.path / defaults.key, name=name, hosts=hosts, now=now
    )
    (home.path / "config.toml").write_text(config, "utf-8")
