"""The settings of Vec2Text (`Vec2TextConfig`), checked when they are made."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gapfill.backbone import BACKBONE_ID
from gapfill.configs import ConfigMixin, setting


@dataclass(frozen=True)
class Vec2TextConfig(ConfigMixin):
    """How to build and train Vec2Text. Field names follow the project's documented API."""

    what: ClassVar[str] = "Vec2Text settings"

    model_name: str = setting("The embedder whose embeddings are inverted (a packaged name or a local folder).", "all-MiniLM-L6-v2")
    max_length: int = setting("Longest text in tokens; training texts are cut at their real length up to this.", 512)
    learning_rate: float = setting("Peak learning rate of the backbone's LoRA adapter.", 2e-5)
    batch_size: int = setting("Texts per training step.", 8)
    epochs: int = setting("Passes over the training texts, for the inverter and for the corrector.", 3)
    warmup_steps: int = setting("Steps of linear learning-rate warm-up, then linear decay to zero.", 100)
    weight_decay: float = setting("AdamW weight decay.", 0.01)
    projection_learning_rate: float = setting("Learning rate of the embedding→vector projections, trained from scratch.", 1e-3)
    backbone: str = setting("The generator the adapter is trained on.", BACKBONE_ID)
    num_prefix: int = setting("Input vectors made from each embedding.", 8)
    lora_rank: int = setting("Rank of the LoRA adapter on the backbone's attention.", 8)
    num_steps: int = setting("Correction steps after the inverter's first hypothesis.", 5)
    sequence_beam_width: int = setting("Hypotheses kept (and proposed per hypothesis) at each correction step.", 4)
    seed_documents: int = setting("Corpus documents nearest the target that join the first hypotheses, for the corrector to rewrite (0: none; each makes a fill closer and slower).", 2)
    max_documents: int = setting("Cap on training texts (a seeded sample beyond it).", 2000)
    corrector_documents: int = setting("Training texts whose inverter hypotheses teach the corrector.", 300)
    corrector_neighbours: int = setting("Training texts that also teach the corrector to rewrite the nearest other training text into them, as fills with seed_documents ask of it.", 300)
    off_manifold_fraction: float = setting("Share of training targets replaced by map-decoded or noisy versions, as gap targets are.", 0.5)
    noise: float = setting("Size of the noise added to noisy targets, relative to the unit-length embedding.", 0.3)
    validation_split: float = setting("Share of training texts held out for the validation loss.", 0.05)
    early_stopping_patience: int = setting("Stop a stage after this many epochs without a better validation loss (0: never).", 0)
    seed: int = setting("Random seed.", 0)

    def __post_init__(self) -> None:
        for name in ("max_length", "batch_size", "epochs", "num_prefix", "lora_rank", "sequence_beam_width", "max_documents"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("warmup_steps", "num_steps", "seed_documents", "corrector_documents", "corrector_neighbours",
                     "early_stopping_patience"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)!r}")
        for name in ("learning_rate", "projection_learning_rate"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        if not 0 <= self.weight_decay < 1:
            raise ValueError(f"weight_decay must lie in [0, 1), got {self.weight_decay}")
        for name in ("off_manifold_fraction",):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.validation_split < 0.5:
            raise ValueError(f"validation_split must lie in [0, 0.5), got {self.validation_split}")
