"""Filling a point of the map: decode it to a target embedding, invert that with Vec2Text, and
follow where every hypothesis lands on the map.

`fill` wraps the correction loop (`gapfill.correction.invert`) and adds, for each candidate,
its landing point encode(embed(text)) and the distance to the click. With `target_aware`,
candidates are ranked by cosine minus a penalty on that distance, so the loop prefers texts
that land where the user clicked, not only texts close in embedding space.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np

from gapfill.correction import Candidate, Inverter, Step, invert, nearest_texts
from gapfill.pumap import ParametricUMAP

log = logging.getLogger(__name__)

# How far outside the box of the corpus a click may be, as a share of the box's size.
CLICK_MARGIN = 0.25
# What the front-ends accept for a fill's loop settings (the API's 422, the Map page's inputs,
# the CLI's errors), as (least, most). A step writes sequence_beam_width² texts, so the width
# stays small.
SETTING_BOUNDS = {"num_steps": (0, 50), "sequence_beam_width": (1, 8), "seed_documents": (0, 8)}
# Target-aware ranking: cosine minus this times the landing distance as a share of the map's
# diagonal (a text landing a tenth of the map away loses 0.05 of cosine).
DISTANCE_WEIGHT = 0.5


@dataclass(frozen=True)
class Landing:
    """One candidate text and where it lands."""

    text: str
    cosine: float  # to the target embedding
    x: float
    y: float
    distance: float  # to the click, as a share of the map's diagonal
    step: int
    seed: bool = False  # a corpus document given to the corrector, not a written text


@dataclass(frozen=True)
class FillStep:
    """One step of a fill as the front-ends draw it."""

    step: int
    candidates: tuple[Landing, ...]  # this step's new texts, best first
    best: Landing
    improved: bool
    elapsed_s: float


@dataclass(frozen=True)
class FillResult:
    """The text written for a point, where it landed, and how new it is."""

    x: float
    y: float  # the click
    text: str
    cosine: float
    landed_x: float
    landed_y: float
    distance: float  # share of the map's diagonal
    nearest_index: int  # the corpus document most similar to the text
    nearest_text: str
    nearest_cosine: float  # novelty: below ~0.95 the text is not a copy of a document
    steps: int
    best_step: int
    stopped: str


def check_click(model: ParametricUMAP, x: float, y: float) -> None:
    """Refuse non-numbers and points far outside the map, saying what is allowed."""
    if not (np.isfinite(x) and np.isfinite(y)):
        raise ValueError(f"the point must have finite coordinates, got ({x}, {y})")
    lo, hi = model.bounds
    pad = (hi - lo) * CLICK_MARGIN
    if not (lo[0] - pad[0] <= x <= hi[0] + pad[0] and lo[1] - pad[1] <= y <= hi[1] + pad[1]):
        raise ValueError(
            f"({x:.3g}, {y:.3g}) is far outside the map; x must lie in [{lo[0] - pad[0]:.3g}, {hi[0] + pad[0]:.3g}] "
            f"and y in [{lo[1] - pad[1]:.3g}, {hi[1] + pad[1]:.3g}]"
        )


class _Lander:
    """Map positions of candidate embeddings, computed once per embedding."""

    def __init__(self, model: ParametricUMAP, x: float, y: float) -> None:
        self.model, self.click = model, np.array([x, y], dtype=np.float32)
        self.diagonal = float(np.linalg.norm(model.bounds[1] - model.bounds[0])) or 1.0
        self.seen: dict[bytes, np.ndarray] = {}

    def positions(self, embeddings: np.ndarray) -> np.ndarray:
        missing = [e for e in embeddings if e.tobytes() not in self.seen]
        if missing:
            for e, p in zip(missing, self.model.encode(np.stack(missing))):
                self.seen[e.tobytes()] = p
        return np.stack([self.seen[e.tobytes()] for e in embeddings])

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self.positions(embeddings) - self.click, axis=1) / self.diagonal

    def landing(self, c: Candidate) -> Landing:
        p = self.positions(c.embedding[None])[0]
        d = float(np.linalg.norm(p - self.click)) / self.diagonal
        return Landing(c.text, c.cosine, float(p[0]), float(p[1]), d, c.step, c.seed)


def fill(
    model: Inverter,
    pumap: ParametricUMAP,
    embed: Callable[[list[str]], np.ndarray],
    corpus_embeddings: np.ndarray,
    corpus_texts: tuple[str, ...],
    x: float,
    y: float,
    *,
    num_steps: int,
    sequence_beam_width: int,
    seed_documents: int,
    target_aware: bool = True,
    on_text: Callable[[int, str, bool], None] | None = None,
) -> Generator[FillStep, None, FillResult]:
    """Write a text for the point (x, y) of the map; yields every correction step
    (`on_text`: watch each step's first text being written, see `correction.invert`).
    The loop's settings have no defaults here: they are the model's (`Engine.fill`).
    The `seed_documents` corpus documents nearest the target join the first hypotheses for
    the corrector to rewrite; the result is never one of them."""
    check_click(pumap, x, y)
    if seed_documents < 0:
        raise ValueError(f"seed_documents must be 0 or more, got {seed_documents}")
    target = pumap.decode(np.array([x, y], dtype=np.float32))
    seeds = nearest_texts(corpus_texts, corpus_embeddings, target, seed_documents)
    lander = _Lander(pumap, x, y)

    def scorer(embeddings: np.ndarray, t: np.ndarray) -> np.ndarray:
        return embeddings @ t - DISTANCE_WEIGHT * lander.distances(embeddings)

    gen = invert(model, target, embed, num_steps=num_steps, sequence_beam_width=sequence_beam_width,
                 scorer=scorer if target_aware else None, on_text=on_text, seeds=seeds)
    while True:
        try:
            step: Step = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        yield FillStep(step.step, tuple(lander.landing(c) for c in step.candidates), lander.landing(step.best),
                       step.improved, step.elapsed_s)
    best = lander.landing(result.best)
    sims = corpus_embeddings @ result.best.embedding
    nearest = int(np.argmax(sims))
    return FillResult(
        x=float(x), y=float(y), text=best.text, cosine=best.cosine, landed_x=best.x, landed_y=best.y,
        distance=best.distance, nearest_index=nearest, nearest_text=corpus_texts[nearest],
        nearest_cosine=float(sims[nearest]), steps=len(result.steps), best_step=result.best_step,
        stopped=result.stopped,
    )
