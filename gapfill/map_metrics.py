"""How good a map is: neighbourhoods kept, and how well the decoder inverts the encoder."""
from __future__ import annotations

import numpy as np

from gapfill.pumap import ParametricUMAP


def _dist2(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (Q, R)."""
    return (queries**2).sum(1)[:, None] - 2 * queries @ refs.T + (refs**2).sum(1)[None, :]


def knn_indices(queries: np.ndarray, refs: np.ndarray, k: int, self_offset: int | None = None) -> np.ndarray:
    """Indices (Q, k) of the k nearest refs; with `self_offset`, query i is ref i + offset
    and is skipped."""
    d = _dist2(queries, refs)
    if self_offset is not None:
        rows = np.arange(len(d))
        d[rows, rows + self_offset] = np.inf
    return np.argpartition(d, k, axis=1)[:, :k]


def trustworthiness(
    x: np.ndarray,
    y: np.ndarray,
    k: int = 15,
    x_ref: np.ndarray | None = None,
    y_ref: np.ndarray | None = None,
    chunk: int = 1024,
) -> float:
    """Venna & Kaski's trustworthiness: are a point's k nearest neighbours on the map also
    near it in the original space? 1 is perfect.

    With no reference set this equals `sklearn.manifold.trustworthiness(x, y, k)` (the same
    formula over euclidean distances; for unit-length embeddings that ranks like cosine). With
    `x_ref`, `y_ref` the neighbours of each point of (x, y) are looked up among the reference
    points instead: the held-out score of points placed by a trained map.
    """
    same = x_ref is None
    x_ref = x if same else x_ref
    y_ref = y if same else y_ref
    penalty = 0.0
    for start in range(0, len(x), chunk):
        xs, ys = x[start : start + chunk], y[start : start + chunk]
        rows = np.arange(len(xs))
        d = _dist2(xs, x_ref)
        if same:
            d[rows, start + rows] = -np.inf  # self takes rank 0; the others rank 1, 2, ...
        order = np.argsort(d, axis=1)
        ranks = np.empty_like(order)
        ranks[rows[:, None], order] = np.arange(d.shape[1])[None, :]
        if not same:
            ranks += 1
        nn_y = knn_indices(ys, y_ref, k, self_offset=start if same else None)
        penalty += np.clip(np.take_along_axis(ranks, nn_y, axis=1) - k, 0, None).sum()
    n = len(x_ref)  # sklearn's normalisation uses the number of samples, self included
    return float(1.0 - 2.0 / (len(x) * k * (2 * n - 3 * k - 1)) * penalty)


def knn_label_agreement(y: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Share of each document's k nearest map neighbours that carry its label."""
    labels = np.asarray(labels)
    nn = knn_indices(y, y, k, self_offset=0)
    return float((labels[nn] == labels[:, None]).mean())


def decoder_cosine(model: ParametricUMAP, x: np.ndarray) -> np.ndarray:
    """cos(decode(encode(x)), x) per document: how much of an embedding survives the map."""
    return (model.decode(model.encode(x)) * x).sum(1)


def reconstruction_error(model: ParametricUMAP, y: np.ndarray) -> np.ndarray:
    """|encode(decode(p)) - p| per map point, as a fraction of the map's diagonal: does a
    decoded point land back where it was taken?"""
    diag = float(np.linalg.norm(model.bounds[1] - model.bounds[0])) or 1.0
    return np.linalg.norm(model.encode(model.decode(y)) - y, axis=1) / diag
