"""One writer per node home: an exclusive ``flock`` on ``HOME/node.lock``.

``hashmesh serve`` takes the lock before it does anything else and holds it until it exits;
a command that would write the store directly (``add``, ``import``, ``member vote``, ``peers
add``... while no node runs, ``node.cli.backend``) takes it for as long as it writes. Whoever
cannot take it is refused at once and touches nothing: a second ``serve`` says which node
runs, and a write command goes through the running node's local API instead.

The kernel drops the lock when its holder exits however it exits (``kill -9``, OOM), so a
crashed node never leaves a home locked. The file holds the holder's pid and command (JSON)
so that the refusal can name it; it is never deleted (deleting a lock file lets two
processes lock two different files). The descriptor is close-on-exec, so no child process
(verify workers, the forkserver) inherits the lock and outlives it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from node.errors import ConfigError

LOCK_FILE: Final = "node.lock"
SERVE: Final = "serve"
_HOLDER_READS: Final = 10  # a holder writes its pid just after locking: re-read briefly
_HOLDER_READ_PAUSE_S: Final = 0.02


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds a home's lock, as the holder wrote it (pid None: not written yet)."""

    pid: int | None
    command: str

    def describe(self) -> str:
        pid = "pid unknown" if self.pid is None else f"pid {self.pid}"
        if self.command == SERVE:
            return f"a node is already running ({pid})"
        if self.command == "unknown":
            return f"another process ({pid}) holds its lock"
        return f"'hashmesh {self.command}' ({pid}) is writing to it"


class HomeBusyError(ConfigError):
    """Another process holds the home's lock."""

    title = "home in use"

    def __init__(self, home: Path, holder: LockHolder, *, hint: str = "") -> None:
        super().__init__(f"{home}: {holder.describe()}" + (f"; {hint}" if hint else ""),
                         status=409)  # fmt: skip
        self.home = home
        self.holder = holder


class HomeLock:
    """The held lock of one home; ``release`` (or leaving the ``with``) lets it go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, home: Path, command: str) -> HomeLock:
        """Lock home for command (``SERVE`` or a CLI command name); HomeBusyError if held."""
        path = Path(home) / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HomeBusyError(Path(home), read_holder(path)) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command}).encode(), 0)
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # a stale pid would mislead the next refusal
        os.close(fd)  # closing the last descriptor unlocks

    def __enter__(self) -> HomeLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: Path) -> LockHolder:
    """The holder named in a lock file that another process holds locked.

    The holder writes its pid just after it takes the lock; in that instant the file is
    empty (or names a crashed former holder), so read again for a moment before giving up.
    """
    holder = LockHolder(None, "unknown")
    for attempt in range(_HOLDER_READS):
        if attempt:
            time.sleep(_HOLDER_READ_PAUSE_S)
        holder = _parse_holder(path)
        if holder.pid is not None and _alive(holder.pid):
            return holder
    return holder


def _parse_holder(path: Path) -> LockHolder:
    try:
        data = json.loads(path.read_bytes() or b"{}")
    except (OSError, ValueError):
        return LockHolder(None, "unknown")
    pid = data.get("pid") if isinstance(data, dict) else None
    command = data.get("command") if isinstance(data, dict) else None
    return LockHolder(pid if isinstance(pid, int) else None, str(command or "unknown"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
