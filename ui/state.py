"""Session state and loaders shared by the pages, in one place.

The engine is per browser session (it is mutable; `st.cache_resource` results must not be
mutated); the saved map and the embedding cache on disk make a new session quick.
"""
from __future__ import annotations

import os

import streamlit as st

from gapfill.engine import Engine
from gapfill.events import Progress

ENGINE = "engine"


def builtin_size() -> int | None:
    """Size of the built-in corpus the app starts with: env GAPFILL_BUILTIN_N, else all of it."""
    value = os.environ.get("GAPFILL_BUILTIN_N")
    return int(value) if value else None


def engine() -> Engine:
    if ENGINE not in st.session_state:
        st.session_state[ENGINE] = Engine()
    return st.session_state[ENGINE]


def run_with_progress(gen, label: str):
    """Drive a generator of `Progress` events with a progress bar; return its result."""
    bar = st.progress(0.0, text=label)
    while True:
        try:
            event: Progress = next(gen)
        except StopIteration as stop:
            bar.empty()
            return stop.value
        stage = f" ({event.stage})" if event.stage else ""
        bar.progress(min(event.fraction, 1.0), text=f"{label}{stage}: {event.step}/{event.total}")


def ready_engine() -> Engine:
    """The session's engine with a corpus and a map, preparing the built-in corpus on first use."""
    eng = engine()
    if eng.corpus is None:
        run_with_progress(eng.load_builtin(n=builtin_size()), "Embedding the built-in WordNet corpus")
    if eng.map is None:
        run_with_progress(eng.ensure_map(), "Preparing the map")
    return eng
