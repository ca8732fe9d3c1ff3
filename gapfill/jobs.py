"""Long jobs in a background thread: the history of their events, a stop request, the result.

The thread only runs the generator and appends its events to a lock-protected history; the
front-ends read snapshots (the Streamlit Train page redraws from it, the API's status endpoint
returns it). Nobody polls the engine's private state.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

from gapfill.events import Progress

log = logging.getLogger(__name__)

T = TypeVar("T")


def stoppable(gen: Generator[Progress, None, T], stop: threading.Event) -> Generator[Progress, None, T | None]:
    """Pass a generator's events through until `stop` is set, then close it (for verbs that
    take no stop event themselves: what they would have set at the end stays unset)."""
    while True:
        if stop.is_set():
            gen.close()
            return None
        try:
            event = next(gen)
        except StopIteration as done:
            return done.value
        yield event


@dataclass(frozen=True)
class JobSnapshot:
    """What a front-end shows of a job at one moment."""

    name: str
    state: str
    events: tuple[Progress, ...]
    error: str | None
    started: float
    finished: float | None

    @property
    def last(self) -> Progress | None:
        return self.events[-1] if self.events else None

    def to_dict(self, history: int = 0) -> dict[str, object]:
        """JSON-ready: state, the last event, and optionally the last `history` events."""
        def event(e: Progress) -> dict[str, object]:
            return {"stage": e.stage, "step": e.step, "total": e.total, "loss": e.loss, "metrics": e.metrics}

        out: dict[str, object] = {
            "name": self.name, "state": self.state, "error": self.error,
            "elapsed_s": round((self.finished or time.time()) - self.started, 2),
            "progress": None if self.last is None else event(self.last),
        }
        if history:
            out["history"] = [event(e) for e in self.events[-history:]]
        return out


class Job:
    """Run `start(stop_event)` — a function returning a generator of events — in a thread."""

    def __init__(self, name: str, start: Callable[[threading.Event], Generator[Progress, None, object]]) -> None:
        self.name = name
        self.stop_requested = threading.Event()
        self._lock = threading.Lock()
        self._events: list[Progress] = []
        self._state, self._error, self.result = "running", None, None
        self._started, self._finished = time.time(), None
        self._thread = threading.Thread(target=self._run, args=(start,), name=f"job-{name}", daemon=True)
        self._thread.start()

    def _run(self, start: Callable[[threading.Event], Generator[Progress, None, object]]) -> None:
        try:
            gen = start(self.stop_requested)
            while True:
                try:
                    event = next(gen)
                except StopIteration as stop:
                    self.result = stop.value
                    break
                with self._lock:
                    self._events.append(event)
            state, error = ("stopped" if self.stop_requested.is_set() else "done"), None
        except Exception as err:  # the job's error is reported to the user, not raised in a thread
            log.exception("job %s failed", self.name)
            state, error = "failed", f"{type(err).__name__}: {err}"
        with self._lock:
            self._state, self._error, self._finished = state, error, time.time()

    def stop(self) -> None:
        """Ask the job to stop between steps; it keeps what it has done so far."""
        self.stop_requested.set()

    def wait(self, timeout: float | None = None) -> JobSnapshot:
        self._thread.join(timeout)
        return self.snapshot()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._state == "running"

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return JobSnapshot(self.name, self._state, tuple(self._events), self._error, self._started, self._finished)
