"""The Streamlit app starts on the built-in corpus and draws its map."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def small_builtin(monkeypatch, tmp_path):
    monkeypatch.setenv("GAPFILL_BUILTIN_N", "300")
    monkeypatch.setenv("GAPFILL_MODELS", str(tmp_path / "models"))
    monkeypatch.chdir(ROOT)


def test_map_page_draws_the_builtin_corpus_and_saves_its_map(small_builtin, tmp_path):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
    assert not at.exception, at.exception
    fig = at.get("plotly_chart")[0].proto.spec
    assert '"type":"scattergl"' in fig.replace(" ", "")
    engine = at.session_state["engine"]
    assert len(engine.corpus) == 300
    assert engine.positions.shape == (300, 2)
    assert any((tmp_path / "models" / "pumap").glob("v0001/manifest.json"))
    assert "WordNet" in "".join(c.value for c in at.caption)
