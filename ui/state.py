"""Session state, jobs and loaders shared by the pages, in one place.

The engine is per browser session: it is mutable (a new corpus, a trained model, new fills),
and `st.cache_resource` results must never be mutated. What never changes once made is shared
by the sessions instead: the built-in corpus with its map (`builtin_engine`, adopted by each
session's engine) and each saved Vec2Text model (`_shared_vec2text`). Long work that must
survive a click or a page switch (a fill, a training) runs as a `gapfill.jobs.Job` kept here
in session state (a click's fill: `ui.fills`); the pages poll its snapshot. A browser reload
starts a new session with a new engine, so a job is deliberately not kept beyond its session:
its result would belong to an engine nobody holds any more.
"""
from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import streamlit as st

from gapfill.csv_loader import load_csv
from gapfill.engine import MAP_KIND, Engine
from gapfill.events import Progress
from gapfill.jobs import Job
from gapfill.vec2text_config import Vec2TextConfig

T = TypeVar("T")
log = logging.getLogger(__name__)

# ---- keys --------------------------------------------------------------------------------
ENGINE = "engine"
MAP_CHART = "map_chart"  # the map's plotly chart (its selection state)
CLICK = "map_click"  # (x, y) clicked on the map and not filled yet
FILL_RUN = "fill_run"  # the FillRun of the last click
FILL_TRACES = "fill_traces"  # FillTrace per fill made in this session, oldest first
TRAIN_JOBS = "train_jobs"  # {"map" | "vec2text": Job}
VEC2TEXT_PROBLEM = "vec2text_problem"  # why no Vec2Text model could be loaded
VEC2TEXT_LOADER = "vec2text_loader"  # the Job loading it in the background
MEMO = "memo"  # per-map results: {name: (map, value)}
# Widget keys of the fill settings, the gap overlay and the corpus page.
NUM_STEPS, BEAM_WIDTH, TARGET_AWARE = "fill_num_steps", "fill_beam_width", "fill_target_aware"
SEED_DOCUMENTS = "fill_seed_documents"
SHOW_GAPS, GAP_COUNT = "show_gaps", "gap_count"
UPLOAD, TEXT_COLUMN = "corpus_upload", "corpus_text_column"

POLL_S = 1.0  # how often live panels redraw while a training runs (1 s: cheap on two cores)
FILL_POLL_S = 0.5  # and while a fill runs: its steps come every few seconds, the first one awaited
# The CSV loader's own size limit, read from its signature so the page states the real one.
UPLOAD_LIMIT_BYTES: int = inspect.signature(load_csv).parameters["max_bytes"].default


# ---- the engine --------------------------------------------------------------------------

def builtin_size() -> int | None:
    """Size of the built-in corpus the app starts with: env GAPFILL_BUILTIN_N, else all of it."""
    value = os.environ.get("GAPFILL_BUILTIN_N")
    return int(value) if value else None


def engine() -> Engine:
    if ENGINE not in st.session_state:
        st.session_state[ENGINE] = Engine()
    return st.session_state[ENGINE]


def run_with_progress(gen: Generator[Progress, None, T], label: str) -> T:
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
    """The session's engine with a corpus and a map: the built-in corpus on first use."""
    eng = engine()
    if eng.corpus is None:
        eng.adopt(builtin_engine(eng))
    if eng.map is None:
        run_with_progress(eng.ensure_map(), "Preparing the map")
    return eng


@dataclass
class _Prepared:
    lock: threading.Lock = field(default_factory=threading.Lock)
    engines: dict[tuple, Engine] = field(default_factory=dict)


# One per server process (module state outlives sessions): the built-in corpus, embedded, and
# its map, prepared once and adopted by every session's engine (`Engine.adopt`) instead of
# loading them again (a second each) in every new session.
_BUILTIN = _Prepared()


def builtin_engine(like: Engine, show_progress: bool = True) -> Engine:
    """The process's prepared built-in corpus and map for engines configured as `like` (its
    embedder, backbone and store, the current saved map: one saved on the Train page is used
    from the next session on), prepared on first use with progress bars on the page; a session
    that comes meanwhile waits with a spinner."""
    key = (builtin_size(), like.embedder_model, like.backbone_path, str(like.store.root), like.store.current(MAP_KIND))
    if not _BUILTIN.lock.acquire(blocking=False):
        with st.spinner("Preparing the built-in corpus and its map…"):
            _BUILTIN.lock.acquire()
    try:
        if key not in _BUILTIN.engines:
            eng = Engine(embedder_model=like.embedder_model, store=like.store, backbone_path=like.backbone_path)
            progress = run_with_progress if show_progress else _log_progress
            progress(eng.load_builtin(n=builtin_size()), "Embedding the built-in WordNet corpus")
            progress(eng.ensure_map(), "Preparing the map")
            _BUILTIN.engines = {key: eng}  # only the latest: an older map is not needed again
        return _BUILTIN.engines[key]
    finally:
        _BUILTIN.lock.release()


def _log_progress(gen: Generator[Progress, None, T], label: str) -> T:
    """Drive a generator of `Progress` events, logging every tenth of the way (a terminal)."""
    logged = -1
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if int(event.fraction * 10) > logged:
            logged = int(event.fraction * 10)
            log.info("%s: %d%%", label, 10 * logged)


def preload_map() -> Engine:
    """What the first page view would otherwise wait for, done ahead by `ui/launch.py`: the
    imports (done by importing this module) and the built-in corpus and its map."""
    return builtin_engine(Engine(), show_progress=False)


def preload_vec2text(eng: Engine) -> None:
    """The shipped or saved Vec2Text model, loaded into the cache all sessions share, and the
    embedding model its fills embed their texts with (shared through `Engine.adopt`)."""
    eng.embedder.model.encode(["a first text, so that the first fill's is not"], show_progress_bar=False)  # loads, warms
    try:
        eng.load_vec2text(loader=_shared_vec2text).warm_up()
    except Exception as err:  # noqa: BLE001 - a session will try again and say why in words
        log.warning("Vec2Text not preloaded: %s", err)


def uses_builtin(eng: Engine) -> bool:
    return eng.corpus is not None and eng.corpus.name.startswith("WordNet")


def use_builtin(eng: Engine) -> None:
    eng.adopt(builtin_engine(eng))


def use_csv(eng: Engine, data: bytes, text_column: str | None) -> None:
    """Replace the corpus by an uploaded CSV (a bad file raises CorpusError and changes nothing)."""
    run_with_progress(eng.load_csv(data, text_column=text_column), "Embedding the uploaded corpus")
    run_with_progress(eng.ensure_map(), "Training a map for the new corpus")


def memoized(name: str, key: object, compute: Callable[[], T]) -> T:
    """`compute()` once while `key` stays the same (compared with ==; one value per name)."""
    memo = st.session_state.setdefault(MEMO, {})
    if name not in memo or memo[name][0] != key:
        memo[name] = (key, compute())
    return memo[name][1]


def per_map(eng: Engine, name: str, compute: Callable[[], T]) -> T:
    """`compute()` once per map: kept until the engine's map object changes (a map compares
    equal only to itself)."""
    return memoized(name, eng.map, compute)


# ---- Vec2Text ----------------------------------------------------------------------------

def vec2text_ready(eng: Engine) -> bool:
    """Whether the session's Vec2Text model is loaded. The first call starts loading the saved
    (else shipped) model in the background, so that the map is drawn meanwhile (loading takes
    a few seconds); a failure is kept, in words, in `vec2text_problem()`."""
    loader: Job | None = st.session_state.get(VEC2TEXT_LOADER)
    if eng.vec2text is None and loader is None and st.session_state.get(VEC2TEXT_PROBLEM) is None:
        st.session_state[VEC2TEXT_LOADER] = Job("load Vec2Text", lambda stop: _load_vec2text(eng))
    elif loader is not None and not loader.running:
        del st.session_state[VEC2TEXT_LOADER]
        error = loader.snapshot().error
        if error is not None:
            st.session_state[VEC2TEXT_PROBLEM] = error.split(": ", 1)[-1]
    return eng.vec2text is not None


def vec2text_loading() -> Job | None:
    """The background job loading the Vec2Text model, while it runs."""
    loader = st.session_state.get(VEC2TEXT_LOADER)
    return loader if loader is not None and loader.running else None


def _background_priority() -> None:
    """Lower this thread's CPU priority (Linux threads have their own nice value): a model
    loading in the background then takes the cores only when the page drawing needs none."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not allowed: load at normal priority
        pass


def _load_vec2text(eng: Engine) -> Generator[Progress, None, None]:
    _background_priority()
    eng.load_vec2text(loader=_shared_vec2text)
    return
    yield  # a job's start is a generator; this one has no events to report


@st.cache_resource(show_spinner=False, max_entries=2)
def _shared_vec2text(folder: Path, *, embedder_id: str, dim: int, backbone_path: Path | None):
    """One loaded Vec2Text model per saved folder for all sessions: each holds the 540 MB
    backbone, and a saved version never changes. Sessions only generate with it (its one
    change of state, folding the adapter in, is idempotent and locked); a training makes a
    model of its own."""
    from gapfill.vec2text_train import load_vec2text

    return load_vec2text(folder, embedder_id=embedder_id, dim=dim, backbone_path=backbone_path)


def vec2text_problem() -> str | None:
    return st.session_state.get(VEC2TEXT_PROBLEM)


def retry_vec2text() -> None:
    """Forget why loading failed, so the next page run tries again (after a save, say)."""
    st.session_state.pop(VEC2TEXT_PROBLEM, None)


def fill_defaults(eng: Engine) -> Vec2TextConfig:
    return eng.vec2text.config if eng.vec2text is not None else Vec2TextConfig()


def fill_settings() -> dict[str, object]:
    """The fill loop's settings as the Map page's widgets hold them."""
    return {
        "num_steps": int(st.session_state[NUM_STEPS]),
        "sequence_beam_width": int(st.session_state[BEAM_WIDTH]),
        "target_aware": bool(st.session_state[TARGET_AWARE]),
        "seed_documents": int(st.session_state[SEED_DOCUMENTS]),
    }


# ---- training ----------------------------------------------------------------------------

def train_job(kind: str) -> Job | None:
    return st.session_state.setdefault(TRAIN_JOBS, {}).get(kind)


def any_training() -> bool:
    return any(job.running for job in st.session_state.get(TRAIN_JOBS, {}).values())


def start_training(kind: str, start: Callable[[object], Generator[Progress, None, object]]) -> Job:
    """Run a training in the background; its history stays here across page switches."""
    job = Job(kind, start)
    st.session_state.setdefault(TRAIN_JOBS, {})[kind] = job
    return job
