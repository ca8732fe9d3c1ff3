"""Loading a user's CSV into a `Corpus`, all or nothing.

The text column is found by name (`content`, `text`) or as the only text-like column; the
delimiter from the header; optional `id`, `label` and `embedding` columns are checked row by
row. Every refusal is a `CorpusError` whose message says what to fix; what can be repaired
(encodings, HTML, empty, duplicate and overlong texts: see `gapfill.cleaning`) is repaired and
counted in the corpus's `LoadReport`.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from gapfill.cleaning import DecodeError, clean_texts, decode
from gapfill.corpus import Corpus, CorpusError, CorpusTooLarge, LoadReport, count

logger = logging.getLogger(__name__)

DELIMITERS = (",", ";", "\t", "|")


def load_csv(
    source: str | Path | bytes,
    *,
    text_column: str | None = None,
    max_bytes: int = 50 * 2**20,
    max_chars: int = 2000,
    name: str | None = None,
    strip_html: bool = True,
) -> Corpus:
    """Load a CSV of documents (a path, or the bytes of an upload), all or nothing.

    The text column is `text_column`, else `content`, else `text`, else the only text-like
    column. Optional columns: `id`, `label`, `embedding` (a JSON list per row). HTML is turned
    into its visible text (unless `strip_html=False`), empty and duplicate texts are dropped
    and texts over `max_chars` cut, each counted in `.report`; `gapfill.cleaning` says how
    encodings and markup are handled. A file over `max_bytes` raises `CorpusTooLarge`.
    """
    raw, name = _read_source(source, max_bytes, name)
    try:
        decoded = decode(raw)
    except DecodeError as exc:
        raise CorpusError(str(exc)) from exc
    frame, delimiter = _parse_frame(decoded.text)
    special = {k: _find_column(list(frame.columns), k) for k in ("id", "label", "embedding")}
    column = _choose_text_column(frame, text_column, special)
    cleaned = clean_texts(frame[column].tolist(), max_chars, strip_html)
    kept = cleaned.kept
    if not kept:
        raise CorpusError(f"No documents left: every row of column '{column}' is empty. Pick another text column.")
    rows = list(kept)
    ids = [frame[special["id"]].iat[r].strip() for r in rows] if special["id"] else [str(r) for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i, count in Counter(ids).items() if count > 1)
        raise CorpusError(f"Column '{special['id']}' repeats the id {dup!r}. Make ids unique or drop the column.")
    labels = tuple(frame[special["label"]].iat[r].strip() for r in rows) if special["label"] else None
    embeddings = None
    if special["embedding"]:
        embeddings = _stack_embeddings([(r, _parse_embedding(frame[special["embedding"]].iat[r], r)) for r in rows])
    report = LoadReport(len(frame), cleaned.empty, cleaned.duplicate, cleaned.truncated, column, decoded.encoding,
                        delimiter, cleaned.html, decoded.undecodable, max_chars)
    logger.info("%s: %s", name, report.summary())
    return Corpus(tuple(ids), tuple(kept.values()), labels, embeddings, name, report)


def _read_source(source: str | Path | bytes, max_bytes: int, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        raw, name = source, name or "uploaded CSV"
    else:
        path = Path(source)
        if not path.is_file():
            raise CorpusError(f"No such file: {path}. Check the path.")
        if path.stat().st_size > max_bytes:  # check before reading a huge file into memory
            raise CorpusTooLarge(_too_large(path.stat().st_size, max_bytes))
        raw, name = path.read_bytes(), name or path.stem
    if len(raw) > max_bytes:
        raise CorpusTooLarge(_too_large(len(raw), max_bytes))
    return raw, name


def _parse_frame(text: str) -> tuple[pd.DataFrame, str]:
    """All cells as strings: "NA" or "1e5" stays that text, a blank line is an empty row.

    The csv module rather than pandas: pandas silently turns extra fields into an index or
    drops them, where a user needs to hear which line is malformed.
    """
    if not text.strip():
        raise CorpusError("The CSV file is empty. Upload a file with a header row and one document per row.")
    text = text.lstrip("\r\n")  # blank lines above the header
    # A single field may be as long as the whole (size-checked) file: long texts are to be
    # truncated with a count, not refused by the csv module's 128 KiB default.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    delimiter = _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [cell.strip() for cell in next(reader)]
        rows = []
        for row in reader:
            if len(row) > len(header):
                raise CorpusError(
                    f"Line {reader.line_num} has {len(row)} fields but the header has {len(header)}. "
                    f"Put texts that contain the delimiter {delimiter!r} in double quotes."
                )
            rows.append(row + [""] * (len(header) - len(row)))  # missing trailing cells are empty
    except csv.Error as exc:
        raise CorpusError(f"Could not parse the CSV near line {reader.line_num} ({exc}). Check its quoting.") from exc
    if len(set(header)) != len(header):
        raise CorpusError(f"The header repeats a column name ({', '.join(header)}). Give every column its own name.")
    if not rows:
        raise CorpusError("The CSV has a header but no rows. Add one document per row below the header.")
    return pd.DataFrame(rows, columns=header, dtype=str), delimiter


def _too_large(size: int, max_bytes: int) -> str:
    def readable(n: int) -> str:
        return f"{n / 2**20:.1f} MiB" if n >= 2**20 else count(n, "byte")

    limit, shown = readable(max_bytes), readable(size)
    over = f"{count(size - max_bytes, 'byte')} over" if shown == limit else f"{shown}, over"
    return f"The file is {over} the {limit} limit. Upload a smaller sample of the corpus."


def _sniff_delimiter(text: str) -> str:
    """The candidate that splits the header into the most fields (ties: the order of DELIMITERS).

    The header is the one line whose fields are names, not prose full of commas, so counting
    there is more reliable than csv.Sniffer on the body. A one-column header takes the
    candidate rarest in the body, so texts containing commas stay whole.
    """
    header = text.splitlines()[0]
    counts = {d: len(next(csv.reader([header], delimiter=d))) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    if counts[best] > 1:
        return best
    sample = text[:65536]
    return min(DELIMITERS, key=sample.count)


def _find_column(columns: list[str], wanted: str) -> str | None:
    return next((c for c in columns if c.lower() == wanted.lower()), None)


def _choose_text_column(frame: pd.DataFrame, given: str | None, special: dict[str, str | None]) -> str:
    columns = list(frame.columns)
    if given is not None:
        found = given if given in columns else _find_column(columns, given)
        if found is None:
            raise CorpusError(f"No column named {given!r}. The columns are: {', '.join(columns)}.", columns)
        return found
    for wanted in ("content", "text"):
        if (found := _find_column(columns, wanted)) is not None:
            return found
    candidates = [c for c in columns if c not in special.values() and _is_text_like(frame[c])]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CorpusError(
            f"No column holds text: {', '.join(columns)} {'holds' if len(columns) == 1 else 'hold'} numbers, "
            "ids or nothing. Add a column of "
            "documents named 'text', or choose the column to use.",
            columns,
        )
    raise CorpusError(
        f"Which column holds the documents? Candidates: {', '.join(candidates)}. "
        "Choose one, or name it 'text'.",
        candidates,
    )


def _is_text_like(values: pd.Series) -> bool:
    """Mostly non-numeric strings: a column of prices or years is not a document column."""
    filled = values[values.str.strip() != ""]
    if filled.empty:
        return False
    numeric = pd.to_numeric(filled.str.strip(), errors="coerce").notna().mean()
    return bool(numeric < 0.5)


def _parse_embedding(value: str, row: int) -> np.ndarray:
    where = f"row {row + 1} of the 'embedding' column"
    try:
        vector = np.asarray(json.loads(value), dtype=np.float64)
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        raise CorpusError(f"{where} is not a JSON list of numbers ({exc}). Fix or remove that row.") from exc
    if vector.ndim != 1 or vector.size == 0:
        raise CorpusError(f"{where} must be a flat, non-empty JSON list of numbers.")
    if not np.isfinite(vector).all():
        raise CorpusError(f"{where} contains NaN or infinite values. Fix or remove that row.")
    norm = np.linalg.norm(vector)
    if norm == 0:
        raise CorpusError(f"{where} is all zeros and has no direction. Fix or remove that row.")
    return (vector / norm).astype(np.float32)


def _stack_embeddings(vectors: list[tuple[int, np.ndarray]]) -> np.ndarray:
    first_row, first = vectors[0]
    for row, vector in vectors:
        if vector.size != first.size:
            raise CorpusError(
                f"Row {row + 1} of the 'embedding' column has dimension {vector.size}, but row "
                f"{first_row + 1} has {first.size}. All embeddings must come from the same model."
            )
    return np.stack([vector for _, vector in vectors])
