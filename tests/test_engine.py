"""The engine end to end on tiny models: corpus, map, Vec2Text, gaps, fills, versions."""
from __future__ import annotations

import numpy as np
import pytest

from gapfill.backbone import backbone_dir, build_tiny_backbone
from gapfill.engine import Engine, NotReadyError
from gapfill.events import drive
from gapfill.map_config import ParametricUMAPConfig
from gapfill.storage import ModelStore
from gapfill.vec2text_config import Vec2TextConfig

pytestmark = pytest.mark.skipif(
    not (backbone_dir() / "READY.json").exists(), reason="backbone not prepared: run `make setup`"
)

MAP = ParametricUMAPConfig(n_epochs=30, encoder_epochs=5, decoder_epochs=10, transform_steps=20)
V2T = Vec2TextConfig(epochs=1, batch_size=4, num_prefix=2, lora_rank=2, corrector_documents=4, corrector_neighbours=4,
                     max_length=24, max_documents=24, num_steps=2, sequence_beam_width=2)


@pytest.fixture(scope="module")
def engine(tiny_st_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    eng = Engine(embedder_model=str(tiny_st_model_dir), store=ModelStore(root / "models"),
                 backbone_path=build_tiny_backbone(root / "lm"))
    drive(eng.load_builtin(n=80))
    return eng


def test_verbs_that_need_a_map_or_a_model_say_what_to_call_first(tiny_st_model_dir, tmp_path):
    fresh = Engine(embedder_model=str(tiny_st_model_dir), store=ModelStore(tmp_path))
    with pytest.raises(NotReadyError, match="initialize"):
        drive(fresh.train_map())
    drive(fresh.load_builtin(n=30))
    with pytest.raises(NotReadyError, match="train-parametric-umap"):
        fresh.gaps()


def test_train_map_places_every_document_and_saves_versions(engine):
    drive(engine.train_map(MAP))
    assert engine.positions.shape == (80, 2) and np.isfinite(engine.positions).all()
    first = engine.save_map()
    second = engine.save_map()
    assert (first, second) == ("v0001", "v0002")
    engine.load_map(first)
    assert engine.map.metrics["trust"] > 0.5


def test_fill_yields_every_step_and_lands_near_the_click(engine):
    drive(engine.train_vec2text(V2T))
    gap = engine.gaps(3)[0]
    steps = []
    result = drive(engine.fill(gap.x, gap.y), steps.append)
    assert steps[0].step == 0 and len(steps) == result.steps
    assert all(0 <= c.distance for s in steps for c in s.candidates)
    assert result.text and -1 <= result.cosine <= 1
    assert 0 <= result.nearest_index < 80 and result.nearest_text in engine.corpus.texts
    assert engine.fills[-1] == result
    frame = engine.fills_frame()
    assert list(frame["text"]) == [result.text]


def test_a_fill_rewrites_the_nearest_documents_when_asked_and_never_returns_one(engine):
    gap = engine.gaps(3)[0]
    steps = []
    result = drive(engine.fill(gap.x, gap.y, seed_documents=2, num_steps=1), steps.append)
    target = engine.map.decode(np.array([gap.x, gap.y], dtype=np.float32))
    nearest = {engine.corpus.texts[i] for i in np.argsort(-(engine.embeddings @ target))[:2]}
    seeds = {c.text for c in steps[0].candidates if c.seed}
    assert seeds == nearest
    assert not steps[0].best.seed and result.text not in seeds
    with pytest.raises(ValueError, match="seed_documents"):
        drive(engine.fill(gap.x, gap.y, seed_documents=-1))


def test_fill_refuses_points_far_outside_the_map_and_non_numbers(engine):
    lo, hi = engine.map.bounds
    with pytest.raises(ValueError, match="far outside"):
        drive(engine.fill(float(hi[0] + 100 * (hi[0] - lo[0])), float(lo[1])))
    with pytest.raises(ValueError, match="finite"):
        drive(engine.fill(float("nan"), 0.0))


def test_vec2text_saves_and_loads_as_a_new_version(engine):
    version = engine.save_vec2text()
    loaded = engine.load_vec2text(version)
    assert loaded.config == V2T


def test_a_bad_csv_leaves_the_corpus_and_map_untouched(engine):
    from gapfill.corpus import CorpusError

    before = engine.corpus
    with pytest.raises(CorpusError):
        drive(engine.load_csv(b"a,b\n1,2\n"))
    assert engine.corpus is before and engine.map is not None


def test_evaluate_reports_map_and_fill_metrics(engine):
    report = engine.evaluate(n_fills=1)
    assert 0 <= report["map"]["reconstruction_error"] < 1
    assert 0 <= report["map"]["embedding_distance"] <= 2
    fills = report["fills"]
    assert fills["n"] >= 2 and 0 <= fills["novelty"] <= 1
    assert fills["text"]["perplexity"] > 1


def test_adopting_shares_the_prepared_corpus_and_map_until_either_engine_replaces_its_own(
        engine, tiny_st_model_dir, tmp_path):
    if engine.map is None:
        drive(engine.train_map(MAP))
    other = Engine(embedder_model=str(tiny_st_model_dir), store=ModelStore(tmp_path))
    other.adopt(engine)
    assert other.corpus is engine.corpus and other.map is engine.map and other.embedder is engine.embedder
    assert other.gaps(2) == engine.gaps(2)
    before = engine.map
    drive(other.train_map(MAP))  # the adopting engine's own new map
    assert other.map is not before and engine.map is before
    with pytest.raises(ValueError, match="embeds with"):
        Engine(embedder_model="all-MiniLM-L6-v2", store=ModelStore(tmp_path)).adopt(engine)
