"""The training guide's quality metrics, for a map and for the texts written into it.

- reconstruction error: a map point p → decode → encode lands how far from p (share of the
  map's diagonal), over a grid covering the map;
- embedding distance: an embedding e → encode → decode is how far from e (1 − cosine);
- embedding similarity: cosine of each fill's text to its target embedding, against the
  retrieval baseline (the most similar corpus document's cosine to the same target);
- target accuracy: how far each fill's text lands from its click (share of the diagonal);
- convergence: the correction step at which each fill's best text appeared;
- text quality: length, repetition and perplexity under the backbone (adapter switched off).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from gapfill.filling import FillResult
from gapfill.map_metrics import decoder_cosine, reconstruction_error
from gapfill.pumap import ParametricUMAP


def map_grid(model: ParametricUMAP, n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An n × n grid over the map's box: xs (n,), ys (n,), points (n * n, 2), row-major by y."""
    lo, hi = model.bounds
    xs, ys = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    gx, gy = np.meshgrid(xs, ys)
    return xs, ys, np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)


def reconstruction_heatmap(model: ParametricUMAP, n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xs, ys, errors (n, n)): the reconstruction error at every grid point of the map."""
    xs, ys, points = map_grid(model, n)
    return xs, ys, reconstruction_error(model, points).reshape(n, n)


@dataclass(frozen=True)
class MapReport:
    trust: float | None
    reconstruction_error: float  # mean over a grid, share of the diagonal
    embedding_distance: float  # mean 1 - cos(decode(encode(e)), e) over corpus documents


@dataclass(frozen=True)
class TextQuality:
    words: float  # mean length in words
    repetition: float  # share of word trigrams that repeat an earlier trigram of the same text
    perplexity: float | None  # under the backbone alone, when one is given


@dataclass(frozen=True)
class FillReport:
    n: int
    embedding_similarity: float
    target_accuracy: float
    convergence: float
    novelty: float  # share of fills whose nearest corpus document has cosine below 0.95
    text: TextQuality


def evaluate_map(model: ParametricUMAP, embeddings: np.ndarray, sample: int = 1000, seed: int = 0) -> MapReport:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(embeddings), size=min(sample, len(embeddings)), replace=False)
    _, _, points = map_grid(model, 30)
    return MapReport(
        trust=model.metrics.get("trust"),
        reconstruction_error=float(reconstruction_error(model, points).mean()),
        embedding_distance=float(1.0 - decoder_cosine(model, embeddings[idx]).mean()),
    )


def repetition(text: str) -> float:
    words = text.lower().split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


@torch.no_grad()
def perplexity(vec2text, texts: Sequence[str]) -> float:
    """Perplexity of the texts under the plain backbone (the LoRA adapter disabled): how
    natural the language is, whatever embedding it came from."""
    tok = vec2text.tokenizer
    total, count = 0.0, 0
    with vec2text.backbone_only():
        for text in texts:
            ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"][:, : vec2text.config.max_length]
            if ids.shape[1] < 2:
                continue
            loss = vec2text.lm(input_ids=ids, labels=ids).loss.item()
            total, count = total + loss * (ids.shape[1] - 1), count + ids.shape[1] - 1
    return math.exp(total / count) if count else float("nan")


def evaluate_fills(fills: Sequence[FillResult], vec2text=None) -> FillReport:
    texts = [f.text for f in fills]
    quality = TextQuality(
        words=float(np.mean([len(t.split()) for t in texts])),
        repetition=float(np.mean([repetition(t) for t in texts])),
        perplexity=None if vec2text is None else perplexity(vec2text, texts),
    )
    return FillReport(
        n=len(fills),
        embedding_similarity=float(np.mean([f.cosine for f in fills])),
        target_accuracy=float(np.mean([f.distance for f in fills])),
        convergence=float(np.mean([f.best_step for f in fills])),
        novelty=float(np.mean([f.nearest_cosine < 0.95 for f in fills])),
        text=quality,
    )


def retrieval_cosines(fills: Sequence[FillResult], model: ParametricUMAP, embeddings: np.ndarray) -> np.ndarray:
    """The retrieval baseline of each fill (F,): the cosine between its target, decode(x, y),
    and the most similar corpus document. A fill whose text beats it says something about
    the point that no existing document says as well."""
    if not fills:
        return np.zeros(0, dtype=np.float32)
    targets = model.decode(np.array([[f.x, f.y] for f in fills], dtype=np.float32))  # (F, D), unit rows
    return (targets @ embeddings.T).max(axis=1)


def as_dict(report: MapReport | FillReport) -> dict[str, object]:
    return asdict(report)
