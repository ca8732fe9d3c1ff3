"""The REST API's long work, one task at a time: what is served, what waits, what is refused.

- A training runs as a `gapfill.jobs.Job` in its own thread. While it runs, every other task
  is refused with `Busy` (the API answers 409): a fill must not read a map or a Vec2Text
  model that the training is about to replace.
- Request-thread tasks (fills, evaluations, corpus and model loads) are served one at a time,
  in order of arrival: a fill sent while another fill runs waits for it and is then served.
  At most `max_waiting` tasks wait; one more is refused with `QueueFull` (the API answers 429),
  so that a burst of clients cannot pile up unbounded work.
- A training is refused with `Busy` while any request task runs or waits.
- A streamed request task (`Worker.stream`) runs in its own thread, in its turn like any
  other, and hands over what it yields as it comes. It does not depend on its reader: one that
  hangs up leaves it to finish (or to stop at its next item, once the reader says so) and to
  give back its turn, instead of holding the turn until the server collects a dropped
  generator.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import TypeVar

from gapfill.events import Progress
from gapfill.jobs import Job, JobSnapshot

T = TypeVar("T")

logger = logging.getLogger(__name__)

MAX_WAITING = 8  # request tasks queued behind the running one (a fill takes ~10-20 s on CPU)


class Busy(RuntimeError):
    """The task conflicts with the work in progress; the message names it and what to do."""


class QueueFull(RuntimeError):
    """Too many requests already wait their turn; the message says how many."""


class Worker:
    """A training `Job` alone, or request tasks one after another (see the module docstring)."""

    def __init__(self, max_waiting: int = MAX_WAITING) -> None:
        self.max_waiting = max_waiting
        self._turns = threading.Condition()  # guards every field below
        self.job: Job | None = None  # the running or the last training job
        self._job_error: list[Exception] = []
        self._tasks: list[str] = []  # request tasks, the running one first, then the waiting ones
        self._next_ticket = 0  # tickets serve the waiting tasks in order of arrival
        self._serving = 0

    def _refuse_during_training(self) -> None:  # the condition's lock is held
        if self.job is not None and self.job.running:
            raise Busy(f"a {self.job.name} job is running; wait for it or POST stop")

    def start(self, name: str, start: Callable[[threading.Event], Generator[Progress, None, T]]) -> Job:
        """Run a training in its own thread; `Busy` while a training or a request task runs."""
        caught: list[Exception] = []

        def run(stop: threading.Event) -> Generator[Progress, None, T]:
            try:
                return (yield from start(stop))
            except Exception as err:  # kept so `wait` can answer it like an error of any call
                caught.append(err)
                raise

        with self._turns:
            self._refuse_during_training()
            if self._tasks:
                waiting = f" ({len(self._tasks) - 1} more waiting)" if len(self._tasks) > 1 else ""
                raise Busy(f"a {self._tasks[0]} request is running{waiting}; wait for it")
            self.job, self._job_error = Job(name, run), caught
            return self.job

    def wait(self, job: Job) -> JobSnapshot:
        """Block until `job` ends; re-raise its error, so that a bad setting found during
        training gets the same answer as one found before."""
        errors = self._job_error if job is self.job else []
        snapshot = job.wait()
        if snapshot.state == "failed" and errors:
            raise errors[0]
        return snapshot

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Wait for this request task's turn and hold it for the `with` block."""
        with self._turns:
            self._refuse_during_training()
            if len(self._tasks) > self.max_waiting:
                raise QueueFull(f"the queue is full: a {self._tasks[0]} request is running and "
                                f"{len(self._tasks) - 1} wait, the most that may; retry when one has been answered")
            ticket, self._next_ticket = self._next_ticket, self._next_ticket + 1
            self._tasks.append(name)
            self._turns.wait_for(lambda: self._serving == ticket)
        try:
            yield
        finally:
            with self._turns:
                self._tasks.pop(0)  # this task: tickets are served in the order tasks were listed
                self._serving += 1
                self._turns.notify_all()

    def tasks(self) -> dict[str, object]:
        """The request task being served (or None) and how many wait behind it."""
        with self._turns:
            return {"running": self._tasks[0] if self._tasks else None, "waiting": max(len(self._tasks) - 1, 0)}

    def stream(self, name: str, work: Callable[[], Generator]) -> Stream:
        """Run the request task `work()` in its own thread, in its turn; see `Stream`."""
        stream = Stream()
        threading.Thread(target=stream.run, args=(self, name, work), name=f"{name} stream", daemon=True).start()
        return stream

    def stop(self) -> Job | None:
        """Ask the running job to stop; the job it asked, or None when none runs."""
        with self._turns:
            job = self.job if self.job is not None and self.job.running else None
        if job is not None:
            job.stop()
        return job


class Stream:
    """What a streamed request task hands over, in order: ("step", each value it yields), then
    ("result", its return value), then None. `next` blocks until the next item. An error raised
    before the first item (its turn refused, bad input) is raised by `next`, so the caller can
    answer it as any error; one raised later is handed over as ("error", message)."""

    def __init__(self) -> None:
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._abandoned = threading.Event()
        self._handed_over = False

    def run(self, worker: Worker, name: str, work: Callable[[], Generator]) -> None:
        try:
            with worker.exclusive(name):
                steps = work()
                while True:
                    try:
                        self._items.put(("step", next(steps)))
                    except StopIteration as done:
                        self._items.put(("result", done.value))
                        break
                    if self._abandoned.is_set():
                        steps.close()
                        logger.info("%s: the reader hung up; stopped after a step", name)
                        break
        except Exception as err:
            self._items.put(err)
        finally:
            self._items.put(None)

    def next(self) -> tuple[str, object] | None:
        item = self._items.get()
        if isinstance(item, Exception):
            if not self._handed_over:
                raise item
            logger.error("a streamed task failed after its first item", exc_info=item)
            item = ("error", f"{type(item).__name__}: {item}")
        self._handed_over = True
        return item

    def abandon(self) -> None:
        """The reader is gone: stop at the next item."""
        self._abandoned.set()
