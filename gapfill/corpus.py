"""Corpora: the documents a map is drawn from, loaded from a user's CSV (the built-in corpus
is in `gapfill.wordnet`, a CSV is read by `gapfill.csv_loader`).

Everything downstream (embedding, projection, gap finding) wants the same thing: unique,
non-empty texts of bounded length with stable ids, optionally labels and precomputed
embeddings. Loading is strict and all-or-nothing so a bad upload fails with a message that
says what to fix instead of producing a half-loaded map; what can be repaired (encodings,
HTML, empty, duplicate and overlong texts: see `gapfill.cleaning`) is repaired and counted
in the corpus's `LoadReport`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# The fewest documents a map is drawn from. UMAP's spectral start needs 4 (with 3, umap's
# `spectral_layout` raises a TypeError), but `Engine.train_map` scores every map by its
# trustworthiness over 15 neighbours, whose normalisation 2 / (n k (2n - 3k - 1)) (Venna &
# Kaski; `gapfill.map_metrics`) is only positive for n >= 24: with 23 documents it divides by
# zero, below that it scores above 1. The loader accepts fewer; front-ends check `map_problem`
# before they replace the corpus or start a training.
MIN_MAP_DOCUMENTS = 24


class CorpusError(ValueError):
    """A corpus could not be loaded; the message says what to change.

    `columns` is set when the text column is ambiguous or missing, so a front-end can offer
    the choices instead of just showing the message.
    """

    def __init__(self, message: str, columns: list[str] | None = None) -> None:
        super().__init__(message)
        self.columns = columns


class CorpusTooLarge(CorpusError):
    """The file is over the size limit (the API answers 413)."""


@dataclass(frozen=True)
class LoadReport:
    """What loading did to the rows, so the user can see why the corpus is smaller than the file."""

    rows_read: int
    dropped_empty: int
    dropped_duplicate: int
    truncated: int
    text_column: str
    encoding: str = "utf-8"
    delimiter: str = ","
    html_stripped: int = 0  # texts whose HTML markup was turned into plain text
    undecodable: int = 0  # damaged UTF-8 byte sequences, each replaced by U+FFFD
    max_chars: int | None = None  # the length limit texts were cut to

    @property
    def rows_kept(self) -> int:
        return self.rows_read - self.dropped_empty - self.dropped_duplicate

    def summary(self) -> str:
        delimiter = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}[self.delimiter]
        limit = "the limit" if self.max_chars is None else f"{self.max_chars} characters"
        out = (
            f"Read {count(self.rows_read, 'row')} ({self.encoding}, {delimiter}-separated) and kept "
            f"{count(self.rows_kept, 'text')} from column '{self.text_column}': dropped "
            f"{self.dropped_empty} empty and {self.dropped_duplicate} duplicate, truncated "
            f"{self.truncated} longer than {limit}."
        )
        if self.html_stripped:
            out += f" Turned the HTML of {count(self.html_stripped, 'text')} into plain text."
        if self.undecodable:
            out += (f" Replaced {count(self.undecodable, 'undecodable byte sequence')} with \ufffd "
                    "(the file is not quite UTF-8).")
        return out


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays field by field is ambiguous
class Corpus:
    """Unique, non-empty documents with ids, optional labels and optional unit-length embeddings."""

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    labels: tuple[str, ...] | None = None
    embeddings: np.ndarray | None = None  # (N, D) float32, unit rows (the loaders normalise)
    name: str = "corpus"
    report: LoadReport | None = None

    def __post_init__(self) -> None:
        n = len(self.texts)
        if len(self.ids) != n or (self.labels is not None and len(self.labels) != n):
            raise ValueError("Corpus ids, texts and labels must have the same length.")
        if self.embeddings is not None:
            if self.embeddings.ndim != 2 or self.embeddings.shape[0] != n:
                raise ValueError(f"Corpus embeddings must have shape ({n}, D), got {self.embeddings.shape}.")
            view = np.asarray(self.embeddings, dtype=np.float32).view()
            view.flags.writeable = False  # a corpus is shared (e.g. Streamlit's cache): never mutated
            object.__setattr__(self, "embeddings", view)

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        """sha256 of the texts in order; saved models record it to tell which corpus they fit."""
        digest = hashlib.sha256()
        for text in self.texts:
            data = text.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))  # length prefix: no ambiguous joins
            digest.update(data)
        return digest.hexdigest()

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame({"id": list(self.ids), "text": list(self.texts)})
        if self.labels is not None:
            frame["label"] = list(self.labels)
        if self.embeddings is not None:
            frame["embedding"] = [row.tolist() for row in self.embeddings]
        return frame

    def subset(self, indices: Sequence[int] | np.ndarray) -> Corpus:
        """The documents at `indices` (positions or a boolean mask), in that order."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(int)
        return Corpus(
            ids=tuple(self.ids[i] for i in idx),
            texts=tuple(self.texts[i] for i in idx),
            labels=None if self.labels is None else tuple(self.labels[i] for i in idx),
            embeddings=None if self.embeddings is None else self.embeddings[idx].copy(),
            name=self.name,
            report=self.report,
        )


def map_problem(corpus: Corpus, embedding_dim: int | None = None) -> str | None:
    """Why no map can be drawn from `corpus` (embedded into `embedding_dim` dimensions), as a
    sentence that says what to fix; None when a map can be drawn."""
    if len(corpus) < MIN_MAP_DOCUMENTS:
        return (f"{corpus.name} has {count(len(corpus), 'usable document')} and a map needs at least "
                f"{MIN_MAP_DOCUMENTS}: add rows with distinct, non-empty texts.")
    return None if embedding_dim is None else embedding_problem(corpus, embedding_dim)


def embedding_problem(corpus: Corpus, embedding_dim: int, embedder: str = "the embedder") -> str | None:
    """Why the corpus's own embeddings cannot be used with an embedder of `embedding_dim`
    dimensions, as a sentence that says what to fix; None when they can (or there are none)."""
    given = None if corpus.embeddings is None else corpus.embeddings.shape[1]
    if given is None or given == embedding_dim:
        return None
    return (f"the file's embeddings have {given} dimensions but {embedder} gives {embedding_dim}: "
            "drop the embedding column or use the matching embedder.")
