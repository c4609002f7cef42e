"""Running a node process: listeners, logging, the runtime file, graceful shutdown.

``run_node`` serves ``make_app(config)`` until SIGTERM or SIGINT; both end in a graceful
exit (background tasks are cancelled through ``cleanup_ctx`` and the store is closed).

Listeners: ``listen`` serves peers (and the token-protected local API) over HTTPS with the
home's certificate, or over plain HTTP when ``[tls] enabled = false`` (said loudly in the log
at start). When TLS is on, ``api_listen`` (loopback only; default: listen port + 1) serves the
same app over plain HTTP for the CLI, health checks and Prometheus on this host. While the
node runs, ``HOME/node.json`` records the pid and the local API URL so CLI commands find it.

One node per home: ``run_node`` first takes the home's lock (``node.homelock``); a second
``serve`` is refused before it logs, binds or writes anything, so ``node.json`` is only ever
written and removed by the node that holds the lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from node.config import NodeConfig
from node.home import NodeHome
from node.homelock import SERVE, HomeLock
from node.net.app import make_app
from node.net.context import NODE
from node.net.deadlines import GuardedRunner, counting
from node.net.tls import NodeTls
from node.runtime import tune_for_serving

SHUTDOWN_TIMEOUT_S = 5.0
# LogRecord attributes that are not "extra" fields
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every ``extra`` field.

    Fields that name things (``peer``, ``author``, ``seq``, ``record``, ``reason``, …) come from
    ``extra=`` at the call site; secrets are never passed there (nor in messages).
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and value is not None:
                data[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, sort_keys=True)


def configure_logging(log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _local_api_url(config: NodeConfig, tls: NodeTls) -> str:
    if config.api_address is not None:
        host, port = config.api_address
        scheme = "http"
    else:
        host, port = config.host, config.port
        host = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
        scheme = "https" if tls.enabled else "http"
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


def _log_start(config: NodeConfig, tls: NodeTls, api: str) -> None:
    log = logging.getLogger("hashmesh.node")
    if tls.enabled:
        log.info(
            "node %s serving HTTPS on %s (TLS key fingerprint %s); local API on %s",
            config.name, config.listen, tls.spki, api,
        )  # fmt: skip
        return
    if config.url.startswith("https://"):
        exposure = f"a TLS-terminating proxy must serve {config.url}"
        if not tls.spki:
            exposure += " (set [tls] proxy_cert: no TLS key is announced for peers to pin)"
    else:
        exposure = f"peers reach it at {config.url} unencrypted"
    log.warning(
        "node %s serving PLAIN HTTP on %s because [tls] enabled = false: %s",
        config.name, config.listen, exposure,
    )  # fmt: skip


def _runtime_ctx(config: NodeConfig) -> object:
    path: Path = NodeHome(config.home).runtime_path

    async def runtime(app: web.Application) -> AsyncIterator[None]:
        tls = app[NODE].tls
        api = _local_api_url(config, tls)
        info = {"pid": os.getpid(), "api": api, "url": config.url, "tls": tls.spki}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info), "utf-8")
        os.replace(tmp, path)
        _log_start(config, tls, api)
        yield
        path.unlink(missing_ok=True)

    return runtime


def listeners(config: NodeConfig, tls: NodeTls) -> list[tuple[str, int, ssl.SSLContext | None]]:
    """(host, port, TLS context or None) for every socket the node serves."""
    sites = [(config.host, config.port, tls.server_context())]
    if config.api_address is not None:
        sites.append((*config.api_address, None))
    return sites


async def _serve(app: web.Application, config: NodeConfig) -> None:
    sites = listeners(config, app[NODE].tls)  # a bad certificate or key fails before startup
    runner = GuardedRunner(  # read deadlines on every listener (node.net.deadlines)
        app,
        header_timeout_s=config.limits.header_timeout_s,
        on_timeout=counting(app[NODE].counters),
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await runner.setup()
    try:
        for host, port, context in sites:
            await web.TCPSite(runner, host, port, ssl_context=context).start()
        await stop.wait()
    finally:
        await runner.cleanup()


def run_node(config: NodeConfig, *, log_format: str = "text") -> None:
    """Serve the home in config; HomeBusyError at once, having touched nothing, if a node
    (or an offline write command) holds the home's lock."""
    with HomeLock.acquire(config.home, SERVE):
        tune_for_serving()
        configure_logging(log_format)
        app = make_app(config)
        app.cleanup_ctx.append(_runtime_ctx(config))  # type: ignore[arg-type]
        asyncio.run(_serve(app, config))
