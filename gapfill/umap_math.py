"""The UMAP pieces Parametric UMAP needs, as small pure functions.

The fuzzy graph and the curve parameters come from umap-learn itself (`fuzzy_simplicial_set`,
`find_ab_params`); only the loss is written here, ported from umap-learn's
`parametric_umap.py` (`convert_distance_to_probability`, `compute_cross_entropy`,
`umap_loss`) to torch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

# Below this many points an exact kNN search is both faster and better than NN-descent: it
# avoids numba's compile time (tens of seconds in a fresh process) and finds true neighbours.
EXACT_KNN_MAX_POINTS = 20_000


@dataclass(frozen=True)
class FuzzyGraph:
    """The symmetric fuzzy simplicial set of the data, as an edge list.

    `heads` and `tails` index points; `weights` are membership strengths in (0, 1].
    """

    heads: np.ndarray  # (E,) int64
    tails: np.ndarray  # (E,) int64
    weights: np.ndarray  # (E,) float32
    n_points: int


def find_ab_params(spread: float, min_dist: float) -> tuple[float, float]:
    """The curve 1 / (1 + a d^(2b)) that best fits UMAP's target membership (umap-learn)."""
    from umap.umap_ import find_ab_params as _find_ab_params

    a, b = _find_ab_params(spread, min_dist)
    return float(a), float(b)


def knn(x: np.ndarray, n_neighbors: int, metric: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours (self included, as umap-learn expects): exact for small data
    (scikit-learn, brute force), NN-descent through umap-learn above EXACT_KNN_MAX_POINTS."""
    if len(x) <= EXACT_KNN_MAX_POINTS:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=n_neighbors, metric=metric, algorithm="brute")
        dists, indices = nn.fit(x).kneighbors(x)
        return indices.astype(np.int64), dists.astype(np.float32)
    from umap.umap_ import nearest_neighbors

    indices, dists, _ = nearest_neighbors(
        x, n_neighbors, metric, {}, angular=False, random_state=np.random.RandomState(seed)
    )
    return indices.astype(np.int64), dists.astype(np.float32)


def fuzzy_graph(x: np.ndarray, n_neighbors: int, metric: str = "cosine", seed: int = 0) -> FuzzyGraph:
    """UMAP's fuzzy graph of `x` (umap-learn's `fuzzy_simplicial_set`) as an edge list."""
    from umap.umap_ import fuzzy_simplicial_set

    n_neighbors = min(n_neighbors, len(x) - 1)
    if n_neighbors < 2:
        raise ValueError(f"a map needs at least 3 documents, got {len(x)}")
    indices, dists = knn(x, n_neighbors, metric, seed)
    graph, _, _ = fuzzy_simplicial_set(
        x,
        n_neighbors,
        np.random.RandomState(seed),
        metric,
        knn_indices=indices,
        knn_dists=dists,
    )
    coo = graph.tocoo()
    return FuzzyGraph(
        heads=coo.row.astype(np.int64),
        tails=coo.col.astype(np.int64),
        weights=coo.data.astype(np.float32),
        n_points=len(x),
    )


def spectral_init(x: np.ndarray, graph: FuzzyGraph, n_components: int, seed: int) -> np.ndarray:
    """umap-learn's spectral initialisation of the layout, scaled to [0, 10] as its
    `simplicial_set_embedding` does (it falls back to a random start on its own)."""
    import scipy.sparse as sp
    from umap.spectral import spectral_layout

    g = sp.coo_matrix((graph.weights, (graph.heads, graph.tails)), shape=(graph.n_points,) * 2).tocsr()
    init = spectral_layout(x, g, n_components, np.random.RandomState(seed))
    span = init.max(0) - init.min(0)
    init = 10.0 * (init - init.min(0)) / np.where(span > 0, span, 1.0)
    return init.astype(np.float32)


def umap_cross_entropy(
    pos_dist2: torch.Tensor,
    neg_dist2: torch.Tensor,
    a: float,
    b: float,
    repulsion_strength: float = 1.0,
    weights: torch.Tensor | None = None,
    eps: float = 1e-4,
) -> torch.Tensor:
    """UMAP's fuzzy cross-entropy over sampled edges and negative samples.

    Low-dimensional similarity q = 1 / (1 + a d^(2b)) (umap-learn
    `convert_distance_to_probability`, with d^(2b) = (d^2)^b); edges are pulled together by
    -log q and negatives pushed apart by -log(1 - q) (`compute_cross_entropy`, with the same
    clipping at `eps`), averaged over all terms as `umap_loss` does.

    pos_dist2: (B,) squared distances of edges; neg_dist2: (B * R,) of their negatives, R per
    edge in order; weights: (B,) optional edge weights.
    """
    q_pos = 1.0 / (1.0 + a * pos_dist2.clamp_min(1e-10).pow(b))
    q_neg = 1.0 / (1.0 + a * neg_dist2.clamp_min(1e-10).pow(b))
    attraction = -torch.log(q_pos.clamp(eps, 1.0))
    repulsion = -torch.log((1.0 - q_neg).clamp(eps, 1.0))
    if weights is None:
        n_terms = pos_dist2.numel() + neg_dist2.numel()
        return (attraction.sum() + repulsion_strength * repulsion.sum()) / n_terms
    # Weighted edges: each edge and its R negatives count with the edge's weight, which is
    # what sampling edges in proportion to their weight gives in expectation.
    r = neg_dist2.numel() // max(pos_dist2.numel(), 1)
    w_neg = weights.repeat_interleave(r)
    total = (weights * attraction).sum() + repulsion_strength * (w_neg * repulsion).sum()
    return total / (weights.sum() * (1 + r))
