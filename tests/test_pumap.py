"""Parametric UMAP: the map keeps neighbourhoods, the decoder inverts it, it saves and loads."""
from __future__ import annotations

import numpy as np
import pytest

from gapfill.events import drive
from gapfill.map_config import ParametricUMAPConfig
from gapfill.map_metrics import decoder_cosine, trustworthiness
from gapfill.model_files import ModelFileError
from gapfill.pumap import ParametricUMAP
from gapfill.storage import ModelStore

FAST = {"n_epochs": 40, "encoder_epochs": 30, "decoder_epochs": 40, "batch_size": 64, "transform_steps": 30}


def clustered(n: int, dim: int = 32, k: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around k random centres: a corpus with clear topics."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    labels = rng.integers(0, k, n)
    x = centres[labels] + 0.35 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


@pytest.fixture(scope="session")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(440)


@pytest.fixture(scope="session")
def fitted(data) -> ParametricUMAP:
    x, _ = data
    model = ParametricUMAP(ParametricUMAPConfig(**FAST), x.shape[1])
    events = []
    drive(model.fit(x[:400]), events.append)
    model.events = events
    return model


def test_config_rejects_bad_values_with_the_allowed_range():
    with pytest.raises(ValueError, match="min_dist"):
        ParametricUMAPConfig(min_dist=2.0)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        ParametricUMAPConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="unknown map settings"):
        ParametricUMAPConfig.from_dict({"n_epoch": 3})


def test_config_round_trips_through_a_dict_and_keeps_help():
    cfg = ParametricUMAPConfig(hidden_layers=[64, 32])
    assert cfg.hidden_layers == (64, 32)
    assert ParametricUMAPConfig.from_dict(cfg.to_dict()) == cfg
    from dataclasses import fields

    assert all(f.metadata.get("help") for f in fields(ParametricUMAPConfig))


def test_fit_reports_every_stage_with_losses(fitted):
    stages = [e.stage for e in fitted.events]
    assert stages[0] == "graph"
    assert {"layout", "encoder", "decoder"} <= set(stages)
    layout = [e.loss for e in fitted.events if e.stage == "layout"]
    assert layout[-1] < layout[0]
    assert any("val_loss" in e.metrics for e in fitted.events if e.stage == "decoder")


def test_map_keeps_neighbourhoods_of_training_and_held_out_points(data, fitted):
    x, _ = data
    assert trustworthiness(fitted.anchors, fitted.anchors_2d, 10) > 0.9
    held = x[400:]
    assert trustworthiness(held, fitted.encode(held), 10, fitted.anchors, fitted.anchors_2d) > 0.85


def test_map_separates_topics(data, fitted):
    x, labels = data
    from gapfill.map_metrics import knn_label_agreement

    y = fitted.encode(x)
    assert knn_label_agreement(y, labels, k=10) > 0.9


def test_training_documents_stay_where_the_layout_put_them(fitted):
    np.testing.assert_allclose(fitted.encode(fitted.anchors[:20]), fitted.anchors_2d[:20], atol=1e-5)


def test_a_new_document_lands_in_the_densest_group_of_its_neighbours():
    from gapfill.layout import Neighbourhoods, place_at_mode

    # Four neighbours: three close together around (0, 0), one far away at (10, 0), the far
    # one the nearest in embedding space. The plain weighted mean would land at about
    # (2.5, 0), where none of them is.
    anchors_2d = np.array([[10.0, 0.0], [0.0, 0.1], [0.1, -0.1], [-0.1, 0.0]], dtype=np.float32)
    hoods = Neighbourhoods(np.array([[0, 1, 2, 3]]), np.array([[1.0, 0.8, 0.8, 0.8]], dtype=np.float32),
                           np.array([[0.9, 0.8, 0.8, 0.8]], dtype=np.float32))
    placed = place_at_mode(hoods, anchors_2d, radius=1.0)
    np.testing.assert_allclose(placed[0], anchors_2d[1:].mean(0), atol=1e-6)


def test_decoder_inverts_encoder_on_held_out_points(data, fitted):
    x, _ = data
    held = x[400:]
    cos = decoder_cosine(fitted, held)
    # Better than a random direction by far, and about as good as the topic centre.
    assert cos.mean() > 0.6
    decoded = fitted.decode(fitted.encode(held))
    np.testing.assert_allclose(np.linalg.norm(decoded, axis=1), 1.0, atol=1e-5)


def test_encode_and_decode_accept_one_item_or_a_batch(data, fitted):
    x, _ = data
    assert fitted.encode(x[0]).shape == (2,)
    assert fitted.encode(x[:3]).shape == (3, 2)
    assert fitted.decode(np.zeros(2)).shape == (x.shape[1],)
    with pytest.raises(ValueError, match="finite"):
        fitted.decode(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        fitted.encode(np.zeros((2, 5), dtype=np.float32))


def test_save_and_load_round_trip_gives_the_same_map(tmp_path, data, fitted):
    x, _ = data
    store = ModelStore(tmp_path)
    version = store.save("pumap", fitted.state_tensors(), fitted.manifest())
    tensors, manifest = store.load("pumap", version, expect={"embedding_dim": x.shape[1]})
    loaded = ParametricUMAP.from_saved(tensors, manifest)
    np.testing.assert_allclose(loaded.encode(x[400:405]), fitted.encode(x[400:405]), atol=1e-5)
    np.testing.assert_allclose(loaded.decode(np.ones((2, 2))), fitted.decode(np.ones((2, 2))), atol=1e-6)
    with pytest.raises(ModelFileError, match="embedding_dim"):
        store.load("pumap", version, expect={"embedding_dim": 384})


def test_same_seed_gives_the_same_layout(data):
    x, _ = data
    cfg = ParametricUMAPConfig(**(FAST | {"n_epochs": 5, "encoder_epochs": 1, "decoder_epochs": 1}))
    a = drive(ParametricUMAP(cfg, x.shape[1]).fit(x[:200]))
    b = drive(ParametricUMAP(cfg, x.shape[1]).fit(x[:200]))
    np.testing.assert_allclose(a.anchors_2d, b.anchors_2d, atol=1e-5)


def test_early_stopping_ends_a_stage_before_its_last_epoch(data):
    x, _ = data
    cfg = ParametricUMAPConfig(**(FAST | {"n_epochs": 5, "encoder_epochs": 300, "early_stopping_patience": 2}))
    events = []
    drive(ParametricUMAP(cfg, x.shape[1]).fit(x[:200]), events.append)
    encoder_epochs = [e.step for e in events if e.stage == "encoder"]
    assert encoder_epochs[-1] < 300


def test_trustworthiness_matches_scikit_learn():
    from sklearn.manifold import trustworthiness as sk_trust

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 10)).astype(np.float32)
    y = x[:, :2] + 0.3 * rng.normal(size=(300, 2)).astype(np.float32)
    assert trustworthiness(x, y, 10, chunk=64) == pytest.approx(sk_trust(x, y, n_neighbors=10), abs=1e-9)


def test_smooth_knn_dist_port_matches_umap_learn():
    from umap.umap_ import smooth_knn_dist as reference

    from gapfill.layout import smooth_knn_dist

    rng = np.random.default_rng(0)
    d = np.sort(rng.random((300, 15)).astype(np.float32), axis=1)
    d[:5, :3] = 0.0  # duplicates of the query
    d[5] = 0.0  # nothing but duplicates
    sigma, rho = smooth_knn_dist(d, 15.0)
    ref_sigma, ref_rho = reference(d, 15.0, local_connectivity=1.0)
    np.testing.assert_allclose(rho, ref_rho, atol=1e-6)
    np.testing.assert_allclose(sigma, ref_sigma, rtol=1e-4, atol=1e-6)
