"""Where the map is empty: the largest circles with no document inside, within the corpus.

The largest empty circle problem (Shamos & Hoey, 1975): its centre is a vertex of the
Voronoi diagram, i.e. the circumcentre of a Delaunay triangle, because every Delaunay
triangle's circumcircle holds no point. So the candidates are the circumcentres, and the
work is deciding which of them lie inside the corpus rather than in the void around it.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.spatial import Delaunay, QhullError, cKDTree

logger = logging.getLogger(__name__)

FOOTPRINTS = ("alpha", "convex")
# Default alpha = this factor times this percentile of the circumradii: the body of the
# corpus is made of ordinary triangles, so only the top few percent (gaps, hull slivers)
# exceed it, and the factor keeps a merely sparse region from counting as outside.
_ALPHA_PERCENTILE = 95.0
_ALPHA_FACTOR = 2.0


@dataclass(frozen=True)
class Gap:
    """An empty circle on the map: nothing lies closer to (x, y) than `radius`."""

    x: float
    y: float
    radius: float  # distance from the centre to the nearest document
    rank: int  # 1 = largest
    neighbours: tuple[int, ...]  # indices of the 3 documents of its Delaunay triangle


def _check_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points must be finite (no NaN or inf)")
    return points


def _circumcentres(triangles: np.ndarray) -> np.ndarray:
    """Circumcentres (T, 2) of triangles (T, 3, 2); non-finite for flat triangles.

    The standard closed form with vertex a moved to the origin:
    c = a + (|b|^2 perp(c') - |c'|^2 perp(b)) / (2 (b x c')), with b, c' relative to a.
    """
    a = triangles[:, 0]
    b = triangles[:, 1] - a
    c = triangles[:, 2] - a
    d = 2.0 * (b[:, 0] * c[:, 1] - b[:, 1] * c[:, 0])
    b2, c2 = (b**2).sum(1), (c**2).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ux = (c[:, 1] * b2 - b[:, 1] * c2) / d
        uy = (b[:, 0] * c2 - c[:, 0] * b2) / d
    return a + np.stack([ux, uy], axis=1)


def _exterior(tri: Delaunay, too_big: np.ndarray) -> np.ndarray:
    """Triangles (bool per simplex) reachable from the hull's edge through too-big triangles.

    This carves the alpha shape out of the convex hull from the outside in, so a hole that
    the alpha shape surrounds is never reached and stays part of the footprint.
    """
    outside = np.zeros(len(too_big), dtype=bool)
    seeds = np.flatnonzero(too_big & (tri.neighbors == -1).any(axis=1))
    outside[seeds] = True
    queue = deque(seeds.tolist())
    while queue:
        for nb in tri.neighbors[queue.popleft()]:
            if nb >= 0 and too_big[nb] and not outside[nb]:
                outside[nb] = True
                queue.append(nb)
    return outside


def find_gaps(
    points: np.ndarray,
    k: int = 10,
    *,
    footprint: str = "alpha",
    alpha: float | None = None,
    min_radius: float = 0.0,
) -> list[Gap]:
    """The k largest distinct empty circles whose centres lie inside the corpus's footprint.

    Rule: candidate centres are the circumcentres of the Delaunay triangles of the (deduplicated)
    points; each circle is empty by the Delaunay property, and its radius is the distance from
    the centre to the nearest point. A centre counts only if it lies in the points' bounding
    box and inside the footprint:

    - ``"convex"``: the convex hull (``Delaunay.find_simplex(c) >= 0``).
    - ``"alpha"``: the alpha shape with its holes filled in. Triangles whose circumradius
      exceeds ``alpha`` are cut away if they connect, through other such triangles, to the
      hull's edge; what is left is the footprint. Bays and the space between islands are
      cut, while a hole enclosed by documents (the gap we want) is kept. ``alpha`` defaults to
      2 x the 95th percentile of all circumradii.

    Candidates are taken largest first; one whose centre lies inside an already chosen circle
    is skipped (so the gaps are distinct places), and the search stops at ``k`` gaps or at the
    first radius below ``min_radius``. May return fewer than ``k``.
    """
    points = _check_points(points)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if footprint not in FOOTPRINTS:
        raise ValueError(f"footprint must be one of {FOOTPRINTS}, got {footprint!r}")
    if alpha is not None and not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive finite number or None, got {alpha}")
    if min_radius < 0:
        raise ValueError(f"min_radius must be >= 0, got {min_radius}")

    # Delaunay mishandles exact duplicates; triangulate the unique points and map back.
    unique, first = np.unique(points, axis=0, return_index=True)
    not_a_map = "the map needs at least 3 documents that are not all on one line"
    if len(unique) < 3:
        raise ValueError(f"{not_a_map} (got {len(unique)} distinct points)")
    try:
        tri = Delaunay(unique)
    except QhullError as err:
        raise ValueError(not_a_map) from err

    centres = _circumcentres(unique[tri.simplices])  # (T, 2)
    circumradii = np.linalg.norm(centres - unique[tri.simplices[:, 0]], axis=1)
    finite = np.isfinite(circumradii)
    circumradii = np.where(finite, circumradii, np.inf)

    inside = finite.copy()
    inside &= ((centres >= unique.min(0)) & (centres <= unique.max(0))).all(axis=1)
    host = np.full(len(centres), -1)
    host[inside] = tri.find_simplex(centres[inside])
    inside &= host >= 0
    if footprint == "alpha":
        if alpha is None:
            alpha = _ALPHA_FACTOR * float(np.percentile(circumradii[finite], _ALPHA_PERCENTILE))
        outside = _exterior(tri, circumradii > alpha)
        inside &= ~outside[np.maximum(host, 0)]

    candidates = np.flatnonzero(inside)
    radii = cKDTree(unique).query(centres[candidates])[0]  # exact emptiness, whatever qhull did
    order = np.argsort(-radii, kind="stable")
    logger.debug("%d of %d circumcentres inside the %s footprint (alpha=%s)",
                 len(candidates), len(centres), footprint, alpha)

    gaps: list[Gap] = []
    for j in order:
        radius, centre = float(radii[j]), centres[candidates[j]]
        if radius < min_radius or len(gaps) == k:
            break
        if any(np.hypot(centre[0] - g.x, centre[1] - g.y) < g.radius for g in gaps):
            continue
        neighbours = tuple(int(first[v]) for v in tri.simplices[candidates[j]])
        gaps.append(Gap(float(centre[0]), float(centre[1]), radius, len(gaps) + 1, neighbours))
    return gaps


def gap_at(points: np.ndarray, x: float, y: float) -> float:
    """Radius of the empty circle centred at (x, y): the distance to the nearest document.

    Handy for scoring a point the user clicked on against the gaps `find_gaps` returns.
    """
    points = _check_points(points)
    if len(points) == 0:
        raise ValueError("points must hold at least 1 document")
    if not (np.isfinite(x) and np.isfinite(y)):
        raise ValueError(f"x and y must be finite, got ({x}, {y})")
    return float(np.hypot(points[:, 0] - x, points[:, 1] - y).min())
