"""Placing documents on the plane with UMAP's objective, in torch.

`optimize_layout` lays out the training documents (positions as free parameters, the whole
graph per step); `place` puts new documents among them by optimising only the new positions
against their nearest training documents, as umap-learn's `transform` does.
"""
from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from gapfill import umap_math


@dataclass(frozen=True)
class Neighbourhoods:
    """Each query's k nearest anchors and UMAP's membership strength of each link."""

    indices: np.ndarray  # (Q, k) into the anchors, nearest first
    weights: np.ndarray  # (Q, k) in (0, 1]
    similarities: np.ndarray  # (Q, k) cosine


def neighbourhoods(queries: np.ndarray, anchors: np.ndarray, k: int) -> Neighbourhoods:
    """Cosine kNN of unit-length queries among unit-length anchors, with umap-learn's
    membership strengths exp(-(d - rho) / sigma) (`smooth_knn_dist`), as in its transform."""
    from umap.umap_ import smooth_knn_dist

    k = min(k, len(anchors))
    sims = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)) @ torch.from_numpy(anchors).T  # (Q, A)
    top = sims.topk(k, dim=1)  # sorted, nearest first; far quicker than numpy's argpartition here
    idx, s = top.indices.numpy(), top.values.numpy()
    d = np.clip(1.0 - s, 0.0, None).astype(np.float32)
    sigma, rho = smooth_knn_dist(d, float(k), local_connectivity=1.0)
    w = np.exp(-np.clip(d - rho[:, None], 0.0, None) / sigma[:, None]).astype(np.float32)
    return Neighbourhoods(idx.astype(np.int64), w, s.astype(np.float32))


def optimize_layout(
    init: np.ndarray,
    graph: umap_math.FuzzyGraph,
    a: float,
    b: float,
    n_epochs: int,
    learning_rate: float,
    negative_sample_rate: int,
    repulsion_strength: float,
    edges_per_step: int,
    seed: int,
) -> Generator[tuple[int, float, np.ndarray], None, None]:
    """UMAP's layout optimisation in minibatches of edges: each epoch takes every edge once,
    in shuffled steps of `edges_per_step`, weighted by its membership, with
    `negative_sample_rate` uniform negatives per edge; Adam on all positions, the step size
    annealed to zero over the run as UMAP anneals its own. Yields (epoch, mean loss,
    positions)."""
    gen = torch.Generator().manual_seed(seed)
    pos = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(init, dtype=np.float32)))
    heads, tails = torch.from_numpy(graph.heads), torch.from_numpy(graph.tails)
    w = torch.from_numpy(graph.weights)
    n_edges, r = len(heads), negative_sample_rate
    steps = max(1, -(-n_edges // edges_per_step))
    opt = torch.optim.Adam([pos], lr=learning_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_epochs * steps)
    for epoch in range(1, n_epochs + 1):
        perm = torch.randperm(n_edges, generator=gen)
        total = 0.0
        for s in range(steps):
            e = perm[s * edges_per_step : (s + 1) * edges_per_step]
            y_head = pos[heads[e]]  # (E, C)
            d_pos = (y_head - pos[tails[e]]).pow(2).sum(-1)  # (E,)
            neg = torch.randint(len(init), (len(e), r), generator=gen)
            d_neg = (y_head[:, None, :] - pos[neg]).pow(2).sum(-1).reshape(-1)  # (E * R,)
            loss = umap_math.umap_cross_entropy(d_pos, d_neg, a, b, repulsion_strength, w[e])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        yield epoch, total / steps, pos.detach().numpy()


def neighbourhood_loss(
    y: torch.Tensor,
    anchors_2d: torch.Tensor,
    hoods: Neighbourhoods,
    a: float,
    b: float,
    negative_sample_rate: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """UMAP's loss of query positions `y` (Q, C) against fixed anchor positions: pulled to
    their neighbours by membership, pushed from uniform negatives."""
    q, k = hoods.indices.shape
    r = negative_sample_rate
    idx = torch.from_numpy(hoods.indices)
    d_pos = (y[:, None, :] - anchors_2d[idx]).pow(2).sum(-1).reshape(-1)  # (Q * k,)
    neg = torch.randint(len(anchors_2d), (q * k * r,), generator=gen)
    d_neg = (y.repeat_interleave(k * r, 0) - anchors_2d[neg]).pow(2).sum(-1)  # (Q * k * R,)
    return umap_math.umap_cross_entropy(d_pos, d_neg, a, b, 1.0, torch.from_numpy(hoods.weights).reshape(-1))


def place(
    init: np.ndarray,
    anchors_2d: np.ndarray,
    hoods: Neighbourhoods,
    a: float,
    b: float,
    steps: int,
    learning_rate: float,
    negative_sample_rate: int,
    seed: int = 0,
) -> np.ndarray:
    """Refine positions of new documents (Q, C) with `steps` Adam steps of
    `neighbourhood_loss`, the training documents staying where they are."""
    if steps <= 0 or len(init) == 0:
        return init
    gen = torch.Generator().manual_seed(seed)
    y = torch.nn.Parameter(torch.from_numpy(np.array(init, dtype=np.float32)))
    fixed = torch.from_numpy(anchors_2d)
    opt = torch.optim.Adam([y], lr=learning_rate)
    for _ in range(steps):
        loss = neighbourhood_loss(y, fixed, hoods, a, b, negative_sample_rate, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return y.detach().numpy()
