"""The Streamlit app, page by page, with AppTest: the map draws and fills clicks, the corpus
page loads uploads and explains bad ones, training runs in the background, the quality
figures render. Tiny models throughout (a 32-d embedder, a random two-layer backbone)."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from gapfill.backbone import backbone_dir, build_tiny_backbone
from gapfill.engine import Engine
from gapfill.events import drive
from gapfill.map_config import ParametricUMAPConfig
from gapfill.storage import ModelStore
from gapfill.vec2text_config import Vec2TextConfig
from ui.panels import written_label

ROOT = Path(__file__).resolve().parents[1]
N_DOCS = 120
SMALL_MAP = ParametricUMAPConfig(n_epochs=30, encoder_epochs=5, decoder_epochs=10, transform_steps=20)
TINY_V2T = Vec2TextConfig(epochs=1, batch_size=4, num_prefix=2, lora_rank=2, corrector_documents=4,
                          corrector_neighbours=4, max_length=24, max_documents=24, num_steps=2, sequence_beam_width=2)
needs_backbone = pytest.mark.skipif(
    not (backbone_dir() / "READY.json").exists(), reason="backbone not prepared: run `make setup`"
)


@dataclass(frozen=True)
class Prepared:
    """A model store with a small map of the built-in corpus and a tiny Vec2Text model."""

    models: Path
    backbone: Path
    embedder: Path


@pytest.fixture(scope="module")
def prepared(tiny_st_model_dir, tmp_path_factory) -> Prepared:
    root = tmp_path_factory.mktemp("app")
    backbone = build_tiny_backbone(root / "lm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GAPFILL_CACHE", str(root / "cache"))
        eng = Engine(embedder_model=str(tiny_st_model_dir), store=ModelStore(root / "models"), backbone_path=backbone)
        drive(eng.load_builtin(n=N_DOCS))
        drive(eng.train_map(SMALL_MAP))
        eng.save_map()
        drive(eng.train_vec2text(TINY_V2T))
        eng.save_vec2text()
    return Prepared(root / "models", backbone, tiny_st_model_dir)


@pytest.fixture()
def app_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GAPFILL_BUILTIN_N", str(N_DOCS))
    monkeypatch.setenv("GAPFILL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("GAPFILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)


@pytest.fixture()
def app(prepared, app_env, tmp_path) -> AppTest:
    """The app with a session engine on the tiny models and a copy of the prepared store."""
    shutil.copytree(prepared.models, tmp_path / "models", dirs_exist_ok=True)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["engine"] = Engine(embedder_model=str(prepared.embedder), store=ModelStore(tmp_path / "models"),
                                        backbone_path=prepared.backbone)
    return at


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [*at.markdown, *at.caption, *at.info, *at.warning, *at.error, *at.success, *at.subheader]
    return "\n".join(str(p.value) for p in parts)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label.startswith(label))


def map_traces(at: AppTest) -> list[str]:
    """Names of the map figure's traces."""
    return [t.get("name") for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]]


def loaded(at: AppTest) -> AppTest:
    """The app once its first run's background load of the Vec2Text model has ended."""
    loader = at.session_state["vec2text_loader"] if "vec2text_loader" in at.session_state else None
    return until_done(at, loader) if loader is not None else at


def until_done(at: AppTest, job, timeout: float = 120) -> AppTest:
    """Rerun the app until a background job ends (AppTest does not tick `run_every`)."""
    deadline = time.time() + timeout
    while job.running and time.time() < deadline:
        time.sleep(0.5)
        at.run()
    assert not job.running, "the job did not finish in time"
    return ok(at.run())


def test_map_page_draws_the_builtin_corpus_and_saves_its_map(app_env, tmp_path, monkeypatch, tiny_st_model_dir):
    """The app on its own, configured by the environment: the built-in corpus, a map saved."""
    monkeypatch.setenv("GAPFILL_EMBEDDER", str(tiny_st_model_dir))
    at = loaded(ok(AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()))
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    grid = next(t for t in spec["data"] if t["name"] == "grid")
    assert grid["type"] == "scattergl" and grid["hoverinfo"] == "none" and grid["marker"]["opacity"] == 0
    assert spec["layout"]["hoverdistance"] == -1 and spec["layout"]["clickmode"] == "event+select"
    engine = at.session_state["engine"]
    assert len(engine.corpus) == N_DOCS
    assert engine.positions.shape == (N_DOCS, 2)
    assert any((tmp_path / "models" / "pumap").glob("v0001/manifest.json"))
    assert "WordNet 3.0 Copyright" in texts(at)
    assert "Train a Vec2Text model" in str([p.proto for p in at.get("page_link")])  # none saved or shipped


@needs_backbone
def test_a_click_is_filled_step_by_step_and_stays_on_the_map(app):
    at = loaded(ok(app.run()))
    engine = at.session_state["engine"]
    assert engine.vec2text is not None
    gap = engine.gaps(1)[0]
    at.session_state["map_click"] = (gap.x, gap.y)
    ok(at.run())
    run = at.session_state["fill_run"]
    assert (run.x, run.y) == (gap.x, gap.y)
    at = until_done(at, run.job)
    assert "Written text" in texts(at) and "Step 0" in texts(at)
    corrections = engine.fills[0].steps - 1
    assert written_label(corrections) in [s.label for s in at.status]  # the status line
    assert len(engine.fills) == 1 and engine.fills[0].x == pytest.approx(gap.x)
    assert {"target (click)", "landing path", "result"} <= set(map_traces(at))
    closeup = [t.get("name") for t in json.loads(at.get("plotly_chart")[1].proto.spec)["data"]]
    assert {"corpus", "target (click)", "landing path", "result"} <= set(closeup)  # the fill's close-up
    assert len(at.session_state["fill_traces"]) == 1
    assert at.get("download_button"), "the fills can be downloaded"


@needs_backbone
def test_sessions_share_the_prepared_corpus_map_and_vec2text_model(app, prepared, tmp_path):
    first = loaded(ok(app.run())).session_state["engine"]
    other = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    other.session_state["engine"] = Engine(embedder_model=str(prepared.embedder), store=ModelStore(tmp_path / "models"),
                                           backbone_path=prepared.backbone)
    second = loaded(ok(other.run())).session_state["engine"]
    assert first is not second and first.vec2text is not None
    assert second.vec2text is first.vec2text
    assert second.corpus is first.corpus and second.map is first.map  # prepared once, adopted
    assert second.embeddings is first.embeddings and second.positions is first.positions
    assert second.fills is not first.fills


@needs_backbone
def test_the_gap_overlay_and_filling_the_top_gaps(app):
    at = loaded(ok(app.run()))
    at.toggle(key="show_gaps").set_value(True)
    at.number_input(key="gap_count").set_value(2)
    ok(at.run())
    assert at.get("plotly_chart")[0].proto.spec.count('"type":"circle"') == 2
    ok(button(at, "Fill the top 2 gaps").click().run())
    assert len(at.session_state["engine"].fills) == 2
    assert len(at.session_state["fill_traces"]) == 2


@needs_backbone
def test_corpus_upload_replaces_the_corpus_and_trains_its_map(app, small_csv_bytes):
    at = ok(app.run())
    at.switch_page("pages/corpus.py")
    ok(at.run())
    rows = [["text", "label"]] + [[f"document number {i} about {t}", t] for i in range(30) for t in ("cats", "stars")]
    at.get("file_uploader")[0].set_value(("docs.csv", small_csv_bytes(rows), "text/csv"))
    ok(at.run())
    assert "kept 60 texts" in texts(at)
    ok(button(at, "Use these 60 documents").click().run())
    engine = at.session_state["engine"]
    assert len(engine.corpus) == 60 and engine.positions.shape == (60, 2)
    assert "WordNet 3.0 Copyright" not in texts(at)


@needs_backbone
def test_an_ambiguous_csv_offers_the_column_picker(app, small_csv_bytes):
    at = ok(app.run())
    ok(at.switch_page("pages/corpus.py").run())
    rows = [["title", "body"]] + [[f"title {i} of the list", f"a body text number {i} with words"] for i in range(12)]
    at.get("file_uploader")[0].set_value(("two.csv", small_csv_bytes(rows), "text/csv"))
    ok(at.run())
    picker = at.selectbox[0]
    assert set(picker.options) == {"title", "body"}
    ok(picker.set_value("body").run())
    assert "from column 'body'" in texts(at)


@needs_backbone
def test_a_bad_csv_is_explained_and_keeps_the_corpus(app):
    at = ok(app.run())
    ok(at.switch_page("pages/corpus.py").run())
    before = at.session_state["engine"].corpus
    at.get("file_uploader")[0].set_value(("bad.csv", b"text\n\"unclosed,\x00\n", "text/csv"))
    ok(at.run())
    assert "Could not read this file" in texts(at)
    assert at.session_state["engine"].corpus is before


@needs_backbone
def test_map_training_runs_in_the_background_with_its_history(app):
    at = ok(app.run())
    ok(at.switch_page("pages/train.py").run())
    for name, value in {"n_epochs": 5, "encoder_epochs": 2, "decoder_epochs": 2, "transform_steps": 5}.items():
        at.number_input(key=f"map_form.{name}").set_value(value)
    ok(button(at, "Train a new map").click().run())
    job = at.session_state["train_jobs"]["map"]
    at = until_done(at, job)
    snapshot = job.snapshot()
    assert snapshot.state == "done"
    assert {e.stage for e in snapshot.events} >= {"layout", "encoder", "decoder"}
    assert at.session_state["engine"].map is job.result
    panels = [[a["text"] for a in json.loads(c.proto.spec)["layout"].get("annotations", [])]
              for c in at.get("plotly_chart")]
    assert ["layout", "encoder", "decoder"] in panels, "a loss chart per stage"
    ok(button(at, "Save the current map").click().run())
    assert "Saved the map as v0002" in texts(at)


@needs_backbone
def test_vec2text_trains_saves_and_rolls_back_from_the_train_page(app):
    at = ok(app.run())
    ok(at.switch_page("pages/train.py").run())
    tiny = {"epochs": 1, "batch_size": 4, "num_prefix": 2, "lora_rank": 2, "corrector_documents": 4,
            "corrector_neighbours": 4, "max_length": 24, "max_documents": 24}
    for name, value in tiny.items():
        at.number_input(key=f"vec2text_form.{name}").set_value(value)
    ok(button(at, "Train Vec2Text").click().run())
    job = at.session_state["train_jobs"]["vec2text"]
    at = until_done(at, job)
    assert job.snapshot().state == "done"
    assert {"inverter", "corrector"} <= {e.stage for e in job.snapshot().events}
    assert at.session_state["engine"].vec2text is job.result
    ok(button(at, "Save the current Vec2Text model").click().run())
    assert "Saved the Vec2Text model as v0002" in texts(at)
    ok(at.selectbox(key="version_vec2text").set_value("v0001").run())
    ok(at.button(key="load_vec2text").click().run())
    engine = at.session_state["engine"]
    assert engine.store.current("vec2text") == "v0001" and engine.vec2text is not job.result


@needs_backbone
def test_a_training_keeps_its_history_across_pages_and_stops_on_request(app):
    at = ok(app.run())
    ok(at.switch_page("pages/train.py").run())
    at.number_input(key="map_form.n_epochs").set_value(100_000)
    ok(button(at, "Train a new map").click().run())
    job = at.session_state["train_jobs"]["map"]
    map_before = at.session_state["engine"].map
    ok(at.switch_page("pages/map.py").run())
    ok(at.switch_page("pages/train.py").run())
    assert at.session_state["train_jobs"]["map"] is job and job.running
    time.sleep(1)
    ok(at.button(key="stop_map").click().run())
    at = until_done(at, job, timeout=30)
    assert job.snapshot().state == "stopped" and job.snapshot().events
    assert at.session_state["engine"].map is map_before, "a stopped map training changes nothing"
    assert "Stopped on request" in texts(at)


@needs_backbone
def test_bad_training_settings_are_explained(app):
    at = ok(app.run())
    ok(at.switch_page("pages/train.py").run())
    at.text_input(key="map_form.hidden_layers").set_value("256, wide")
    ok(button(at, "Train a new map").click().run())
    assert "hidden_layers must be positive whole numbers" in texts(at)
    assert not at.session_state["train_jobs"]


@needs_backbone
def test_evaluate_page_shows_the_map_and_fill_figures(app):
    at = loaded(ok(app.run()))
    engine = at.session_state["engine"]
    gap = engine.gaps(1)[0]
    drive(engine.fill(gap.x, gap.y))
    ok(at.switch_page("pages/evaluate.py").run())
    keys = {c.proto.id for c in at.get("plotly_chart")}
    assert len(keys) == 3  # heatmap, cosines against retrieval, landing distances
    assert {m.label for m in at.metric} >= {"Trustworthiness", "Decoder cosine", "Reconstruction error"}


def test_a_finished_fill_counts_its_steps_as_the_best_step_figure_does():
    assert written_label(0) == "Written by the inverter alone"
    assert written_label(1) == "Written by the inverter and 1 correction step"
    assert written_label(5) == "Written by the inverter and 5 correction steps"
