"""The one object the front-ends hold: corpus, embeddings, map, and the verbs on them.

The Streamlit pages, the REST API and the CLI each turn their input into one call here and
render what comes back; long verbs are generators of `Progress` events whose return value is
the result (drive them with `gapfill.events.drive`).
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Generator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from gapfill import filling
from gapfill.corpus import Corpus, embedding_problem
from gapfill.csv_loader import load_csv
from gapfill.embedder import DEFAULT_MODEL, Embedder
from gapfill.events import Progress, drive
from gapfill.filling import FillResult, FillStep
from gapfill.gaps import Gap, find_gaps
from gapfill.map_config import ParametricUMAPConfig
from gapfill.map_metrics import trustworthiness
from gapfill.model_files import ModelFileError, read_manifest
from gapfill.pumap import ParametricUMAP
from gapfill.storage import ModelStore
from gapfill.wordnet import load_wordnet

log = logging.getLogger(__name__)

MAP_KIND = "pumap"
VEC2TEXT_KIND = "vec2text"
# Models trained for the built-in corpus ship here, so gap filling works with no training.
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "assets" / "models"


class NotReadyError(RuntimeError):
    """A verb was called before what it needs exists; the message says what to call first."""


@dataclass(frozen=True)
class MapView:
    """What a front-end draws: every corpus document's position and what to show on it."""

    x: np.ndarray  # (N,)
    y: np.ndarray  # (N,)
    texts: tuple[str, ...]
    labels: tuple[str, ...] | None
    bounds: np.ndarray  # (2, 2): min and max corner


class Engine:
    """Holds the corpus, its embeddings and the map; thread-safe for one writer at a time."""

    def __init__(self, *, embedder_model: str | None = None, store: ModelStore | None = None,
                 backbone_path: Path | None = None) -> None:
        # Unset arguments come from the environment, so that a server started by a script or a
        # test (`gapfill serve`) can run on other (e.g. tiny) models without code.
        self.embedder_model = embedder_model or os.environ.get("GAPFILL_EMBEDDER") or DEFAULT_MODEL
        if backbone_path is None and os.environ.get("GAPFILL_BACKBONE"):
            backbone_path = Path(os.environ["GAPFILL_BACKBONE"])
        self.backbone_path = backbone_path  # None: the converted SmolLM2 in the cache
        self.store = store or ModelStore()
        self._embedder: Embedder | None = None
        self.corpus: Corpus | None = None
        self.embeddings: np.ndarray | None = None  # (N, D)
        self.map: ParametricUMAP | None = None
        self.positions: np.ndarray | None = None  # (N, 2) corpus documents on the map
        self.vec2text = None  # gapfill.vec2text.Vec2Text once trained or loaded
        self.fills: list[FillResult] = []  # this engine's fills, oldest first
        self.lock = threading.RLock()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.embedder_model)
        return self._embedder

    # ---- corpus ----------------------------------------------------------------------------

    def load_builtin(self, n: int | None = None, seed: int = 0) -> Generator[Progress, None, Corpus]:
        """The built-in WordNet corpus (n documents, or all of it), embedded."""
        return (yield from self._use_corpus(load_wordnet(n=n, seed=seed)))

    def load_csv(self, source: str | Path | bytes, text_column: str | None = None) -> Generator[Progress, None, Corpus]:
        """A CSV corpus, embedded. A bad file raises `CorpusError` and changes nothing."""
        return (yield from self._use_corpus(load_csv(source, text_column=text_column)))

    def _use_corpus(self, corpus: Corpus) -> Generator[Progress, None, Corpus]:
        if corpus.embeddings is not None:
            problem = embedding_problem(corpus, self.embedder.dim, f"the embedder {self.embedder.model_id}")
            if problem is not None:
                raise ValueError(problem)
            embeddings = np.asarray(corpus.embeddings, dtype=np.float32)
        else:
            embeddings = yield from self.embedder.iter_encode(list(corpus.texts))
        with self.lock:  # swap everything at once: nothing half-loaded
            self.corpus, self.embeddings = corpus, embeddings
            self.map, self.positions = None, None
        log.info("corpus %s: %d documents", corpus.name, len(corpus))
        return corpus

    def adopt(self, other: Engine) -> None:
        """Use another engine's corpus, embeddings, map and embedder, without copying (a server
        shares one prepared built-in corpus among its sessions). Safe because no verb changes
        them in place (a new corpus or map replaces the objects) and the embedder is
        thread-safe. Fills and the Vec2Text model stay this engine's own."""
        if other.embedder_model != self.embedder_model:
            raise ValueError(f"cannot adopt a corpus embedded with {other.embedder_model}: this engine "
                             f"embeds with {self.embedder_model}")
        with other.lock:
            corpus, embeddings, model, positions = other.corpus, other.embeddings, other.map, other.positions
        with self.lock:
            self.corpus, self.embeddings, self.map, self.positions = corpus, embeddings, model, positions
            self._embedder = other.embedder

    # ---- map ------------------------------------------------------------------------------

    def train_map(self, config: ParametricUMAPConfig | None = None) -> Generator[Progress, None, ParametricUMAP]:
        """Fit a new map on the corpus's embeddings and make it current."""
        x = self._require_embeddings()
        model = ParametricUMAP(config or ParametricUMAPConfig(), x.shape[1])
        yield from model.fit(x)
        model.metrics = {"trust": trustworthiness(model.anchors, model.anchors_2d, 15)}
        self._set_map(model)
        return model

    def _set_map(self, model: ParametricUMAP) -> None:
        positions = model.encode(self._require_embeddings())
        with self.lock:
            self.map, self.positions = model, positions

    def save_map(self, store: ModelStore | None = None) -> str:
        """Save the current map as a new version (of `store`, default the engine's); returns
        its version id."""
        model = self._require_map()
        manifest = model.manifest() | {
            "embedder": self.embedder.model_id,
            "corpus_fingerprint": self.corpus.fingerprint(),
            "corpus_name": self.corpus.name,
            "n_documents": len(self.corpus),
        }
        return (store or self.store).save(MAP_KIND, model.state_tensors(), manifest)

    def load_map(self, version: str | None = None, store: ModelStore | None = None) -> ParametricUMAP:
        """Load a saved map (the current version by default) for this corpus and embedder."""
        x = self._require_embeddings()
        tensors, manifest = (store or self.store).load(
            MAP_KIND, version, expect={"embedding_dim": int(x.shape[1]), "embedder": self.embedder.model_id}
        )
        model = ParametricUMAP.from_saved(tensors, manifest)
        self._set_map(model)
        return model

    def load_map_for_corpus(self) -> str | None:
        """Load the saved map made for this very corpus, the current version first (a rollback
        holds) and then the newest, from the user's store and then from the maps shipped in
        assets/ (the built-in corpus's); its version, or None when none is usable."""
        self._require_embeddings()
        fingerprint = self.corpus.fingerprint()
        for store in (self.store, ModelStore(SHIPPED_MODELS)):
            for info in sorted(reversed(store.versions(MAP_KIND)), key=lambda info: not info.is_current):
                if info.complete and read_manifest(info.path).get("corpus_fingerprint") == fingerprint:
                    try:
                        self.load_map(info.version, store)
                        return info.version
                    except ModelFileError as err:
                        log.warning("saved map %s unusable: %s", info.version, err)
        return None

    def ensure_map(self, config: ParametricUMAPConfig | None = None) -> Generator[Progress, None, ParametricUMAP]:
        """The saved map made for this very corpus when there is one, else a new one, saved."""
        if self.load_map_for_corpus() is not None:
            return self.map
        model = yield from self.train_map(config)
        self.save_map()
        return model

    def map_view(self) -> MapView:
        self._require_map()
        return MapView(
            x=self.positions[:, 0],
            y=self.positions[:, 1],
            texts=self.corpus.texts,
            labels=self.corpus.labels,
            bounds=self.map.bounds,
        )

    # ---- Vec2Text -------------------------------------------------------------------------

    def train_vec2text(self, config=None, *, checkpoint_dir: Path | None = None, resume: bool = False,
                       stop: threading.Event | None = None) -> Generator[Progress, None, object]:
        """Train Vec2Text on the corpus's texts. With a map, part of the targets are the map's
        round trip decode(encode(e)), the kind of target a gap click produces."""
        from gapfill.vec2text_train import train_vec2text

        self._require_embeddings()
        off_manifold = None
        if self.map is not None:
            fitted = self.map
            off_manifold = lambda e: fitted.decode(fitted.encode(e))  # noqa: E731
        model = yield from train_vec2text(
            list(self.corpus.texts), self.embedder.encode, config, embedder_id=self.embedder.model_id,
            off_manifold=off_manifold, backbone_path=self.backbone_path, checkpoint_dir=checkpoint_dir,
            resume=resume, stop=stop,
        )
        with self.lock:
            self.vec2text = model
        return model

    def save_vec2text(self, store: ModelStore | None = None) -> str:
        """Save the current Vec2Text model as a new version (of `store`, default the engine's)."""
        model = self._require_vec2text()
        manifest = model.manifest(self.embedder.model_id) | {
            "corpus_fingerprint": self.corpus.fingerprint() if self.corpus else None,
        }
        return (store or self.store).save(VEC2TEXT_KIND, model.state_tensors(), manifest)

    def load_vec2text(self, version: str | None = None, store: ModelStore | None = None, *, loader=None):
        """Load a saved Vec2Text model: the engine's store, else the model shipped in assets/.
        `loader` replaces `vec2text_train.load_vec2text` (same arguments), e.g. with one that
        shares a model already loaded for the same folder."""
        from gapfill.vec2text_train import load_vec2text

        loader = loader or load_vec2text
        store = store or (self.store if self.store.current(VEC2TEXT_KIND) else ModelStore(SHIPPED_MODELS))
        chosen = version or store.current(VEC2TEXT_KIND)
        if chosen is None:
            raise NotReadyError("no Vec2Text model saved or shipped: train one first (train-vec2text)")
        model = loader(store.path(VEC2TEXT_KIND, chosen), embedder_id=self.embedder.model_id,
                       dim=self.embedder.dim, backbone_path=self.backbone_path)
        with self.lock:
            self.vec2text = model
        return model

    # ---- gaps and fills -------------------------------------------------------------------

    def gaps(self, k: int = 10) -> list[Gap]:
        """The k largest empty circles of the map inside the corpus's footprint."""
        self._require_map()
        return find_gaps(self.positions, k)

    def fill(self, x: float, y: float, *, num_steps: int | None = None, sequence_beam_width: int | None = None,
             target_aware: bool = True, seed_documents: int | None = None,
             on_text=None) -> Generator[FillStep, None, FillResult]:
        """Write a text for the map point (x, y); yields every correction step with where each
        hypothesis lands. Defaults for the loop come from the Vec2Text model's config.
        `on_text(step, text, finished)` watches each step's first text being written."""
        model, pumap = self._require_vec2text(), self._require_map()
        given = {"num_steps": num_steps, "sequence_beam_width": sequence_beam_width, "seed_documents": seed_documents}
        loop = {name: getattr(model.config, name) if value is None else value for name, value in given.items()}
        result = yield from filling.fill(model, pumap, self.embedder.encode, self.embeddings, self.corpus.texts, x, y,
                                         target_aware=target_aware, on_text=on_text, **loop)
        with self.lock:
            self.fills.append(result)
        return result

    def fill_gaps(self, k: int = 5, **kw) -> Generator[Progress, None, list[FillResult]]:
        """Fill the k largest gaps; one progress event per finished fill."""
        gaps = self.gaps(k)
        results = []
        for i, gap in enumerate(gaps, 1):
            results.append(drive(self.fill(gap.x, gap.y, **kw)))
            yield Progress(i, len(gaps), metrics={"distance": results[-1].distance}, stage="fill")
        return results

    def evaluate(self, n_fills: int = 3) -> dict[str, object]:
        """The guide's quality metrics: the map's, and those of `n_fills` new fills of the
        largest gaps plus this engine's earlier fills (0: only the earlier ones)."""
        from gapfill import evaluation

        pumap = self._require_map()
        report: dict[str, object] = {"map": evaluation.as_dict(evaluation.evaluate_map(pumap, self.embeddings))}
        if self.vec2text is not None and n_fills:
            drive(self.fill_gaps(n_fills))
        if self.fills:
            report["fills"] = evaluation.as_dict(evaluation.evaluate_fills(self.fills, self.vec2text))
        return report

    def fills_frame(self) -> pd.DataFrame:
        """This engine's fills as a table (for the CSV export)."""
        return pd.DataFrame([asdict(f) for f in self.fills], columns=[f.name for f in fields(FillResult)])

    # ---- guards ---------------------------------------------------------------------------

    def _require_embeddings(self) -> np.ndarray:
        if self.embeddings is None:
            raise NotReadyError("no corpus loaded: load the built-in corpus or a CSV first (initialize)")
        return self.embeddings

    def _require_vec2text(self):
        if self.vec2text is None:
            raise NotReadyError("no Vec2Text model yet: train or load one first (train-vec2text)")
        return self.vec2text

    def _require_map(self) -> ParametricUMAP:
        if self.map is None:
            raise NotReadyError("no map yet: train or load a map first (train-parametric-umap)")
        return self.map
