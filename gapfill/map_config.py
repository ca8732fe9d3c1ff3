"""The settings of a map (`ParametricUMAPConfig`), checked when they are made."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gapfill.configs import ConfigMixin, setting

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
