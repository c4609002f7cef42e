"""``hashmesh replica``: run a stateless match replica of a node (node.replica.app).

Every option has an environment variable (``HASHMESH_REPLICA_*``), so a container needs no
arguments; the token comes from ``--token-file`` (a mounted secret) or
``HASHMESH_REPLICA_TOKEN``.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from node.errors import ConfigError
from node.replica.settings import DEFAULT_PORT, STALE_MODES


def _read_secret(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} file {path}: {e.strerror or e}") from e
    if not text:
        raise ConfigError(f"the {what} file {path} is empty")
    return text


@click.command()
@click.option(
    "--node",
    "node_url",
    envvar="HASHMESH_REPLICA_NODE",
    required=True,
    help="The node's URL, e.g. http://hashmesh-node:7401 or, for https, its pinned "
    "seed URL https://HOST:7400/#spki=<hex> [env HASHMESH_REPLICA_NODE].",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="HASHMESH_REPLICA_TOKEN_FILE",
    help="File holding this replica's token ('hashmesh tokens issue --replica' on "
    "the node); or set HASHMESH_REPLICA_TOKEN to the token itself.",
)
@click.option(
    "--host",
    envvar="HASHMESH_REPLICA_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 in a container).",
)
@click.option(
    "--port",
    envvar="HASHMESH_REPLICA_PORT",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
)
@click.option(
    "--max-lag-s",
    envvar="HASHMESH_REPLICA_MAX_LAG_S",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Ready while the node confirmed at most this many seconds ago that every change is held.",
)
@click.option(
    "--stale",
    envvar="HASHMESH_REPLICA_STALE",
    type=click.Choice(STALE_MODES),
    default="serve",
    show_default=True,
    help="When lagging or cut off from the node: serve answers from what is held "
    "(marked by a header) and stays ready, or refuse them (503, not ready).",
)
@click.option(
    "--poll-wait-s",
    envvar="HASHMESH_REPLICA_POLL_WAIT_S",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Long poll of the node's change feed (at most half of --max-lag-s).",
)
@click.option(
    "--rebuild-jitter-s",
    envvar="HASHMESH_REPLICA_REBUILD_JITTER_S",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="After the node's database was restored, wait a random time up to this "
    "before loading a new snapshot, so replicas do not rebuild all at once.",
)
@click.option(
    "--api-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="HASHMESH_REPLICA_API_TOKEN_FILE",
    help="Require this bearer token of the replica's own clients (default: none; "
    "keep the replica on a private network).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="HASHMESH_REPLICA_LOG_FORMAT",
    show_default=True,
)
def replica(
    node_url: str,
    token_file: Path | None,
    host: str,
    port: int,
    max_lag_s: float,
    stale: str,
    poll_wait_s: float,
    rebuild_jitter_s: float,
    api_token_file: Path | None,
    log_format: str,
) -> None:
    """Run a stateless match replica of a node: it loads the node's active list, follows
    its change feed, and answers POST /v1/match and GET /v1/lookup exactly as the node
    does, with /healthz, /readyz and /metrics; until SIGTERM/SIGINT. It stores nothing."""
    from node.replica.app import run_replica  # aiohttp and the index load only here
    from node.replica.settings import ReplicaSettings

    if token_file is not None:
        token = _read_secret(token_file, "token")
    elif os.environ.get("HASHMESH_REPLICA_TOKEN", "").strip():
        token = os.environ["HASHMESH_REPLICA_TOKEN"].strip()
    else:
        raise ConfigError("give the replica token: --token-file PATH or HASHMESH_REPLICA_TOKEN")
    api_token = _read_secret(api_token_file, "API token") if api_token_file else None
    settings = ReplicaSettings.for_node(
        node_url, token, host=host, port=port, max_lag_s=max_lag_s, stale=stale,
        poll_wait_s=poll_wait_s, rebuild_jitter_s=rebuild_jitter_s, api_token=api_token,
    )  # fmt: skip
    run_replica(settings, log_format=log_format)


COMMANDS: tuple[click.Command, ...] = (replica,)
