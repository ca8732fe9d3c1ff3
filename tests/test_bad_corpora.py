"""Bad corpora, each fed to the CSV loader, the engine, the REST API and the app's Corpus page:
every one is either loaded with counts of what was repaired or refused with a message that
says what to fix, and a refused file leaves the corpus and the map in use untouched.

The matrix (`CASES`) says, per file, what the loader keeps and reports, and where a file the
loader accepts is refused further on: by the engine (embeddings of the wrong dimension) or
before a map is drawn (too few documents)."""
from __future__ import annotations

import csv
import io
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

from gapfill.api import PREFIX, create_app
from gapfill.corpus import MIN_MAP_DOCUMENTS, CorpusError
from gapfill.csv_loader import load_csv
from gapfill.engine import Engine
from gapfill.events import drive
from gapfill.map_config import ParametricUMAPConfig
from gapfill.storage import ModelStore
from ui.state import UPLOAD

ROOT = Path(__file__).resolve().parents[1]
SIZE_LIMIT = 50 * 2**20  # load_csv's default max_bytes, which the engine, API and app use
SMALL_MAP = ParametricUMAPConfig(n_epochs=20, encoder_epochs=5, decoder_epochs=5, transform_steps=10)
ANIMALS = ("cat", "dog", "owl", "fox", "cow", "bee", "crow", "frog", "horse", "mouse")
GOOD_TEXTS = [f"the {a} rests near the {p}" for a in ANIMALS for p in ("window", "river", "barn")]  # in use
# Each bad file is a few bad rows in an otherwise good file big enough for a map.
FILLER = [f"filler document {i} about the {a}" for i, a in enumerate(ANIMALS * 3)][:MIN_MAP_DOCUMENTS]
N = len(FILLER)


def _csv(rows: list[list[str]], delimiter: str = ",", encoding: str = "utf-8") -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode(encoding)


def _texts_file(texts: list[str], encoding: str = "utf-8") -> bytes:
    """A one-column CSV of `texts` and then the filler."""
    return _csv([["text"]] + [[t] for t in texts + FILLER], encoding=encoding)


def _two_columns(texts: list[str]) -> list[list[str]]:
    return [["id", "text"]] + [[str(i), t] for i, t in enumerate(texts + FILLER)]


@cache
def _over_the_limit() -> bytes:
    return b"text\n" + b"x" * (SIZE_LIMIT - 4)  # one byte over


@dataclass(frozen=True)
class Bad:
    """A bad file and what should become of it."""

    name: str
    make: Callable[[], bytes]
    says: str  # regex: in the load report when the loader keeps documents, else in its refusal
    kept: int | None = None  # documents the loader keeps; None: the loader refuses the file
    columns: tuple[str, ...] | None = None  # the text-column choices a refusal offers
    status: int = 422  # the API's answer when the loader refuses
    refused_at: str | None = None  # "engine" or "map": refused after the loader accepted it
    refusal: str = ""  # regex: that refusal's message

    def __str__(self) -> str:
        return self.name


COMMAS = [f"{a}s, {b}s and more" for a, b in zip(ANIMALS, ANIMALS[1:])][:4]
CASES = [
    Bad("undecodable bytes in a UTF-8 file",
        lambda: _texts_file(["café au lait", "crème brûlée", "naïve piñata", "plain words"]).replace(b"pla", b"pl\xffa"),
        rf"\(utf-8, comma-separated\) and kept {N + 4} texts.*Replaced 1 undecodable byte sequence", kept=N + 4),
    Bad("a legacy Windows (cp1252) export",
        lambda: _texts_file(["\u201ccurly quotes\u201d here", "an en \u2013 dash", "café noir", "déjà vu"], "cp1252"),
        rf"\(cp1252, comma-separated\) and kept {N + 4} texts", kept=N + 4),
    Bad("a UTF-8 byte-order mark", lambda: b"\xef\xbb\xbf" + _texts_file(["after the mark"]),
        rf"\(utf-8, comma-separated\) and kept {N + 1} texts from column 'text'", kept=N + 1),
    Bad("UTF-16 with a byte-order mark, tab-separated (Excel's Unicode text)",
        lambda: _csv(_two_columns(["Unicode text"]), "\t").decode().encode("utf-16"),
        rf"\(utf-16, tab-separated\) and kept {N + 1} texts", kept=N + 1),
    Bad("semicolon-separated, with commas inside texts", lambda: _csv(_two_columns(COMMAS), ";"),
        rf"semicolon-separated\) and kept {N + 4} texts", kept=N + 4),
    Bad("tab-separated, with commas inside texts", lambda: _csv(_two_columns(COMMAS), "\t"),
        rf"tab-separated\) and kept {N + 4} texts", kept=N + 4),
    Bad("no text column", lambda: _csv([["id", "price"]] + [[str(i), f"{i * 1.5}"] for i in range(30)]),
        r"No column holds text: id, price hold numbers", columns=("id", "price")),
    Bad("an empty file", lambda: b"", r"The CSV file is empty"),
    Bad("a header only", lambda: b"id,text\r\n", r"header but no rows"),
    Bad("one row", lambda: _csv([["text"], ["the only document"]]), r"kept 1 text from", kept=1,
        refused_at="map", refusal=rf"has 1 usable document and a map needs at least {MIN_MAP_DOCUMENTS}"),
    Bad("duplicate texts (also after trimming and Unicode normalisation)",
        lambda: _texts_file(["alpha", "beta", " alpha ", "cafe\u0301", "caf\u00e9", "gamma", "beta"]),
        rf"kept {N + 4} texts .*dropped 0 empty and 3 duplicate", kept=N + 4),
    Bad("very long texts, one past the csv module's field limit",
        lambda: _texts_file(["word " * 2_000, "x" * 200_000]),
        rf"kept {N + 2} texts .*truncated 2 longer than 2000 characters", kept=N + 2),
    Bad("HTML",
        lambda: _texts_file(["<p>Great <b>soup</b> &amp; bread</p>", "<script>alert('x')</script>After the script",
                             "a < b and c > d", "<div><br/></div>"]),
        rf"kept {N + 3} texts .*dropped 1 empty .*Turned the HTML of 3 texts into plain text", kept=N + 3),
    Bad("non-English text",
        lambda: _texts_file(["日本語の文章です", "مرحبا بالعالم", "Привет, мир", "नमस्ते दुनिया", "😀 emoji 🎉"]),
        rf"kept {N + 5} texts .*dropped 0 empty and 0 duplicate", kept=N + 5),
    Bad("an embedding column of the wrong dimension",
        lambda: _csv([["text", "embedding"]] + [[t, f"[1, {i}, 0]"] for i, t in enumerate(FILLER)]),
        rf"kept {N} texts", kept=N, refused_at="engine", refusal=r"embeddings have 3 dimensions but the embedder"),
    Bad("embeddings of two dimensions in one file",
        lambda: _csv([["text", "embedding"], ["a", "[1, 0, 0]"], ["b", "[0, 1, 0]"], ["c", "[1, 1]"]]),
        r"Row 3 of the 'embedding' column has dimension 2, but row 1 has 3"),
    Bad("an embedding with NaN",
        lambda: _csv([["text", "embedding"], ["a", "[1, 0]"], ["b", "[NaN, 1]"], ["c", "[0, 1]"]]),
        r"row 2 of the 'embedding' column contains NaN"),
    Bad("a binary file (.xlsx)", lambda: b"PK\x03\x04\x14\x00\x06\x00" + bytes(64) + b"[Content_Types].xml",
        r"not text \(it contains NUL bytes\)"),
    Bad("a file over the size limit", _over_the_limit, r"1 byte over the 50\.0 MiB limit", status=413),
]


# ---- fixtures: an engine with a corpus and a map in use -----------------------------------

@pytest.fixture(scope="module", autouse=True)
def _own_embedding_cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GAPFILL_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def saved_map(tiny_st_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding a small map of the good corpus."""
    store = tmp_path_factory.mktemp("models")
    engine = Engine(embedder_model=str(tiny_st_model_dir), store=ModelStore(store))
    drive(engine.load_csv(_csv([["text"]] + [[t] for t in GOOD_TEXTS])))
    drive(engine.train_map(SMALL_MAP))
    engine.save_map()
    return store


@pytest.fixture()
def engine(tiny_st_model_dir: Path, saved_map: Path, tmp_path: Path) -> Engine:
    """A new engine using the good corpus and its map (loaded from a copy of the store)."""
    shutil.copytree(saved_map, tmp_path / "models")
    engine = Engine(embedder_model=str(tiny_st_model_dir), store=ModelStore(tmp_path / "models"))
    drive(engine.load_csv(_csv([["text"]] + [[t] for t in GOOD_TEXTS])))
    assert engine.load_map_for_corpus() == "v0001"
    return engine


def _state(engine: Engine) -> tuple:
    return engine.corpus, engine.embeddings, engine.map, engine.positions


def _untouched(engine: Engine, before: tuple) -> None:
    """The very corpus, embeddings, map and positions that were in use before."""
    assert all(now is then for now, then in zip(_state(engine), before))
    assert len(engine.corpus) == len(GOOD_TEXTS) and engine.positions.shape == (len(GOOD_TEXTS), 2)


# ---- the loader ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_loader_repairs_with_counts_or_refuses_saying_what_to_fix(case: Bad) -> None:
    if case.kept is None:
        with pytest.raises(CorpusError, match=case.says) as info:
            load_csv(case.make())
        assert info.value.columns == (list(case.columns) if case.columns else None)
        return
    corpus = load_csv(case.make())
    assert len(corpus) == case.kept
    assert re.search(case.says, corpus.report.summary()), corpus.report.summary()


def test_repaired_texts_read_as_a_person_would_write_them() -> None:
    texts = {c.name: load_csv(c.make()).texts[:-N] for c in CASES if c.kept and c.kept > N}
    undecodable = texts["undecodable bytes in a UTF-8 file"]
    assert undecodable == ("café au lait", "crème brûlée", "naïve piñata", "pl\ufffdain words")
    assert texts["a legacy Windows (cp1252) export"][:2] == ("\u201ccurly quotes\u201d here", "an en \u2013 dash")
    assert texts["HTML"] == ("Great soup & bread", "After the script", "a < b and c > d")
    assert texts["duplicate texts (also after trimming and Unicode normalisation)"] == ("alpha", "beta", "café", "gamma")
    assert [len(t) for t in texts["very long texts, one past the csv module's field limit"]] == [1999, 2000]
    assert texts["semicolon-separated, with commas inside texts"] == tuple(COMMAS)
    assert texts["non-English text"][0] == "日本語の文章です" and texts["non-English text"][4] == "😀 emoji 🎉"
    html = next(c for c in CASES if c.name == "HTML")
    assert load_csv(html.make(), strip_html=False).texts[0] == "<p>Great <b>soup</b> &amp; bread</p>"


# ---- the engine ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_engine_loads_the_repaired_corpus_or_keeps_the_one_in_use(case: Bad, engine: Engine) -> None:
    before = _state(engine)
    if case.kept is None or case.refused_at == "engine":
        with pytest.raises(ValueError, match=case.says if case.kept is None else case.refusal):
            drive(engine.load_csv(case.make()))
        _untouched(engine, before)
        return
    corpus = drive(engine.load_csv(case.make()))
    assert engine.corpus is corpus and len(corpus) == case.kept and engine.embeddings.shape[0] == case.kept
    assert engine.map is None, "a new corpus needs its own map"


# ---- the REST API --------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_api_answers_counts_or_a_clear_refusal_and_keeps_the_corpus(case: Bad, engine: Engine) -> None:
    client, before = TestClient(create_app(engine)), _state(engine)
    answer = client.post(f"{PREFIX}/initialize", files={"file": ("bad.csv", case.make(), "text/csv")})
    if case.kept is None or case.refused_at == "engine":
        assert answer.status_code == (case.status if case.kept is None else 422), answer.text
        assert re.search(case.says if case.kept is None else case.refusal, answer.json()["detail"]), answer.json()
        assert answer.json().get("columns") == (list(case.columns) if case.columns else None)
        state = client.get(f"{PREFIX}/status").json()
        assert state["corpus"]["size"] == len(GOOD_TEXTS) and state["map"]["loaded"]
        _untouched(engine, before)
        return
    assert answer.status_code == 200, answer.text
    assert answer.json()["corpus"]["size"] == case.kept and re.search(case.says, answer.json()["report"])
    if case.refused_at == "map":
        train = client.post(f"{PREFIX}/train-parametric-umap", json={"n_epochs": 5})
        assert train.status_code == 422 and re.search(case.refusal, train.json()["detail"]), train.text


# ---- the Corpus page -----------------------------------------------------------------------

def _texts(at: AppTest) -> str:
    return "\n".join(str(p.value) for p in [*at.caption, *at.error, *at.warning, *at.markdown])


def _corpus_page(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["engine"] = engine
    at.switch_page("pages/corpus.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key=UPLOAD).set_value((name, data, "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _use_buttons(at: AppTest) -> list[str]:
    return [b.label for b in at.button if b.label.startswith("Use these")]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_corpus_page_previews_counts_or_explains_and_keeps_the_corpus(
        case: Bad, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    at, before = _corpus_page(engine, monkeypatch), _state(engine)
    _upload(at, "bad.csv", case.make())
    shown = _texts(at)
    if case.kept is None:
        assert re.search(case.says, shown), shown
        if case.columns:  # the picker offers the columns, the warning says why
            assert at.warning and tuple(at.selectbox[0].options) == case.columns
        else:
            assert any(e.value.startswith("Could not read this file") for e in at.error)
        assert not _use_buttons(at)
    elif case.refused_at is not None:
        assert re.search(case.says, shown) and re.search(case.refusal, shown), shown
        assert any(e.value.startswith("This file cannot replace the corpus") for e in at.error)
        assert not _use_buttons(at)
    else:
        assert re.search(case.says, shown), shown
        assert _use_buttons(at) == [f"Use these {case.kept} documents"]
    _untouched(engine, before)


def test_a_repaired_upload_replaces_the_corpus_and_gets_its_map(engine: Engine, monkeypatch) -> None:
    case = next(c for c in CASES if c.name.startswith("duplicate texts"))
    at = _upload(_corpus_page(engine, monkeypatch), "dupes.csv", case.make())
    next(b for b in at.button if b.label == f"Use these {N + 4} documents").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert engine.corpus.texts[:4] == ("alpha", "beta", "café", "gamma") and engine.corpus.report.dropped_duplicate == 3
    assert engine.positions.shape == (N + 4, 2) and engine.map is not None
