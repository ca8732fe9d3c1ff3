"""Plotly figures of the app: pure functions from engine results to figures, no Streamlit.

The map keeps the same spec across reruns while nothing changes (same data, fixed axis
ranges, a constant `uirevision`), so the user's zoom survives (shared/notes/streamlit.md).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from gapfill.engine import MapView
from gapfill.filling import FillResult, FillStep
from gapfill.gaps import Gap
from gapfill.jobs import JobSnapshot

GRID_N = 100  # the invisible grid: 100 x 100 nodes, so a click lands within 1% of the axis
PAD = 0.05  # axis margin around the corpus, as a share of its box (clicks may go 25% out)
RESULT_COLOUR, PATH_COLOUR, GAP_COLOUR = "#d62728", "#444444", "#7f7f7f"


@dataclass(frozen=True)
class Click:
    """A click being filled, with the best landing of each step so far."""

    x: float
    y: float
    steps: tuple[FillStep, ...] = ()
    result: FillResult | None = None


def axis_ranges(bounds: np.ndarray, points: Sequence[tuple[float, float]] = ()) -> tuple[list[float], list[float]]:
    """Fixed x and y ranges: the box of the corpus and of `points` (where fills landed, which
    may be outside it) plus a margin."""
    lo, hi = np.asarray(bounds, dtype=float)
    if len(points):
        lo, hi = np.minimum(lo, np.min(points, axis=0)), np.maximum(hi, np.max(points, axis=0))
    pad = (hi - lo) * PAD
    return [float(lo[0] - pad[0]), float(hi[0] + pad[0])], [float(lo[1] - pad[1]), float(hi[1] + pad[1])]


_LINE = re.compile(r"(.{1,80})(?:\s+|$)")  # up to 80 characters, broken at a space


def hover_text(text: str, limit: int = 400) -> str:
    """A document as a hover label: cut at `limit` characters, lines of about 80 (a regex,
    ten times faster than textwrap over a corpus of thousands)."""
    short = text if len(text) <= limit else text[: limit - 1] + "…"
    return _LINE.sub(lambda m: m.group(1) + "<br>", short).removesuffix("<br>") or " "


def map_figure(view: MapView, fills: Sequence[FillResult] = (), gaps: Sequence[Gap] = (),
               click: Click | None = None, height: int = 780) -> go.Figure:
    """The corpus coloured by label, the invisible click grid, gaps, fills and the current click."""
    landed = [(f.landed_x, f.landed_y) for f in fills]
    if click is not None:
        landed += [(s.best.x, s.best.y) for s in click.steps]
    xr, yr = axis_ranges(view.bounds, landed)
    fig = go.Figure()
    labels = np.asarray(view.labels or ("document",) * len(view.texts))
    for label in sorted(set(labels)):
        idx = np.flatnonzero(labels == label)
        fig.add_trace(go.Scattergl(
            x=view.x[idx], y=view.y[idx], mode="markers", name=label, customdata=idx,
            marker={"size": 5, "opacity": 0.75}, unselected={"marker": {"opacity": 0.75}},
            text=[hover_text(view.texts[i]) for i in idx], hovertemplate="%{text}<extra>" + label + "</extra>",
        ))
    fig.add_trace(grid_trace(xr, yr))
    shapes = [gap_circle(g) for g in gaps]
    if gaps:
        fig.add_trace(go.Scatter(
            x=[g.x for g in gaps], y=[g.y for g in gaps], mode="text", text=[str(g.rank) for g in gaps],
            textfont={"color": GAP_COLOUR}, name="largest gaps", hoverinfo="skip",
        ))
    if fills:
        fig.add_trace(go.Scatter(
            x=[f.landed_x for f in fills], y=[f.landed_y for f in fills], mode="markers", name="fills",
            marker={"symbol": "star", "size": 13, "color": "#ffbf00", "line": {"width": 1, "color": "black"}},
            text=[hover_text(f.text) for f in fills], hovertemplate="%{text}<extra>fill</extra>",
        ))
    if click is not None:
        add_click(fig, click)
    fig.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10},
        legend={"itemsizing": "constant", "orientation": "h", "yanchor": "top", "y": -0.06},  # below: the map keeps the width
        xaxis={"range": xr, "autorange": False, "zeroline": False, "showgrid": False},
        yaxis={"range": yr, "autorange": False, "zeroline": False, "showgrid": False},
        hovermode="closest", hoverdistance=-1, clickmode="event+select", dragmode="zoom",
        uirevision="map", shapes=shapes,
    )
    return fig


def grid_trace(xr: Sequence[float], yr: Sequence[float], n: int = GRID_N) -> go.Scattergl:
    """Invisible markers over the whole plot so a click on empty space selects the nearest
    node; they must be hoverable ("none", not "skip") for clicks to reach them."""
    gx, gy = np.meshgrid(np.linspace(xr[0], xr[1], n), np.linspace(yr[0], yr[1], n))
    invisible = {"marker": {"opacity": 0}}
    return go.Scattergl(
        x=np.round(gx.ravel(), 4), y=np.round(gy.ravel(), 4), mode="markers", name="grid",
        marker={"size": 6, "opacity": 0}, selected=invisible, unselected=invisible,
        hoverinfo="none", showlegend=False,
    )


def gap_circle(gap: Gap) -> dict:
    return {"type": "circle", "xref": "x", "yref": "y", "x0": gap.x - gap.radius, "x1": gap.x + gap.radius,
            "y0": gap.y - gap.radius, "y1": gap.y + gap.radius,
            "line": {"color": GAP_COLOUR, "dash": "dot", "width": 1.5}}


def add_click(fig: go.Figure, click: Click) -> None:
    """The click (the decoded target), the path through each step's best landing, the result."""
    fig.add_trace(go.Scatter(
        x=[click.x], y=[click.y], mode="markers", name="target (click)",
        marker={"symbol": "x", "size": 14, "color": RESULT_COLOUR}, hovertemplate="target<extra></extra>",
    ))
    if click.steps:
        xs = [click.x] + [s.best.x for s in click.steps]
        ys = [click.y] + [s.best.y for s in click.steps]
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", name="landing path",
            line={"color": PATH_COLOUR, "dash": "dash", "width": 1}, marker={"size": 6, "color": PATH_COLOUR},
            text=[""] + [f"step {s.step}: {hover_text(s.best.text)}" for s in click.steps],
            hovertemplate="%{text}<extra></extra>",
        ))
    if click.result is not None:
        r = click.result
        fig.add_trace(go.Scatter(
            x=[r.landed_x], y=[r.landed_y], mode="markers", name="result",
            marker={"symbol": "star", "size": 22, "color": RESULT_COLOUR, "line": {"width": 1.5, "color": "black"}},
            text=[hover_text(r.text)], hovertemplate="%{text}<extra>result</extra>",
        ))


def closeup_figure(view: MapView, click: Click, height: int = 340, min_share: float = 0.12,
                   max_documents: int = 800) -> go.Figure:
    """The neighbourhood of a fill while it runs, redrawn at every step: the documents around
    the click (grey, text on hover), the click, every candidate's landing point and the path
    through each step's best. The window holds the click and the path (a candidate that lands
    far away is off it); small on purpose, so that redrawing it costs the browser little. The
    map itself changes once, when the fill is done."""
    lo, hi = np.asarray(view.bounds, dtype=float)
    points = np.array([(click.x, click.y)] + [(s.best.x, s.best.y) for s in click.steps]
                      + ([(click.result.landed_x, click.result.landed_y)] if click.result is not None else []))
    centre = (points.min(0) + points.max(0)) / 2
    half = np.maximum((points.max(0) - points.min(0)) / 2 * 1.25, (hi - lo) * min_share / 2)
    half[:] = half.max()  # a square window: distances look like what they are
    box_lo, box_hi = centre - half, centre + half
    inside = np.flatnonzero((view.x >= box_lo[0]) & (view.x <= box_hi[0]) & (view.y >= box_lo[1]) & (view.y <= box_hi[1]))
    if len(inside) > max_documents:  # the nearest ones: a dense island is drawn as its core
        d = (view.x[inside] - click.x) ** 2 + (view.y[inside] - click.y) ** 2
        inside = inside[np.argsort(d)[:max_documents]]
    fig = go.Figure(go.Scatter(
        x=view.x[inside], y=view.y[inside], mode="markers", name="corpus", showlegend=False,
        marker={"size": 5, "color": "#9aa5b1", "opacity": 0.6},
        text=[hover_text(view.texts[i], 200) for i in inside], hovertemplate="%{text}<extra></extra>",
    ))
    candidates = [(s.step, c) for s in click.steps for c in s.candidates]
    if candidates:
        fig.add_trace(go.Scatter(
            x=[c.x for _, c in candidates], y=[c.y for _, c in candidates], mode="markers", name="candidates",
            marker={"size": 7, "color": "#1f77b4", "opacity": 0.7, "symbol": "circle-open"},
            text=[f"step {k}: {hover_text(c.text, 200)} (cosine {c.cosine:.3f})" for k, c in candidates],
            hovertemplate="%{text}<extra></extra>",
        ))
    add_click(fig, click)
    fig.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10}, showlegend=False, hovermode="closest",
        xaxis={"range": [box_lo[0], box_hi[0]], "autorange": False, "zeroline": False, "showgrid": False},
        yaxis={"range": [box_lo[1], box_hi[1]], "autorange": False, "zeroline": False, "showgrid": False},
    )
    return fig


# ---- training ----------------------------------------------------------------------------

def loss_figure(snapshot: JobSnapshot, max_points: int = 1500) -> go.Figure | None:
    """Train loss and validation loss by step, one panel per stage that reports a loss."""
    from plotly.subplots import make_subplots

    stages: dict[str, list] = {}
    for e in snapshot.events:
        if e.loss is not None or "val_loss" in e.metrics:
            stages.setdefault(e.stage, []).append(e)
    if not stages:
        return None
    fig = make_subplots(rows=1, cols=len(stages), subplot_titles=list(stages))
    in_legend: set[str] = set()
    for col, (stage, events) in enumerate(stages.items(), 1):
        every = max(1, len(events) // max_points)  # thin a long history: redraws stay cheap
        shown = events[::every] + ([events[-1]] if (len(events) - 1) % every else [])
        train = [e for e in shown if e.loss is not None]
        val = [e for e in events if "val_loss" in e.metrics and np.isfinite(e.metrics["val_loss"])]
        for name, colour, xs, ys, mode in (
            ("loss", "#1f77b4", [e.step for e in train], [e.loss for e in train], "lines"),
            ("val_loss", "#ff7f0e", [e.step for e in val], [e.metrics["val_loss"] for e in val], "lines+markers"),
        ):
            if xs:
                fig.add_trace(go.Scatter(x=xs, y=ys, mode=mode, name=name, legendgroup=name, line={"color": colour},
                                         showlegend=name not in in_legend), 1, col)
                in_legend.add(name)
        fig.update_xaxes(title_text="step", row=1, col=col)
    # Log scale: a stage's train and validation losses may measure different things (the
    # encoder fits positions but is validated on UMAP's loss), so their scales differ.
    fig.update_yaxes(type="log")
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig


# ---- evaluation --------------------------------------------------------------------------

def heatmap_figure(xs: np.ndarray, ys: np.ndarray, errors: np.ndarray, view: MapView) -> go.Figure:
    """Reconstruction error over the map, with the documents as dots for orientation."""
    fig = go.Figure(go.Heatmap(x=xs, y=ys, z=errors, colorscale="Viridis",
                               colorbar={"title": "error"}, hovertemplate="(%{x:.2f}, %{y:.2f}): %{z:.3f}<extra></extra>"))
    fig.add_trace(go.Scattergl(x=view.x, y=view.y, mode="markers", marker={"size": 2, "color": "white", "opacity": 0.5},
                               hoverinfo="skip", showlegend=False))
    fig.update_layout(height=450, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def histogram_figure(series: dict[str, Sequence[float]], x_title: str, nbins: int = 30) -> go.Figure:
    fig = go.Figure([go.Histogram(x=list(v), name=k, opacity=0.6, nbinsx=nbins) for k, v in series.items()])
    fig.update_layout(barmode="overlay", height=300, xaxis_title=x_title, yaxis_title="count",
                      margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def convergence_figure(curves: Sequence[tuple[str, Sequence[FillStep]]]) -> go.Figure:
    """Best cosine so far at each correction step, one line per fill."""
    fig = go.Figure([
        go.Scatter(x=[s.step for s in steps], y=[s.best.cosine for s in steps], mode="lines+markers", name=name)
        for name, steps in curves
    ])
    fig.update_layout(height=300, xaxis_title="correction step", yaxis_title="best cosine to target",
                      margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def bar_figure(names: Sequence[str], values: Sequence[float], y_title: str) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(names), y=list(values)))
    fig.update_layout(height=300, yaxis_title=y_title, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig
