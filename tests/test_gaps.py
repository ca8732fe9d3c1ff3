"""The largest empty circles inside the corpus's footprint."""
from __future__ import annotations

import numpy as np
import pytest

from gapfill.gaps import find_gaps, gap_at


def _grid(lo: float, hi: float, step: float = 1.0) -> np.ndarray:
    axis = np.arange(lo, hi + step / 2, step)
    return np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)


@pytest.fixture(scope="module")
def holed_grid() -> np.ndarray:
    """A 21 x 21 unit grid with every point within 5 of its centre (10, 10) removed."""
    grid = _grid(0, 20)
    return grid[np.hypot(grid[:, 0] - 10, grid[:, 1] - 10) > 5]


def _two_blobs(step: float = 1.0) -> np.ndarray:
    """Two square grids on [0, 4]^2 and [10, 14] x [0, 4]: a channel 6 wide between them."""
    left = _grid(0, 4, step)
    return np.concatenate([left, left + [10.0, 0.0]])


def test_largest_gap_is_the_hole_and_its_radius_matches_the_hole(holed_grid: np.ndarray) -> None:
    first = find_gaps(holed_grid, k=3)[0]
    assert first.rank == 1
    assert np.hypot(first.x - 10, first.y - 10) < 1.0
    assert first.radius == pytest.approx(5.0, rel=0.1)
    assert first.radius == pytest.approx(gap_at(holed_grid, first.x, first.y), abs=1e-9)


def test_gaps_are_sorted_and_no_centre_lies_inside_another_gap(holed_grid: np.ndarray) -> None:
    gaps = find_gaps(holed_grid, k=20)
    assert len(gaps) == 20
    radii = [g.radius for g in gaps]
    assert radii == sorted(radii, reverse=True)
    assert [g.rank for g in gaps] == list(range(1, 21))
    for i, a in enumerate(gaps):
        for b in gaps[i + 1 :]:
            assert np.hypot(a.x - b.x, a.y - b.y) >= max(a.radius, b.radius) - 1e-9


def test_every_gap_circle_is_empty_and_touches_its_neighbours() -> None:
    points = np.random.default_rng(1).normal(size=(300, 2))
    for footprint in ("alpha", "convex"):
        for gap in find_gaps(points, k=15, footprint=footprint):
            dist = np.hypot(points[:, 0] - gap.x, points[:, 1] - gap.y)
            assert dist.min() >= gap.radius - 1e-9
            assert len(gap.neighbours) == 3
            np.testing.assert_allclose(dist[list(gap.neighbours)], gap.radius, rtol=1e-6)


def test_convex_footprint_bridges_blobs_but_a_small_alpha_does_not() -> None:
    points = _two_blobs()

    def between(gaps: list) -> list:
        return [g for g in gaps if 4.5 < g.x < 9.5]

    convex = find_gaps(points, k=50, footprint="convex")
    assert between(convex)
    assert convex[0].radius > 2.5  # the channel is 6 wide and 4 tall
    assert not between(find_gaps(points, k=50, footprint="alpha", alpha=1.0))


def test_default_alpha_cuts_the_channel_when_it_is_a_small_share_of_the_map() -> None:
    # The channel's 32 triangles are ~3% of ~1100, above the 95th percentile of circumradii.
    points = _two_blobs(step=0.25)
    assert not [g for g in find_gaps(points, k=50) if 4.5 < g.x < 9.5]
    assert [g for g in find_gaps(points, k=50, footprint="convex") if 4.5 < g.x < 9.5]


def test_duplicates_give_the_same_gaps_with_original_indices(holed_grid: np.ndarray) -> None:
    doubled = np.concatenate([holed_grid, holed_grid[::3]])
    plain, dup = find_gaps(holed_grid, k=5), find_gaps(doubled, k=5)
    # Ties among the grid's unit cells may come out in another order; the radii may not.
    assert [g.radius for g in dup] == pytest.approx([g.radius for g in plain])
    assert (dup[0].x, dup[0].y) == pytest.approx((plain[0].x, plain[0].y))
    for gap in dup:
        assert all(0 <= i < len(doubled) for i in gap.neighbours)
        corners = doubled[list(gap.neighbours)]
        dist = np.hypot(corners[:, 0] - gap.x, corners[:, 1] - gap.y)
        np.testing.assert_allclose(dist, gap.radius, rtol=1e-6)


@pytest.mark.parametrize(
    "points",
    [
        np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]),
        np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]),
    ],
    ids=["collinear", "two_distinct"],
)
def test_degenerate_maps_are_rejected_with_a_clear_message(points: np.ndarray) -> None:
    with pytest.raises(ValueError, match="at least 3 documents that are not all on one line"):
        find_gaps(points)


def test_k_larger_than_available_returns_fewer() -> None:
    gaps = find_gaps(_grid(0, 3), k=100)
    assert len(gaps) == 9  # one per unit cell: its two triangles share a circumcircle
    assert all(g.radius == pytest.approx(np.sqrt(0.5)) for g in gaps)


def test_min_radius_drops_small_gaps(holed_grid: np.ndarray) -> None:
    gaps = find_gaps(holed_grid, k=100, min_radius=1.0)
    assert len(gaps) >= 1
    assert all(g.radius >= 1.0 for g in gaps)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"footprint": "hull"}, r"footprint must be one of \('alpha', 'convex'\)"),
        ({"k": 0}, "k must be >= 1"),
        ({"alpha": -1.0}, "alpha must be a positive"),
        ({"min_radius": -0.5}, "min_radius must be >= 0"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_what_is_allowed(
    kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        find_gaps(_grid(0, 3), **kwargs)


def test_bad_point_arrays_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        find_gaps(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="finite"):
        find_gaps(np.array([[0.0, 0.0], [1.0, np.nan], [0.0, 1.0]]))


@pytest.mark.parametrize("footprint", ["alpha", "convex"])
def test_gaps_of_uniform_points_lie_inside_the_bounding_box(footprint: str) -> None:
    points = np.random.default_rng(0).uniform(-3.0, 5.0, size=(500, 2))
    gaps = find_gaps(points, k=10, footprint=footprint)
    assert len(gaps) == 10
    lo, hi = points.min(0), points.max(0)
    assert all(lo[0] <= g.x <= hi[0] and lo[1] <= g.y <= hi[1] for g in gaps)


def test_gap_at_is_the_distance_to_the_nearest_document() -> None:
    points = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]])
    assert gap_at(points, 4.0, 3.0) == pytest.approx(3.0)
    assert gap_at(points, 0.0, 0.0) == pytest.approx(0.0)
