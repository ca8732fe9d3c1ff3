"""A click's fill and the fills of the largest gaps, as the Map page runs them.

A click's fill is a `gapfill.jobs.Job` in session state (`state.FILL_RUN`), so it survives
reruns and page switches; each finished fill is kept with its steps (`state.FILL_TRACES`) for
the Evaluate page's convergence curves.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import streamlit as st

from gapfill.engine import Engine
from gapfill.filling import FillResult, FillStep
from gapfill.jobs import Job
from ui import state


class Writing:
    """The text a running fill is writing now: `update` is its `on_text` (called in the fill's
    thread at every token), `latest` what the page shows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: tuple[int, str, bool] | None = None  # (step, text so far, finished)

    def update(self, step: int, text: str, finished: bool) -> None:
        with self._lock:
            self._latest = (step, text, finished)

    def latest(self) -> tuple[int, str, bool] | None:
        with self._lock:
            return self._latest


@dataclass
class FillRun:
    """The fill of one click: its job (events are `FillStep`s, the result a `FillResult`)."""

    x: float
    y: float
    job: Job
    writing: Writing = field(default_factory=Writing)  # the step being written, as it grows
    recorded: bool = False  # its trace is in state.FILL_TRACES


@dataclass(frozen=True)
class FillTrace:
    """A finished fill with the steps that led to it (for the convergence curves)."""

    result: FillResult
    steps: tuple[FillStep, ...] = field(default=())


def remember_click() -> None:
    """The map's on_select callback: keep the clicked point. The invisible grid makes every
    click select a point; an empty selection (the same node clicked twice) is ignored."""
    points = (st.session_state.get(state.MAP_CHART) or {}).get("selection", {}).get("points") or []
    if points:
        st.session_state[state.CLICK] = (float(points[0]["x"]), float(points[0]["y"]))


def fill_run() -> FillRun | None:
    return st.session_state.get(state.FILL_RUN)


def fill_running() -> bool:
    run = fill_run()
    return run is not None and run.job.running


def start_pending_fill(eng: Engine) -> None:
    """Start filling the last click, unless a fill is running (it starts once that one ends)."""
    if state.CLICK not in st.session_state or fill_running():
        return
    x, y = st.session_state.pop(state.CLICK)
    settings = state.fill_settings()
    writing = Writing()
    job = Job("fill", lambda stop: eng.fill(x, y, on_text=writing.update, **settings))
    st.session_state[state.FILL_RUN] = FillRun(x, y, job, writing)


def record_finished_fill() -> None:
    """Keep the steps of the last click's fill once it is done."""
    run = fill_run()
    if run is None or run.recorded or run.job.running:
        return
    snap = run.job.snapshot()
    if snap.state == "done":
        traces().append(FillTrace(run.job.result, snap.events))
    run.recorded = True


def traces() -> list[FillTrace]:
    return st.session_state.setdefault(state.FILL_TRACES, [])


def fill_gaps(eng: Engine, k: int) -> None:
    """Fill the k largest gaps one after the other, with a progress bar."""
    settings = state.fill_settings()
    gaps = eng.gaps(k)
    bar = st.progress(0.0, text=f"Filling the {len(gaps)} largest gaps")
    for i, gap in enumerate(gaps):
        steps: list[FillStep] = []
        gen = eng.fill(gap.x, gap.y, **settings)
        while True:
            try:
                steps.append(next(gen))
            except StopIteration as stop:
                traces().append(FillTrace(stop.value, tuple(steps)))
                break
        bar.progress((i + 1) / len(gaps), text=f"Filled gap {i + 1} of {len(gaps)}")
    bar.empty()
