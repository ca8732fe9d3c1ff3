"""Parametric UMAP in PyTorch: an encoder embedding → 2D and a decoder 2D → embedding.

Training runs in four stages, each a stream of progress events:
1. "graph": UMAP's fuzzy graph of the training documents (umap-learn's own functions).
2. "layout": their positions, from umap-learn's spectral initialisation, optimised with
   UMAP's fuzzy cross-entropy over every edge of the graph with negative sampling
   (`layout.optimize_layout`).
3. "encoder": an MLP embedding → 2D fitted to those positions, the parametric placement
   (`encode(x, refine=False)`). Measured on WordNet, an MLP alone reaches 0.71-0.80 held-out
   trustworthiness (umap-learn's Keras ParametricUMAP 0.80) against 0.906 for umap-learn's
   transform, so `encode` by default places a new document among its nearest training
   documents instead (`layout.place_at_mode`, 0.93 in about 25 ms for 500 documents),
   optionally refined by `transform_steps` steps of UMAP's loss as umap-learn's `transform`
   does.
4. "decoder": an MLP 2D → embedding fitted on the finished map with a cosine loss, so that
   any point of the plane, empty space included, becomes an embedding.

Reference: Sainburg, McInnes & Gentner 2021, "Parametric UMAP embeddings for representation
and semi-supervised learning"; umap-learn's `parametric_umap.py` for the loss.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gapfill import layout, umap_math
from gapfill.configs import ConfigMixin, setting
from gapfill.events import Progress, Stopwatch, drive

log = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class ParametricUMAPConfig(ConfigMixin):
    """How to build and train a map. Field names follow the project's documented API."""

    what: ClassVar[str] = "map settings"

    n_components: int = setting("Dimension of the map (2 for the app's scatter).", 2)
    n_neighbors: int = setting("Neighbours per document in the fuzzy graph: larger keeps more global structure.", 15)
    min_dist: float = setting("How tightly the map may pack similar documents together.", 0.1)
    spread: float = setting("The scale of the map's clusters; with min_dist it fixes UMAP's curve.", 1.0)
    n_epochs: int = setting("Layout epochs; one epoch is one pass over every edge of the graph.", 200)
    batch_size: int = setting("Documents per step when fitting the encoder and the decoder.", 256)
    learning_rate: float = setting("Adam learning rate of the encoder and the decoder.", 1e-3)
    hidden_layers: tuple[int, ...] = setting("Widths of the encoder's hidden layers; the decoder mirrors them.", (256, 128))
    validation_split: float = setting("Share of documents held out to report validation loss (0 to use all).", 0.1)
    negative_sample_rate: int = setting("Negative samples per edge, as in UMAP.", 5)
    repulsion_strength: float = setting("Weight of the push between negative samples.", 1.0)
    layout_learning_rate: float = setting("Adam learning rate of the layout's positions (map units per step).", 0.1)
    layout_batch_size: int = setting("Graph edges per step of the layout optimisation.", 4096)
    encoder_epochs: int = setting("Passes over the training documents to fit the encoder to the layout.", 30)
    decoder_epochs: int = setting("Passes over the training documents to fit the decoder on the finished map.", 30)
    decoder_hidden_layers: tuple[int, ...] = setting("Widths of the decoder's hidden layers.", (512,))
    decoder_frequencies: int = setting("Random Fourier features the decoder lifts each map point into.", 256)
    decoder_smoothing: int = setting("Documents near each other on the map averaged into one decoder target (1: none).", 10)
    placement_radius: float = setting("Where a new document lands: the densest spot of its neighbours within this radius, in units of the map's local scale.", 1.5)
    transform_steps: int = setting("UMAP steps that refine where a new document lands after that (umap-learn's transform takes about 100; 0: none).", 0)
    lr_schedule: str = setting(f"Learning-rate schedule: one of {', '.join(LR_SCHEDULES)}.", "cosine")
    early_stopping_patience: int = setting("Stop fitting the encoder or decoder after this many epochs without a better validation loss (0: never).", 0)
    metric: str = setting("Distance between embeddings for the fuzzy graph.", "cosine")
    seed: int = setting("Random seed: the same data and seed give the same map.", 0)

    def __post_init__(self) -> None:
        for name in ("hidden_layers", "decoder_hidden_layers"):
            object.__setattr__(self, name, tuple(int(w) for w in getattr(self, name)))
        positive = (
            "n_components", "n_neighbors", "n_epochs", "batch_size", "layout_batch_size",
            "encoder_epochs", "decoder_epochs", "decoder_frequencies", "decoder_smoothing",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.n_neighbors < 2:
            raise ValueError(f"n_neighbors must be at least 2, got {self.n_neighbors}")
        if not 0 < self.min_dist <= self.spread:
            raise ValueError(f"min_dist must lie in (0, spread={self.spread}], got {self.min_dist}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must lie in (0, 1), got {self.learning_rate}")
        if not 0 <= self.validation_split < 0.5:
            raise ValueError(f"validation_split must lie in [0, 0.5), got {self.validation_split}")
        if not 0 < self.layout_learning_rate <= 10:
            raise ValueError(f"layout_learning_rate must lie in (0, 10], got {self.layout_learning_rate}")
        if not 0 < self.placement_radius <= 100:
            raise ValueError(f"placement_radius must lie in (0, 100], got {self.placement_radius}")
        if self.transform_steps < 0:
            raise ValueError(f"transform_steps must be 0 or more, got {self.transform_steps}")
        if self.negative_sample_rate < 1:
            raise ValueError(f"negative_sample_rate must be at least 1, got {self.negative_sample_rate}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if any(w < 1 for w in self.hidden_layers + self.decoder_hidden_layers):
            raise ValueError("layer widths must be positive integers")



def mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them and none after the last (unlike umap-learn's
    torch example, whose trailing ReLU would fold the map into a quadrant)."""
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(w_in, w_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Decoder(nn.Module):
    """2D → unit-length embedding.

    Inputs are standardised with the map's own statistics, then lifted with random Fourier
    features (Tancik et al. 2020, "Fourier features let networks learn high frequency
    functions in low dimensional domains"): from two coordinates alone an MLP only learns a
    blurred map; the features let it follow the topic islands. Statistics and frequencies
    are buffers, so they travel with the weights.
    """

    def __init__(self, n_components: int, hidden: Sequence[int], dim: int, n_frequencies: int = 256) -> None:
        super().__init__()
        self.net = mlp([n_components + 2 * n_frequencies, *hidden, dim])
        self.register_buffer("center", torch.zeros(n_components))
        self.register_buffer("scale", torch.ones(n_components))
        # Frequencies ~ N(0, 2^2) per standardised unit: features vary over about a twentieth
        # of the map's spread, a few documents' width. Measured on WordNet (held-out cosine,
        # 128 features, 10-document targets): scale 1.5 or 2: 0.521, 3: 0.512, 5: 0.479 (it
        # memorises noise); the former N(0, 1), 64 features, 15-document targets: 0.511.
        self.register_buffer("frequencies", 2.0 * torch.randn(n_components, n_frequencies))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        z = (y - self.center) / self.scale  # (B, C)
        phase = 2 * math.pi * z @ self.frequencies  # (B, F)
        return F.normalize(self.net(torch.cat([z, phase.sin(), phase.cos()], dim=-1)), dim=-1)  # (B, D)


class ParametricUMAP:
    """A trained map: `encode` embeddings to the plane, `decode` points back to embeddings."""

    def __init__(self, config: ParametricUMAPConfig, dim: int) -> None:
        self.config = config
        self.dim = dim
        torch.manual_seed(config.seed)
        self.encoder = mlp([dim, *config.hidden_layers, config.n_components])
        self.decoder = Decoder(config.n_components, config.decoder_hidden_layers, dim, config.decoder_frequencies)
        # The training documents and their map positions: `encode` places new documents
        # among them. (A, D) and (A, C).
        self.anchors = np.zeros((0, dim), dtype=np.float32)
        self.anchors_2d = np.zeros((0, config.n_components), dtype=np.float32)
        self.scale = 1.0  # `layout.local_scale` of anchors_2d: the unit of placement_radius
        self.metrics: dict[str, float] = {}

    @functools.cached_property
    def curve(self) -> tuple[float, float]:
        """UMAP's (a, b) for this spread and min_dist; computed when first needed, because
        umap-learn takes a second to import and placing documents does not need it."""
        return umap_math.find_ab_params(self.config.spread, self.config.min_dist)

    @property
    def bounds(self) -> np.ndarray:
        """(2, C): the box of the training documents on the map."""
        if not len(self.anchors_2d):
            return np.zeros((2, self.config.n_components), dtype=np.float32)
        return np.stack([self.anchors_2d.min(0), self.anchors_2d.max(0)])

    # ---- training -------------------------------------------------------------------------

    def fit(self, x: np.ndarray) -> Generator[Progress, None, ParametricUMAP]:
        """Fit the map to embeddings `x` (N, D), yielding one event per epoch of each stage
        ("graph", "layout", "encoder", "decoder"). The `validation_split` share of documents
        is held out of the graph and reports validation losses for encoder and decoder."""
        cfg = self.config
        x = _check_embeddings(x, self.dim)
        rng = np.random.default_rng(cfg.seed)
        n_val = int(len(x) * cfg.validation_split) if len(x) >= 20 else 0
        order = rng.permutation(len(x))
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        x_train, x_val = x[train_idx], x[val_idx]

        yield Progress(0, 1, stage="graph")
        graph = umap_math.fuzzy_graph(x_train, cfg.n_neighbors, cfg.metric, cfg.seed)
        init = umap_math.spectral_init(x_train, graph, cfg.n_components, cfg.seed)
        yield Progress(1, 1, stage="graph", metrics={"edges": float(len(graph.heads))})

        positions = init
        clock = Stopwatch(cfg.n_epochs)
        for epoch, loss, positions in layout.optimize_layout(
            init, graph, *self.curve, cfg.n_epochs, cfg.layout_learning_rate,
            cfg.negative_sample_rate, cfg.repulsion_strength, cfg.layout_batch_size, cfg.seed,
        ):
            yield Progress(epoch, cfg.n_epochs, loss, {"eta_s": clock.eta(epoch)}, stage="layout")
        self.anchors, self.anchors_2d = x_train, positions.copy()
        self.scale = layout.local_scale(self.anchors_2d, cfg.n_neighbors)

        y = torch.from_numpy(self.anchors_2d)
        val_hoods = layout.neighbourhoods(x_val, x_train, cfg.n_neighbors) if n_val else None
        yield from self._fit_net(
            "encoder", self.encoder, torch.from_numpy(x_train), y, cfg.encoder_epochs,
            lambda pred, target: (pred - target).pow(2).sum(-1).mean(),
            lambda: self._encoder_val_loss(x_val, val_hoods), rng,
        )
        self.decoder.center.copy_(y.mean(0))
        self.decoder.scale.copy_(y.std(0).clamp_min(1e-6))
        xv = torch.from_numpy(x_val)
        yield from self._fit_net(
            "decoder", self.decoder, y, torch.from_numpy(_smoothed(x_train, self.anchors_2d, cfg.decoder_smoothing)), cfg.decoder_epochs,
            _cosine_loss, lambda: _cosine_loss(self.decoder(torch.from_numpy(self.encode(x_val))), xv).item(),
            rng,
        )
        return self

    def _fit_net(self, stage, net, inputs, targets, epochs, loss_fn, val_fn, rng) -> Generator[Progress, None, None]:
        """Minibatch Adam on (inputs, targets) with the configured schedule and early stop."""
        cfg = self.config
        steps_per_epoch = max(1, math.ceil(len(inputs) / cfg.batch_size))
        opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
        sched = _schedule(opt, cfg.lr_schedule, epochs * steps_per_epoch)
        clock = Stopwatch(epochs)
        has_val = self.config.validation_split > 0 and len(inputs) >= 18
        best, since_best = math.inf, 0
        for epoch in range(1, epochs + 1):
            net.train()
            perm = torch.from_numpy(rng.permutation(len(inputs)))
            losses = []
            for s in range(steps_per_epoch):
                batch = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                loss = loss_fn(net(inputs[batch]), targets[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
            net.eval()
            metrics = {"lr": sched.get_last_lr()[0], "eta_s": clock.eta(epoch)}
            if has_val:
                with torch.no_grad():
                    val = float(val_fn())
                metrics["val_loss"] = val
                best, since_best = (val, 0) if val < best - 1e-5 else (best, since_best + 1)
            yield Progress(epoch, epochs, float(np.mean(losses)), metrics, stage=stage)
            if cfg.early_stopping_patience and since_best >= cfg.early_stopping_patience:
                log.info("%s: early stop at epoch %d (validation loss %.4f)", stage, epoch, best)
                break

    def _encoder_val_loss(self, x_val: np.ndarray, hoods: layout.Neighbourhoods | None) -> float:
        """UMAP's loss of held-out documents as the encoder alone places them."""
        if hoods is None:
            return float("nan")
        y = self.encoder(torch.from_numpy(x_val))
        gen = torch.Generator().manual_seed(self.config.seed)  # the same negatives each epoch
        fixed = torch.from_numpy(self.anchors_2d)
        return layout.neighbourhood_loss(y, fixed, hoods, *self.curve, self.config.negative_sample_rate, gen).item()

    # ---- use ------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, x: np.ndarray, *, refine: bool = True) -> np.ndarray:
        """Embeddings (N, D) or (D,) → map positions (N, C) or (C,). A training document stays
        where the layout put it; any other lands at the densest spot of its nearest training
        documents, then takes `transform_steps` UMAP steps among them. With `refine=False`,
        or before any training, the encoder MLP alone places them."""
        x = np.asarray(x, dtype=np.float32)
        single = x.ndim == 1
        x2 = _check_embeddings(x.reshape(-1, self.dim), self.dim)
        if not (refine and len(self.anchors)):
            y = self.encoder(torch.from_numpy(x2)).numpy()
            return y[0] if single else y
        hoods = layout.neighbourhoods(x2, self.anchors, self.config.n_neighbors)
        y = self.anchors_2d[hoods.indices[:, 0]].copy()  # (N, C); final for training documents
        new = hoods.similarities[:, 0] < _SAME_DOCUMENT_COS
        if new.any():
            sub = layout.Neighbourhoods(hoods.indices[new], hoods.weights[new], hoods.similarities[new])
            y[new] = layout.place_at_mode(sub, self.anchors_2d, self.config.placement_radius * self.scale)
            if self.config.transform_steps:
                with torch.enable_grad():
                    y[new] = layout.place(
                        y[new], self.anchors_2d, sub, *self.curve, self.config.transform_steps,
                        _TRANSFORM_LR, self.config.negative_sample_rate, self.config.seed,
                    )
        return y[0] if single else y

    @torch.no_grad()
    def decode(self, y: np.ndarray) -> np.ndarray:
        """Map positions (N, C) or (C,) → unit-length embeddings (N, D) or (D,)."""
        y = np.asarray(y, dtype=np.float32)
        single = y.ndim == 1
        y2 = y.reshape(-1, self.config.n_components)
        if not np.isfinite(y2).all():
            raise ValueError("map positions must be finite numbers")
        x = self.decoder(torch.from_numpy(y2)).numpy()
        return x[0] if single else x

    # ---- persistence: plain tensors and a JSON-able manifest (see gapfill.model_files) --------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        tensors |= {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}
        tensors["anchors"] = torch.from_numpy(self.anchors)
        tensors["anchors_2d"] = torch.from_numpy(self.anchors_2d)
        return tensors

    def manifest(self) -> dict[str, object]:
        return {"kind": "pumap", "config": self.config.to_dict(), "embedding_dim": self.dim, "metrics": self.metrics}

    @classmethod
    def from_saved(cls, tensors: dict[str, torch.Tensor], manifest: dict) -> ParametricUMAP:
        model = cls(ParametricUMAPConfig.from_dict(manifest["config"]), int(manifest["embedding_dim"]))
        model.encoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")})
        model.decoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("decoder.")})
        model.anchors = tensors["anchors"].numpy().copy()
        model.anchors_2d = tensors["anchors_2d"].numpy().copy()
        model.scale = layout.local_scale(model.anchors_2d, model.config.n_neighbors)
        model.metrics = dict(manifest.get("metrics") or {})
        model.encoder.eval()
        model.decoder.eval()
        return model


# Adam step size of the refinement in `encode`, in map units: the layout's scale is ~10.
_TRANSFORM_LR = 0.05
# Cosine above which an embedding is taken to be one of the training documents (float32
# round-off keeps a document's own cosine a hair under 1).
_SAME_DOCUMENT_COS = 0.99999


def _smoothed(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Each document's embedding averaged with its k-1 nearest neighbours on the map.

    The decoder's best answer at a point is the mean direction of the documents there; fitting
    it to these local means rather than to single documents removes the noise it would
    otherwise memorise (measured on WordNet: held-out cosine 0.475 → 0.488).
    """
    from gapfill.map_metrics import knn_indices

    k = min(k, len(x))
    nn = knn_indices(y, y, k - 1, self_offset=0) if k > 1 else np.zeros((len(x), 0), dtype=np.int64)
    mean = x[nn].sum(1) + x
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


def _cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(pred, target, dim=-1).mean()


def train_map(x: np.ndarray, config: ParametricUMAPConfig | None = None) -> ParametricUMAP:
    """Fit a map without watching its progress."""
    config = config or ParametricUMAPConfig()
    return drive(ParametricUMAP(config, x.shape[1]).fit(x))


def _check_embeddings(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected embeddings of shape (N, {dim}), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings must be finite numbers (found NaN or infinity)")
    return x


def _schedule(opt: torch.optim.Optimizer, kind: str, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1), eta_min=0.0)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
