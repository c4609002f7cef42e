"""Simulated time: a heap of timed events, run one at a time, and the trace they leave.

Nothing in a simulation reads the wall clock or sleeps. ``Scheduler.at`` puts a callback on a
heap keyed by (time, insertion number), so two events at the same instant run in the order
they were scheduled and a run is a pure function of its seed. ``Trace`` keeps one line per
event that matters (a request sent, delivered, lost; a merge; a crash); a failing run is
replayed from its seed with the trace switched on (``python -m sim.run --replay``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Event:
    """A scheduled callback; ``cancel`` keeps it on the heap but makes it a no-op."""

    time: float
    callback: Callable[[], None] | None

    def cancel(self) -> None:
        self.callback = None

    @property
    def pending(self) -> bool:
        return self.callback is not None


@dataclass(slots=True)
class Scheduler:
    """The simulated clock (seconds since the run began) and its event heap."""

    now: float = 0.0
    events_run: int = 0
    _heap: list[tuple[float, int, Event]] = field(default_factory=list)
    _count: int = 0

    def at(self, time: float, callback: Callable[[], None]) -> Event:
        if time < self.now:
            raise ValueError(f"cannot schedule in the past: {time} < {self.now}")
        event = Event(time, callback)
        self._count += 1
        heapq.heappush(self._heap, (time, self._count, event))
        return event

    def after(self, delay: float, callback: Callable[[], None]) -> Event:
        return self.at(self.now + max(0.0, delay), callback)

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Run events up to time ``until`` (the clock ends there), or until ``stop()``."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            time, _, event = heapq.heappop(heap)
            callback = event.callback
            if callback is None:
                continue
            event.callback = None
            self.now = time
            self.events_run += 1
            callback()
            if stop is not None and stop():
                return
        self.now = max(self.now, until)

    def idle(self) -> bool:
        return not any(e.pending for _, _, e in self._heap)


@dataclass(slots=True)
class Trace:
    """One line per traced event, when enabled (a replay); otherwise it costs a branch."""

    enabled: bool = False
    lines: list[str] = field(default_factory=list)
    clock: Scheduler | None = None

    def __call__(self, node: str, what: str) -> None:
        if self.enabled:
            now = self.clock.now if self.clock is not None else 0.0
            self.lines.append(f"{now:10.4f} {node:>8} {what}")

    def text(self, last: int | None = None) -> str:
        lines = self.lines if last is None else self.lines[-last:]
        return "\n".join(lines)
