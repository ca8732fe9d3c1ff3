"""Progress events: what every long-running verb yields.

Training loops, embedding and the correction loop are generators of these events so that the
Streamlit app, the REST API and the CLI can all render the same progress without polling
private state (house style, rule 4).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One step of a long job.

    `step` counts from 1 to `total`; `loss` is the training loss of the step when there is
    one; `metrics` holds anything else worth drawing (validation loss, learning rate,
    samples/s, ETA in seconds, ...). `stage` names the phase of a job with several phases.
    """

    step: int
    total: int
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    stage: str = ""

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 1.0


class Stopwatch:
    """Rate and ETA for a loop of known length."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def eta(self, done: int) -> float:
        if done <= 0:
            return float("nan")
        return self.elapsed() / done * max(self.total - done, 0)


def drive(gen: Generator[Progress, None, T], on_event: Callable[[Progress], None] | None = None) -> T:
    """Run a generator of events to the end and return its return value.

    Front-ends that want a result and no live display (tests, scripts) call this; the others
    iterate the generator themselves and read `StopIteration.value`.
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
