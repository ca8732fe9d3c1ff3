"""The embedder: shapes, unit norms, the disk cache and progress events."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from gapfill.embedder import DEFAULT_MODEL, Embedder, resolve_model_path
from gapfill.events import drive

TEXTS = ["a cat sat on the mat", "stock prices fell", "a kitten", "the tax form is due", "rain"]


def _count_model_calls(embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap the underlying model's encode; the list collects the batch size of each call."""
    calls: list[int] = []
    original = embedder.model.encode

    def counting(texts, *args, **kwargs):
        calls.append(len(texts))
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(embedder.model, "encode", counting)
    return calls


def test_one_string_gives_a_vector_and_a_list_gives_a_matrix(tiny_embedder):
    assert tiny_embedder.dim == 32
    one = tiny_embedder.encode("a cat")
    many = tiny_embedder.encode(TEXTS)
    assert one.shape == (32,) and one.dtype == np.float32
    assert many.shape == (len(TEXTS), 32) and many.dtype == np.float32
    assert tiny_embedder.encode([]).shape == (0, 32)


def test_embeddings_have_unit_length_and_match_one_by_one(tiny_embedder):
    many = tiny_embedder.encode(TEXTS, batch_size=2)
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(many[2], tiny_embedder.encode(TEXTS[2]), atol=1e-5)


def test_second_call_is_served_from_the_cache(tiny_embedder, monkeypatch):
    calls = _count_model_calls(tiny_embedder, monkeypatch)
    first = tiny_embedder.encode(TEXTS)
    assert sum(calls) == len(TEXTS)
    second = tiny_embedder.encode(list(reversed(TEXTS)))
    assert sum(calls) == len(TEXTS)  # nothing embedded again
    np.testing.assert_allclose(second, first[::-1], atol=1e-6)
    with sqlite3.connect(tiny_embedder.cache_path) as db:
        assert db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == len(TEXTS)


def test_cache_is_shared_by_a_new_embedder_on_the_same_folder(tiny_embedder, tiny_st_model_dir, monkeypatch):
    tiny_embedder.encode(TEXTS)
    other = Embedder(str(tiny_st_model_dir), cache_dir=tiny_embedder.cache_path.parent.parent)
    calls = _count_model_calls(other, monkeypatch)
    other.encode(TEXTS + ["new text"])
    assert calls == [1]
    other.close()


def test_only_missing_and_distinct_texts_are_embedded(tiny_embedder, monkeypatch):
    tiny_embedder.encode(TEXTS[:2])
    calls = _count_model_calls(tiny_embedder, monkeypatch)
    out = tiny_embedder.encode(TEXTS + [TEXTS[3]])
    assert sum(calls) == len(TEXTS) - 2
    np.testing.assert_allclose(out[3], out[-1])


def test_cache_can_be_turned_off(tiny_st_model_dir, tmp_path, monkeypatch):
    embedder = Embedder(str(tiny_st_model_dir), cache=False, cache_dir=tmp_path)
    calls = _count_model_calls(embedder, monkeypatch)
    embedder.encode(TEXTS)
    embedder.encode(TEXTS)
    assert sum(calls) == 2 * len(TEXTS)
    assert embedder.cache_path is None and not any(tmp_path.iterdir())


def test_iter_encode_yields_progress_ending_at_total(tiny_embedder):
    tiny_embedder.encode(TEXTS[:1])  # one cached text counts as done at once
    events = []
    out = drive(tiny_embedder.iter_encode(TEXTS, batch_size=2), events.append)
    assert out.shape == (len(TEXTS), 32)
    assert [e.step for e in events] == [1, 3, 5]
    assert all(e.total == len(TEXTS) and e.stage == "embed" for e in events)
    assert events[-1].fraction == 1.0 and events[-1].metrics["texts_per_s"] > 0


def test_invalid_inputs_raise_value_errors_that_say_what_to_do(tiny_embedder):
    with pytest.raises(ValueError, match="item 1 has type int"):
        tiny_embedder.encode(["ok", 3])
    with pytest.raises(ValueError, match="batch_size"):
        tiny_embedder.encode(TEXTS, batch_size=0)


def test_unknown_model_name_points_to_the_packaged_default(tmp_path):
    with pytest.raises(ValueError, match=DEFAULT_MODEL):
        resolve_model_path("bert-base-uncased")
    with pytest.raises(ValueError, match="not a sentence-transformers model folder"):
        resolve_model_path(str(tmp_path))


def test_model_ids_name_the_default_and_resolve_folders(tiny_embedder, tiny_st_model_dir):
    assert tiny_embedder.model_id == str(tiny_st_model_dir.resolve())
    assert resolve_model_path(f"sentence-transformers/{DEFAULT_MODEL}") == resolve_model_path(DEFAULT_MODEL)


def test_packaged_minilm_puts_a_cat_nearer_a_kitten_than_a_tax_form(tmp_path):
    embedder = Embedder(DEFAULT_MODEL, cache_dir=tmp_path)
    cat, kitten, tax = embedder.encode(["a cat", "a kitten", "a tax form"])
    assert embedder.model_id == DEFAULT_MODEL and embedder.dim == 384
    assert float(cat @ kitten) > float(cat @ tax) + 0.2
    embedder.close()


def test_a_corpus_in_the_cache_is_served_without_loading_the_model(tiny_embedder, tiny_st_model_dir):
    expected = tiny_embedder.encode(TEXTS)
    fresh = Embedder(str(tiny_st_model_dir), cache_dir=tiny_embedder.cache_path.parents[1])
    assert fresh.dim == 32  # read from the folder's module configs
    np.testing.assert_allclose(fresh.encode(TEXTS), expected, atol=1e-6)
    assert fresh._model is None
    fresh.encode(["a text the cache has never seen"])
    assert fresh._model is not None
    fresh.close()
