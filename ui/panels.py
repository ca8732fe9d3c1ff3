"""Pieces of the pages that draw engine results: fill steps and results, training progress,
settings forms generated from the config dataclasses, the CSV upload."""
from __future__ import annotations

import math
import re
from dataclasses import MISSING, Field, fields
from typing import TypeVar

import pandas as pd
import streamlit as st

from gapfill.corpus import Corpus, CorpusError
from gapfill.csv_loader import load_csv
from gapfill.engine import MAP_KIND, Engine
from gapfill.filling import SETTING_BOUNDS, FillResult, FillStep
from gapfill.jobs import JobSnapshot
from gapfill.model_files import ModelFileError
from ui import figures, state

C = TypeVar("C")

_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<$])")


def plain(text: str) -> str:
    """Generated or uploaded text shown as is, not read as Markdown."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", text)


# ---- fills -------------------------------------------------------------------------------

def fill_settings(defaults, disabled: bool) -> None:
    """The correction loop's settings; defaults from the Vec2Text model's config."""
    left, middle, seeds, right = st.columns(4)
    least, most = SETTING_BOUNDS["num_steps"]
    left.number_input("Correction steps (num_steps)", min_value=least, max_value=most, value=defaults.num_steps,
                      key=state.NUM_STEPS, persist_state="session", disabled=disabled,
                      help=_help(type(defaults), "num_steps"))
    least, most = SETTING_BOUNDS["sequence_beam_width"]
    middle.number_input("Beam width (sequence_beam_width)", min_value=least, max_value=most,
                        value=defaults.sequence_beam_width, key=state.BEAM_WIDTH, persist_state="session",
                        disabled=disabled, help=_help(type(defaults), "sequence_beam_width"))
    least, most = SETTING_BOUNDS["seed_documents"]
    seeds.number_input("Documents to rewrite (seed_documents)", min_value=least, max_value=most,
                       value=defaults.seed_documents, key=state.SEED_DOCUMENTS, persist_state="session",
                       disabled=disabled, help=_help(type(defaults), "seed_documents"))
    right.checkbox("Target-aware", value=True, key=state.TARGET_AWARE, persist_state="session", disabled=disabled,
                   help="Rank candidate texts by cosine minus a penalty on how far from the click they land.")


def written_label(corrections: int) -> str:
    """A finished fill's status line, counting steps as the "Best step" figure does (step 0 is
    the inverter's, then the corrections)."""
    if corrections <= 0:
        return "Written by the inverter alone"
    return f"Written by the inverter and {corrections} correction step{'s' if corrections != 1 else ''}"


def fill_steps(snapshot: JobSnapshot, writing: tuple[int, str, bool] | None = None) -> None:
    """Each correction step as it comes: its candidate texts, their cosine and landing
    distance; while it runs, the text of the step being written (`Writing.latest()`)."""
    steps: tuple[FillStep, ...] = snapshot.events
    label = {"running": f"Writing… step {len(steps)}" if steps else "Writing… (inverter)",
             "done": written_label(len(steps) - 1), "failed": "The fill failed", "stopped": "Stopped"}
    with st.status(label[snapshot.state], state={"running": "running", "done": "complete"}.get(snapshot.state, "error"),
                   expanded=snapshot.state == "running"):
        for s in steps:
            name = "inverter" if s.step == 0 else "correction"
            st.markdown(f"**Step {s.step}** ({name}, {s.elapsed_s:.1f} s) · best cosine {s.best.cosine:.3f}"
                        + (" · improved" if s.improved and s.step else ""))
            # A plain table, not st.dataframe: the grid's script loads and draws for about a
            # second on the page's first fill, while the user waits for this very text.
            table = {
                "text": [c.text for c in s.candidates],
                "cosine": [f"{c.cosine:.3f}" for c in s.candidates],
                "landing distance": [f"{c.distance:.3f}" for c in s.candidates],
            }
            if any(c.seed for c in s.candidates):  # step 0: the nearest documents, given to rewrite
                table["from"] = ["corpus (to rewrite)" if c.seed else "written" for c in s.candidates]
            st.table(pd.DataFrame(table), hide_index=True)
        if snapshot.state == "running" and writing is not None and writing[0] == len(steps):
            step, text, finished = writing
            if step == 0 and finished:
                st.markdown("**First hypothesis** (the inverter's greedy text; sampling alternatives…)")
            else:
                st.markdown(f"**Writing step {step}** ({'inverter' if step == 0 else 'correction of the best'}…)")
            st.markdown(f"> {plain(text) or '…'}")
    if snapshot.state == "failed":
        st.error(f"Could not fill this point: {snapshot.error}")


def fill_result(r: FillResult) -> None:
    with st.container(border=True):
        st.markdown("**Written text**")
        st.markdown(f"> {plain(r.text)}")
        a, b, c = st.columns(3)
        a.metric("Cosine", f"{r.cosine:.3f}", help="Cosine between the text's embedding and the target, decode(click).")
        b.metric("Distance", f"{r.distance:.3f}",
                 help="How far from the click the text lands on the map, as a share of the map's diagonal.")
        c.metric("Best step", f"{r.best_step} of {r.steps - 1}",
                 help=f"The correction step that wrote the best text; the loop stopped: {r.stopped}.")
        novelty = "new" if r.nearest_cosine < 0.95 else "close to a copy"
        st.caption(f"Nearest corpus document (cosine {r.nearest_cosine:.3f}, {novelty}): {plain(r.nearest_text)}")


# ---- training ----------------------------------------------------------------------------

def training_status(snapshot: JobSnapshot) -> None:
    """One line and a bar: stage, step, loss, time left in the stage; then the loss charts."""
    last = snapshot.last
    if last is not None:
        eta = last.metrics.get("eta_s", math.nan)
        eta_text = f" · about {eta:.0f} s left in this stage" if math.isfinite(eta) and snapshot.state == "running" else ""
        loss = f" · loss {last.loss:.4g}" if last.loss is not None else ""
        st.progress(min(last.fraction, 1.0),
                    text=f"{snapshot.state} · {last.stage or 'training'} {last.step}/{last.total}{loss}{eta_text}")
    else:
        st.progress(0.0, text=f"{snapshot.state} · starting")
    fig = figures.loss_figure(snapshot)
    if fig is not None:
        st.plotly_chart(fig, key=f"loss_{snapshot.name}", width="stretch")
    if snapshot.state == "failed":
        st.error(f"Training failed: {snapshot.error}")
    elif snapshot.state == "stopped":
        st.warning("Stopped on request; what was trained so far is kept where the training allows it.")


def training_panel(kind: str) -> None:
    """The live view of a training job: redrawn every second while it runs (the job's thread
    only appends events; this polls them), rerunning the whole app once when it ends."""
    job = state.train_job(kind)
    if job is None:
        return
    started_running = job.running

    @st.fragment(run_every=state.POLL_S if started_running else None)
    def live() -> None:
        snapshot = job.snapshot()
        training_status(snapshot)
        if snapshot.state == "running" and st.button("Stop", key=f"stop_{kind}", help="Stops between two steps."):
            job.stop()
        if started_running and snapshot.state != "running":
            st.rerun(scope="app")  # once: the rest of the app sees the new model

    live()


def versions(eng: Engine, kind: str, title: str) -> None:
    """Saved versions of a kind, and a button that makes one current and loads it (roll back)."""
    st.markdown(f"**{title}** in `{eng.store.root}`")
    infos = eng.store.versions(kind)
    if not infos:
        st.caption("None saved yet.")
        return
    st.dataframe(pd.DataFrame({
        "version": [v.version for v in infos],
        "current": [v.is_current for v in infos],
        "saved at": [v.saved_at for v in infos],
        "metrics": [", ".join(f"{k} {val:.3g}" if isinstance(val, float) else f"{k} {val}"
                              for k, val in v.metrics.items()) for v in infos],
        "problem": [v.problem or "" for v in infos],
    }), hide_index=True, width="stretch")
    complete = [v.version for v in infos if v.complete]
    pick, go = st.columns([1, 2], vertical_alignment="bottom")
    chosen = pick.selectbox("Version", complete, index=len(complete) - 1, key=f"version_{kind}")
    if go.button("Make current and load", key=f"load_{kind}", disabled=chosen is None or state.any_training()):
        try:
            eng.store.set_current(kind, chosen)
            if kind == MAP_KIND:
                eng.load_map(chosen)
            else:
                eng.load_vec2text(chosen)
                state.retry_vec2text()
        except (ModelFileError, ValueError, FileNotFoundError) as err:
            st.error(f"Could not load {chosen}: {err}")
        else:
            st.success(f"{chosen} is now the current {title[:-1].lower()} and is loaded.")


def _help(cls: type, name: str) -> str | None:
    return next((f.metadata.get("help") for f in fields(cls) if f.name == name), None)


def _field_input(f: Field, default: object, key: str) -> object:
    label, helptext, wkey = f.name, f.metadata.get("help"), f"{key}.{f.name}"
    if isinstance(default, bool):
        return st.checkbox(label, value=default, help=helptext, key=wkey, persist_state="session")
    if isinstance(default, int):
        return st.number_input(label, value=default, step=1, help=helptext, key=wkey, persist_state="session")
    if isinstance(default, float):
        return st.number_input(label, value=default, format="%g", step=default / 10 or 0.01, help=helptext,
                               key=wkey, persist_state="session")
    if isinstance(default, tuple):
        return st.text_input(label, value=", ".join(map(str, default)), help=f"{helptext} Comma-separated.",
                             key=wkey, persist_state="session")
    return st.text_input(label, value=str(default), help=helptext, key=wkey, persist_state="session")


def _parse_widths(name: str, text: str) -> tuple[int, ...]:
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"{name} must be positive whole numbers separated by commas, e.g. 256, 128; got {text!r}")
    return tuple(int(p) for p in parts)


def config_form(cls: type[C], key: str, submit_label: str, *, disabled: bool = False, columns: int = 3) -> C | None:
    """A form with one input per field of a config dataclass, its help as the tooltip; the
    config when submitted with valid values, else None (invalid values are explained)."""
    config_fields = [f for f in fields(cls) if f.default is not MISSING]
    with st.form(key):
        cols = st.columns(columns)
        values = {}
        for i, f in enumerate(config_fields):
            with cols[i % columns]:
                values[f.name] = _field_input(f, f.default, key)
        submitted = st.form_submit_button(submit_label, disabled=disabled, type="primary")
    if not submitted:
        return None
    try:
        for f in config_fields:
            if isinstance(f.default, tuple):
                values[f.name] = _parse_widths(f.name, values[f.name])
        return cls.from_dict(values)
    except (ValueError, TypeError) as err:
        st.error(f"Check the settings: {err}")
        return None


# ---- corpus ------------------------------------------------------------------------------

def parse_upload(data: bytes, name: str, upload_id: str) -> tuple[Corpus | None, str | None]:
    """The uploaded CSV parsed, and its text column when the user had to choose it. When the
    text column is ambiguous a picker offers the candidates; other problems are explained."""
    try:
        return load_csv(data, name=name), None
    except CorpusError as err:
        if not err.columns:
            st.error(f"Could not read this file: {err}")
            return None, None
        st.warning(str(err))
        column = st.selectbox("Text column", err.columns, index=None, key=f"{state.TEXT_COLUMN}:{upload_id}",
                              placeholder="Choose the column that holds the documents")
    if column is None:
        return None, None
    try:
        return load_csv(data, text_column=column, name=name), column
    except CorpusError as err:
        st.error(f"Could not read this file: {err}")
        return None, column
