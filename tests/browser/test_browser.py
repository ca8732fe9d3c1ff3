"""The app in a real browser: Debian's chromium driven by Playwright against the server that
`make run` starts (ui/launch.py: `streamlit run app.py`, prepared first).

One browser session walks through the app as a person would: click an empty region of the
map and watch the fill, upload a CSV, train a map while switching pages. Tiny models (a 32-d
embedder, a random two-layer backbone) keep it to a few minutes; screenshots go to
docs/screenshots/. Never `playwright install`: it downloads a browser, which fails offline.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gapfill.backbone import backbone_dir, build_tiny_backbone
from gapfill.engine import Engine
from gapfill.events import drive
from gapfill.local_server import free_port, stop, wait_until_up
from gapfill.map_config import ParametricUMAPConfig
from gapfill.vec2text_config import Vec2TextConfig

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: `make browser-deps`")
playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (requirements.txt)")

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots"
N_DOCS = 120
# Flags verified with this chromium (shared/notes/streamlit.md).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
LOAD_S, FILL_S = 180, 180


@pytest.fixture(scope="module")
def setup(tiny_st_model_dir, tmp_path_factory) -> Iterator[dict]:
    """A model store holding the built-in corpus's map and a tiny Vec2Text model, and the
    environment that points the app at them."""
    if not (backbone_dir() / "READY.json").exists():
        pytest.skip("backbone not prepared (its tokenizer is borrowed): run `make setup`")
    root = tmp_path_factory.mktemp("browser")
    env = {"GAPFILL_BUILTIN_N": str(N_DOCS), "GAPFILL_MODELS": str(root / "models"),
           "GAPFILL_EMBEDDER": str(tiny_st_model_dir), "GAPFILL_BACKBONE": str(build_tiny_backbone(root / "lm")),
           "GAPFILL_CACHE": str(root / "cache")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        eng = Engine()
        drive(eng.load_builtin(n=N_DOCS))
        drive(eng.train_map(ParametricUMAPConfig(n_epochs=30, encoder_epochs=5, decoder_epochs=10, transform_steps=20)))
        eng.save_map()
        drive(eng.train_vec2text(Vec2TextConfig(epochs=1, batch_size=4, num_prefix=2, lora_rank=2, corrector_documents=4,
                                                corrector_neighbours=4, max_length=24, max_documents=24, num_steps=1,
                                                sequence_beam_width=2)))
        eng.save_vec2text()
    yield {"env": env, "engine": eng, "root": root}


@pytest.fixture(scope="module")
def server(setup) -> Iterator[str]:
    port = free_port()
    env = os.environ | setup["env"] | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    log = open(setup["root"] / "streamlit.log", "w")
    proc = subprocess.Popen(
        # As `make run` starts it: ui/launch.py prepares the corpus, map and models, then serves.
        [sys.executable, "-m", "ui.launch", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/_stcore/health", proc, 60, setup["root"] / "streamlit.log")
        yield url
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    """One browser tab for the whole walk (a `goto` would start a new Streamlit session)."""
    with playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1500, "height": 1200},
        )
        tab = context.new_page()
        tab.goto(server)
        tab.locator(".nsewdrag").first.wait_for(timeout=LOAD_S * 1000)
        yield tab
        context.close()


def go_to(page, name: str) -> None:
    """Switch pages as a person does: the sidebar link (the session and its engine stay)."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=name).click()
    page.get_by_role("heading", name=name if name != "Map" else "GapFill").wait_for(timeout=60_000)


def shot(page, name: str) -> None:
    """Save a screenshot, after checking that the page shows no Python exception."""
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator('[data-testid="stException"]').first.inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_clicking_an_empty_region_fills_it(page, setup):
    eng = setup["engine"]
    gap = eng.gaps(1)[0]  # the same corpus and map as the app's: its largest empty circle
    (x0, x1), (y0, y1) = page.evaluate(
        "() => { const l = document.querySelector('.js-plotly-plot').layout; return [l.xaxis.range, l.yaxis.range]; }")
    box = page.locator(".nsewdrag").first.bounding_box()
    px = box["x"] + (gap.x - x0) / (x1 - x0) * box["width"]
    py = box["y"] + (y1 - gap.y) / (y1 - y0) * box["height"]
    page.mouse.move(px, py)
    page.mouse.click(px, py)
    heading = page.get_by_role("heading", name=re.compile(r"^Filling \("))
    heading.wait_for(timeout=30_000)
    cx, cy = map(float, re.findall(r"-?\d+\.\d+", heading.inner_text()))
    assert abs(cx - gap.x) < 0.02 * (x1 - x0) + 0.01 and abs(cy - gap.y) < 0.02 * (y1 - y0) + 0.01
    page.get_by_text("Written text").wait_for(timeout=FILL_S * 1000)
    page.locator(".legendtext", has_text=re.compile(r"^result$")).wait_for(timeout=30_000)
    assert page.locator(".legendtext", has_text="landing path").count() == 1
    shot(page, "map-fill")


def test_uploading_a_csv_replaces_the_corpus(page, tmp_path):
    go_to(page, "Corpus")
    csv = tmp_path / "docs.csv"
    csv.write_text("text,label\n" + "".join(f"note {i} on {t} and more,{t}\n" for i in range(30) for t in ("tea", "rain")))
    page.locator('input[type="file"]').set_input_files(str(csv))
    page.get_by_text("kept 60 texts", exact=False).wait_for(timeout=60_000)
    page.get_by_role("button", name="Use these 60 documents").click()
    page.get_by_text(re.compile(r"In use:.*, 60 documents")).wait_for(timeout=LOAD_S * 1000)
    shot(page, "corpus")


def test_training_draws_a_growing_chart_and_survives_a_page_switch(page):
    go_to(page, "Train")
    # Long enough to be seen running twice (the layout samples edges by weight: ~3x faster than it was).
    for name, value in {"n_epochs": "3000", "encoder_epochs": "150", "decoder_epochs": "150"}.items():
        field = page.get_by_label(name, exact=True)
        field.fill(value)
        field.press("Tab")
    page.get_by_role("button", name="Train a new map").click()
    page.get_by_text(re.compile(r"^running · ")).first.wait_for(timeout=60_000)
    status = page.get_by_text(re.compile(r"^(running|done) · "))  # it may well be done 3 s later
    first = status.first.inner_text()
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    time.sleep(3)
    assert status.first.inner_text() != first, "the progress moves while training"
    go_to(page, "Map")
    time.sleep(2)
    go_to(page, "Train")
    page.get_by_text(re.compile(r"^(running|done) · ")).first.wait_for(timeout=30_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    shot(page, "train-running")
    page.get_by_text(re.compile(r"^done · ")).first.wait_for(timeout=LOAD_S * 1000)
    # When the job ends the whole app reruns once: the page no longer says a training runs.
    playwright_api.expect(page.get_by_text("A training is running")).to_have_count(0, timeout=30_000)
    playwright_api.expect(page.get_by_role("button", name="Save the current map")).to_be_enabled(timeout=30_000)
    assert page.locator(".js-plotly-plot").count() >= 1
    shot(page, "train-done")


def test_evaluate_page_draws_its_figures(page):
    go_to(page, "Evaluate")
    page.get_by_text("Trustworthiness").wait_for(timeout=120_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    shot(page, "evaluate")
