"""Saved models: round trips, versions and rollback, and what damaged files turn into."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gapfill.model_files import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ModelFileError,
    ModelMismatchError,
    atomic_write_json,
    load_model,
    read_manifest,
    save_model,
)
from gapfill.storage import POINTER_FILE, ModelStore

REPO = Path(__file__).resolve().parents[1]


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "layer.weight": torch.randn(4, 3, generator=g),
        "layer.bias": torch.arange(4, dtype=torch.float64),
    }


def test_save_load_round_trip_keeps_tensors_and_manifest(tmp_path: Path) -> None:
    tensors = _tensors(0)
    tensors["tied"] = tensors["layer.weight"]  # shared storage, as with tied weights
    manifest_in = {"kind": "pumap", "embedding_dim": 384, "config": {"n_neighbors": 15}}
    save_model(tmp_path, tensors, manifest_in)

    loaded, manifest = load_model(tmp_path, expect={"kind": "pumap", "embedding_dim": 384})

    assert set(loaded) == {"layer.weight", "layer.bias", "tied"}
    torch.testing.assert_close(loaded["layer.weight"], tensors["layer.weight"], rtol=0, atol=0)
    torch.testing.assert_close(loaded["tied"], tensors["layer.weight"], rtol=0, atol=0)
    assert loaded["layer.bias"].dtype == torch.float64
    assert manifest["config"] == {"n_neighbors": 15}
    assert manifest["format_version"] == FORMAT_VERSION
    assert len(manifest["sha256"]) == 64
    assert manifest["saved_at"].endswith("+00:00")


def test_versions_increment_and_old_versions_are_kept(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert store.current("pumap") is None
    ids = [store.save("pumap", _tensors(i), {"metrics": {"val_loss": 1 / (i + 1)}})
           for i in range(3)]

    assert ids == ["v0001", "v0002", "v0003"]
    infos = store.versions("pumap")
    assert [v.version for v in infos] == ids
    assert [v.is_current for v in infos] == [False, False, True]
    assert [v.metrics["val_loss"] for v in infos] == pytest.approx([1.0, 0.5, 1 / 3])
    assert all(v.complete and (v.path / WEIGHTS_FILE).exists() for v in infos)
    _, manifest = store.load("pumap")
    assert manifest["version"] == "v0003" and manifest["kind"] == "pumap"


def test_set_current_rolls_back_and_load_returns_old_weights(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save("pumap", _tensors(1), {})
    store.save("pumap", _tensors(2), {})

    store.set_current("pumap", "v0001")

    assert store.current("pumap") == "v0001"
    loaded, _ = store.load("pumap")
    torch.testing.assert_close(loaded["layer.weight"], _tensors(1)["layer.weight"], rtol=0, atol=0)
    latest, _ = store.load("pumap", 2)
    torch.testing.assert_close(latest["layer.weight"], _tensors(2)["layer.weight"], rtol=0, atol=0)
    with pytest.raises(ModelFileError, match="v0001, v0002"):
        store.set_current("pumap", "v0007")


def test_expect_mismatch_is_reported_before_weights_are_read(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    version = store.save("pumap", _tensors(0), {"embedding_dim": 768})
    (store.path("pumap", version) / WEIGHTS_FILE).write_bytes(b"garbage, not safetensors")

    with pytest.raises(ModelMismatchError, match=r"embedding_dim=768.*embedding_dim=384"):
        store.load("pumap", expect={"kind": "pumap", "embedding_dim": 384})
    with pytest.raises(ModelFileError, match="sha256"):  # the garbage is still caught when it fits
        store.load("pumap", expect={"embedding_dim": 768})


def test_truncated_weights_raise_model_file_error_naming_the_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save("pumap", _tensors(0), {})
    store.save("pumap", _tensors(1), {})
    weights = store.path("pumap", 2) / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:40])

    rollback = r"v0002 of 'pumap' is broken.*sha256.*set_current\('pumap', 'v0001'\)"
    with pytest.raises(ModelFileError, match=rollback):
        store.load("pumap")
    with pytest.raises(ModelFileError, match="sha256"):
        load_model(weights.parent)


def test_manifest_with_bad_json_raises_model_file_error(tmp_path: Path) -> None:
    save_model(tmp_path, _tensors(0), {"kind": "pumap"})
    (tmp_path / MANIFEST_FILE).write_text('{"kind": "pumap", "sha', encoding="utf-8")

    with pytest.raises(ModelFileError, match="manifest.json is corrupt"):
        read_manifest(tmp_path)
    with pytest.raises(ModelFileError, match="missing"):
        read_manifest(tmp_path / "nowhere")


def test_nan_metric_is_stored_as_null(tmp_path: Path) -> None:
    metrics = {"val_loss": float("nan"), "trust": 0.9}
    save_model(tmp_path, _tensors(0), {"kind": "pumap", "metrics": metrics})

    text = (tmp_path / MANIFEST_FILE).read_text(encoding="utf-8")
    assert "NaN" not in text
    assert json.loads(text)["metrics"] == {"val_loss": None, "trust": 0.9}
    atomic_write_json(tmp_path / "x.json", [float("inf"), (1, 2)])
    assert json.loads((tmp_path / "x.json").read_text()) == [None, [1, 2]]


def test_folder_without_manifest_is_listed_as_incomplete(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save("pumap", _tensors(0), {})
    store.path("pumap", 2).mkdir()

    infos = store.versions("pumap")

    assert [(v.version, v.complete) for v in infos] == [("v0001", True), ("v0002", False)]
    assert store.save("pumap", _tensors(1), {}) == "v0003"


def test_corrupt_pointer_can_be_repaired_with_set_current(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save("pumap", _tensors(0), {})
    (tmp_path / "pumap" / POINTER_FILE).write_text("\x00garbage", encoding="utf-8")

    with pytest.raises(ModelFileError, match="CURRENT is corrupt"):
        store.load("pumap")
    store.set_current("pumap", 1)
    assert store.current("pumap") == "v0001"


_CRASHING_SAVER = """
import sys, torch
from pathlib import Path
from gapfill.storage import ModelStore
root, started = Path(sys.argv[1]), Path(sys.argv[2])
store = ModelStore(root)
store.save("pumap", {"w": torch.ones(3)}, {"step": 0})
started.touch()
for step in range(1, 1000):
    store.save("pumap", {"w": torch.full((2_000_000,), float(step))}, {"step": step})
"""


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_killed_save_leaves_only_complete_versions(tmp_path: Path) -> None:
    root, started = tmp_path / "models", tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", _CRASHING_SAVER, str(root), str(started)]
    proc = subprocess.Popen(args, env=env)
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert proc.poll() is None, "saver exited before version 1 was saved"
            assert time.monotonic() < deadline, "saver never saved version 1"
            time.sleep(0.01)
        time.sleep(0.3)  # let it get into the middle of bigger saves
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    store = ModelStore(root)
    tensors, manifest = store.load("pumap")
    step = manifest["step"]
    expected = torch.ones(3) if step == 0 else torch.full((2_000_000,), float(step))
    torch.testing.assert_close(tensors["w"], expected, rtol=0, atol=0)
    infos = store.versions("pumap")
    assert infos[0].version == "v0001" and all(v.complete for v in infos)
    for info in infos:  # every listed version loads with a matching checksum
        _, m = store.load("pumap", info.version)
        assert m["version"] == info.version
    store.save("pumap", {"w": torch.zeros(1)}, {"step": -1})  # sweeps the killed save's folder
    assert not any(p.name.startswith(".partial-") for p in (root / "pumap").iterdir())
