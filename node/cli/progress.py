"""Progress of long offline commands (``import``, ``audit``, ``report``) on standard error.

Standard output carries only the answer, so progress never mixes with ``--json``. Where it
goes depends on ``--progress/--no-progress`` and on whether stderr is a terminal:

- on a terminal: a rich progress bar (not with ``--json`` unless ``--progress``);
- elsewhere (a log file, a pipe, a CI job): one plain line every ``PROGRESS_INTERVAL_S``
  seconds while work remains -- a quick command prints nothing -- and with ``--progress``
  also a line when each stage starts and one when the command ends;
- ``--no-progress``: nothing.

``HASHMESH_PROGRESS_INTERVAL_S`` changes the interval of the plain lines.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

import click

PROGRESS_INTERVAL_S = 10.0
Update = Callable[[str, int, int | None], None]  # (stage description, done, total)

progress_option = click.option(
    "--progress/--no-progress",
    "show_progress",
    default=None,
    help="Progress on stderr [default: a bar on a terminal, else a line every "
    f"{PROGRESS_INTERVAL_S:.0f} s]; --progress adds a line per stage and at the end.",
)


def interval_s() -> float:
    try:
        return max(0.0, float(os.environ.get("HASHMESH_PROGRESS_INTERVAL_S", "")))
    except ValueError:
        return PROGRESS_INTERVAL_S


class ProgressLines:
    """Plain progress lines, ``hashmesh: import: hashes 1,000 of 50,000 (2%)``, at most one
    per interval (plus, when eager, one per stage start and one at the end)."""

    def __init__(
        self,
        command: str,
        stream: TextIO,
        every_s: float,
        eager: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.command, self.stream, self.every_s, self.eager = command, stream, every_s, eager
        self.clock = clock
        self._last = clock()
        self._state: tuple[str, int, int | None] | None = None
        self._written: tuple[str, int, int | None] | None = None

    def update(self, stage: str, done: int, total: int | None) -> None:
        now, new_stage = self.clock(), self._state is None or self._state[0] != stage
        self._state = (stage, done, total)
        if (self.eager and new_stage) or now - self._last >= self.every_s:
            self._write()
            self._last = now

    def finish(self) -> None:
        if self.eager and self._state is not None and self._state != self._written:
            self._write()

    def _write(self) -> None:
        assert self._state is not None
        stage, done, total = self._written = self._state
        if total is not None:
            count = f" {done:,} of {total:,}" + (f" ({done * 100 // total}%)" if total else "")
        else:
            count = f" {done:,}" if done else ""
        self.stream.write(f"hashmesh: {self.command}: {stage}{count}\n")
        self.stream.flush()


def progress_mode(show: bool | None, as_json: bool) -> str | None:
    """ "bar", "lines" or None, from --progress/--no-progress, --json and stderr."""
    from rich.console import Console

    if show is False:
        return None
    if Console(stderr=True).is_terminal:
        return "bar" if show or not as_json else None
    return "lines"


@contextmanager
def progress_lines(command: str, show: bool | None) -> Iterator[Update]:
    """The update(stage, done, total) callback of plain progress lines on stderr."""
    lines = ProgressLines(command, sys.stderr, interval_s(), bool(show))
    yield lines.update
    lines.finish()
