"""Benchmark: the app in a real browser, with the shipped models on the built-in corpus.

    .venv/bin/python bench/app.py [--timeout 300] [--profile]

Issue #5's targets, on 2 cores: the first paint within 5 s of opening the page, and the first
hypothesis of a fill on screen within 3 s of the click. The script starts `streamlit run
app.py` with the default environment (the whole WordNet corpus, the map and Vec2Text model
shipped in assets/models, the embedding cache in ~/.cache/gapfill) and drives Debian's
chromium with Playwright (`make browser-deps` installs it; never `playwright install`).

- `first_paint_cold_s`: from `page.goto` to the map drawn (the plot's `.nsewdrag` and the
  documents' Scattergl trace, then two animation frames), for the first session after the
  server started: Python imports, the corpus and the map load in it.
  `first_paint_warm_s`: the same for a second session (a new browser context) on the warm
  process.
- `model_ready_s`: from the first paint until the "Loading the Vec2Text model" notice gives
  way to "Click anywhere" (each session loads its own model in the background).
- A click on the centre of the largest gap (found here with the engine; pixels from
  `.nsewdrag`'s box and the figure's fixed axis ranges, ui/figures.py): `click_to_panel_s`
  until the panel says "Filling (x, y)", `first_text_s` until the first words of the inverter's
  greedy hypothesis are on screen as it is written, `first_hypothesis_s` until that text is
  complete ("First hypothesis", or step 0's table if that came first), `step0_table_s` until
  "Step 0" and its table of all the step's hypotheses are, `fill_done_s` until "Written text", `map_result_s` until the map
  is redrawn with the result. The page polls a running fill every `ui.state.POLL_S` (1 s),
  which bounds how soon a step appears after it is computed. The same click is then made in
  the second session (`*_warm_s`).

Where the time goes: page timelines (`marks_*_s`, seconds since navigation, 0.1 s
resolution) say when the title (the page script's imports are done), the loading bars, the
plot element, the drawn plot, the two frames after it (`painted`) and the notices first
appeared; `step0_server_s` and `step_s` are the steps' own times as the panel shows them;
`engine_s` times, in this process before the server starts, what a session's first run does
(corpus, saved map) and what every rerun of the Map page does to the map (`figure_s`,
`figure_json_s`: the figure and its JSON as `st.plotly_chart` makes it, `figure_mb` long).
`--profile` then profiles loading the Vec2Text model and one fill in this process (after the
server has stopped) and prints the top functions. `server_mib`: the server's memory at start
and after each session. `contended` lists the phases that ended while another benchmark ran
on the machine.
Screenshots: docs/screenshots/app_map.png (the map, model ready) and app_fill.png (the fill
done). Last line of output: one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Python puts this script's folder first on the path, where bench/gapfill.py would stand
# in for the gapfill package: the repository root goes there instead.
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

from gapfill.local_server import ServerDidNotStart, free_port, memory_mib, stop, wait_until_up  # noqa: E402 - after the path

CHROMIUM = Path("/usr/bin/chromium")
# Flags verified with this chromium (shared/notes/streamlit.md).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}
SHOTS = ROOT / "docs" / "screenshots"
POLL_MS = 50  # how often the waits below test the page: the precision of every figure

# ---- what the page shows, as JavaScript predicates -----------------------------------------

PLOT_DRAWN = """() => {
  const gd = document.querySelector('.js-plotly-plot');
  return !!(gd && gd.querySelector('.nsewdrag') && gd.querySelector('canvas') && gd._fullData
            && gd._fullData.some(t => t.type === 'scattergl' && t.name !== 'grid' && t._length > 0));
}"""
TWO_FRAMES = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
# The same, noting in the page's timeline when the frames after the first paint came.
PAINTED = """() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => {
  (window.__marks ??= {}).painted = Math.round(performance.now() / 100) / 10; done(); })))"""
AXIS_RANGES = """() => { const l = document.querySelector('.js-plotly-plot')._fullLayout;
                         return [l.xaxis.range, l.yaxis.range]; }"""
MODEL_SETTLED = """() => { const t = document.body.textContent;
  return !t.includes('Loading the Vec2Text model')
         && (t.includes('Click anywhere on the map, on a document') || t.includes('Clicks cannot be filled yet')); }"""
PANEL_SHOWN = "() => [...document.querySelectorAll('h3')].some(h => h.textContent.startsWith('Filling ('))"
# Step 0 is the inverter's hypotheses: its line and its table under it, with the best text.
FIRST_CELL = "() => document.querySelector('[data-testid=\"stTable\"] tbody td')?.textContent || null"
STEP0_SHOWN = """() => [...document.querySelectorAll('strong')].some(s => s.textContent === 'Step 0')
                       && !!(%s)()""" % FIRST_CELL
# While step 0 runs the panel shows the inverter's greedy text as it is written ("Writing step
# 0"), then "First hypothesis" once it is complete, while the sampled alternatives finish.
FIRST_TEXT = """() => [...document.querySelectorAll('strong')].some(s => s.textContent === 'Writing step 0')
                      && [...document.querySelectorAll('blockquote')].some(b => /\\w/.test(b.textContent))"""
FIRST_HYPOTHESIS = """() => [...document.querySelectorAll('strong')].some(s => s.textContent === 'First hypothesis')
                            || (%s)()""" % STEP0_SHOWN
FILL_DONE = "() => [...document.querySelectorAll('strong')].some(s => s.textContent === 'Written text')"
MAP_RESULT = "() => [...document.querySelectorAll('.legendtext')].some(e => e.textContent === 'result')"
# Installed in every new page: when each thing first appears, in seconds since navigation.
WATCH = [("title", "text", "The corpus on a 2D map"),
         ("embedding_bar", "text", "Embedding the built-in WordNet corpus"),
         ("map_bar", "text", "Preparing the map"),
         ("plot", "selector", ".nsewdrag"),
         ("drawn", "drawn", ""),  # PLOT_DRAWN holds
         ("loading_notice", "text", "Loading the Vec2Text model"),
         ("ready_notice", "text", "Click anywhere on the map, on a document")]
MARKS_JS = """((watch, drawn) => {
  const marks = window.__marks = {};
  const timer = setInterval(() => {
    if (!document.body) return;
    const text = document.body.textContent;
    for (const [name, kind, what] of watch)
      if (!(name in marks) && (kind === 'text' ? text.includes(what) : kind === 'drawn' ? drawn()
                                                                       : document.querySelector(what)))
        marks[name] = Math.round(performance.now() / 100) / 10;
    if (watch[watch.length - 1][0] in marks) clearInterval(timer);  // the last one: the rest is history
  }, 100);
})(%s, %s)""" % (json.dumps(WATCH), PLOT_DRAWN)
WARM_KEYS = ("click_to_panel_s", "first_text_s", "first_hypothesis_s", "step0_table_s", "step0_server_s", "fill_done_s")
# Other timed work on this machine: a phase that overlapped it is reported as contended.
OTHERS = r"bench/(gapfill|vec2text|pumap|load)\.py|pytest"
STEP_LINE = re.compile(r"Step (\d+) \((\w+), ([\d.]+) s\) · best cosine (-?[\d.]+)")


# ---- the engine, in this process ------------------------------------------------------------

def largest_gap():
    """The engine as the app's first session sets it up, with the phases timed, and the map's
    largest gap (the same corpus and saved map as the app's)."""
    t = time.perf_counter()
    from gapfill.engine import Engine
    from gapfill.events import drive

    phases = {"import_s": time.perf_counter() - t}
    eng = Engine()
    t = time.perf_counter()
    drive(eng.load_builtin())
    phases["corpus_s"] = time.perf_counter() - t
    t = time.perf_counter()
    version = eng.load_map_for_corpus()
    phases["map_s"] = time.perf_counter() - t
    if version is None:
        raise SystemExit("no saved map fits the built-in corpus: assets/models/pumap is missing or stale")
    t = time.perf_counter()
    gap = eng.gaps(1)[0]
    phases["gaps_s"] = time.perf_counter() - t
    return eng, gap, {k: round(v, 2) for k, v in phases.items()}


def figure_cost(eng) -> dict[str, float]:
    """What each rerun of the Map page spends on the map before sending it: building the
    figure (ui/figures.py) and what `st.plotly_chart` does to it (to_dict, then to_json)."""
    import plotly.io

    from ui.figures import map_figure

    t = time.perf_counter()
    fig = map_figure(eng.map_view())
    built = time.perf_counter() - t
    t = time.perf_counter()
    spec = plotly.io.to_json(fig.to_dict(), validate=False)
    return {"figure_s": round(built, 2), "figure_json_s": round(time.perf_counter() - t, 2),
            "figure_mb": round(len(spec) / 1e6, 1)}


def profile_fill(eng, gap, top: int = 15) -> dict[str, float]:
    """Load the Vec2Text model and fill the gap in this process under cProfile; print the
    functions that take the most time, return the phases' wall times."""
    profiler = cProfile.Profile()
    t = time.perf_counter()
    profiler.enable()
    eng.load_vec2text()
    profiler.disable()
    phases = {"load_vec2text_s": time.perf_counter() - t}
    print(f"---- profile: load_vec2text ({phases['load_vec2text_s']:.1f} s)", file=sys.stderr)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(top)
    profiler = cProfile.Profile()
    t = time.perf_counter()
    profiler.enable()
    steps = eng.fill(gap.x, gap.y)
    phases["step0_s"] = next(steps).elapsed_s
    for _ in steps:
        pass
    profiler.disable()
    phases["fill_s"] = time.perf_counter() - t
    print(f"---- profile: one fill ({phases['fill_s']:.1f} s)", file=sys.stderr)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(top)
    return {k: round(v, 2) for k, v in phases.items()}


# ---- the server -----------------------------------------------------------------------------

def start_server(log_path: Path, timeout_s: float) -> tuple[subprocess.Popen, str, float]:
    """The app as `make run` starts it (ui/launch.py: the imports, corpus and map prepared, then
    `streamlit run app.py`) on a free loopback port, once its health endpoint answers; the
    seconds to that are `server_start_s`."""
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ui.launch", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/_stcore/health", proc, timeout_s, log_path)
    except ServerDidNotStart:
        stop(proc)
        raise
    return proc, url, time.perf_counter() - start


# ---- the browser ----------------------------------------------------------------------------

def wait_for(page, predicate: str, what: str, timeout_s: float) -> float:
    """Wait until `predicate` holds in the page; the seconds it took. A Python exception
    shown by the app, or the timeout, stops the benchmark with what was awaited."""
    start = time.perf_counter()
    try:
        page.wait_for_function(predicate, polling=POLL_MS, timeout=timeout_s * 1000)
    except Exception as err:  # playwright's TimeoutError, or the page went away
        raise RuntimeError(f"waiting for {what}: {err}\n{app_exception(page) or ''}") from err
    problem = app_exception(page)
    if problem:
        raise RuntimeError(f"the app shows an exception while waiting for {what}:\n{problem}")
    return time.perf_counter() - start


def app_exception(page) -> str | None:
    shown = page.locator('[data-testid="stException"]')
    return shown.first.inner_text() if shown.count() else None


def open_session(browser, url: str, timeout_s: float):
    """A new browser context (so a new Streamlit session) on the app; the page and the
    seconds from `goto` to the map drawn."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(MARKS_JS)
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url)
    wait_for(page, PLOT_DRAWN, "the map's first paint", timeout_s)
    page.evaluate(PAINTED)
    return page, time.perf_counter() - start


def wait_for_model(page, timeout_s: float) -> float:
    """Seconds until the session's Vec2Text model is loaded (its notice gone)."""
    took = wait_for(page, MODEL_SETTLED, "the Vec2Text model to load", timeout_s)
    problem = page.get_by_text("Clicks cannot be filled yet")
    if problem.count():
        raise RuntimeError(f"the app has no Vec2Text model: {problem.first.inner_text()}")
    return took


def map_pixel(page, x: float, y: float, ranges: tuple[list[float], list[float]]) -> tuple[float, float]:
    """Where the map point (x, y) is in the viewport, scrolled into it: the plot area is
    `.nsewdrag`, the axes' ranges are fixed."""
    (x0, x1), (y0, y1) = ranges
    plot = page.locator(".nsewdrag").first
    plot.evaluate("e => e.scrollIntoView({block: 'center'})")  # the map is taller than what is left of the viewport
    page.evaluate(TWO_FRAMES)
    box = plot.bounding_box()
    return (box["x"] + (x - x0) / (x1 - x0) * box["width"],
            box["y"] + (y1 - y) / (y1 - y0) * box["height"])


def fill_gap(page, gap, ranges, timeout_s: float) -> dict[str, object]:
    """Click the gap's centre and time the fill panel: the figures and what it wrote."""
    px, py = map_pixel(page, gap.x, gap.y, ranges)
    page.mouse.move(px, py)
    start = time.perf_counter()
    page.mouse.click(px, py)
    wait_for(page, PANEL_SHOWN, "the fill panel", 60)
    out: dict[str, object] = {"click_to_panel_s": time.perf_counter() - start}
    out["first_text_s"] = None
    try:  # words of the first hypothesis, as they are written (a fast step 0 may skip them)
        page.wait_for_function(f"() => ({FIRST_TEXT})() || ({FIRST_HYPOTHESIS})()", polling=POLL_MS,
                               timeout=timeout_s * 1000)
        if page.evaluate(FIRST_TEXT):
            out["first_text_s"] = time.perf_counter() - start
    except Exception:
        pass
    wait_for(page, FIRST_HYPOTHESIS, "the first hypothesis", timeout_s)
    out["first_hypothesis_s"] = time.perf_counter() - start
    wait_for(page, STEP0_SHOWN, "step 0's table of hypotheses", timeout_s)
    out["step0_table_s"] = time.perf_counter() - start
    panel = page.locator("h3", has_text="Filling (").first.inner_text()
    out["clicked"] = [float(v) for v in re.findall(r"-?\d+\.\d+", panel)]
    try:
        page.wait_for_function(FIRST_CELL, polling=POLL_MS, timeout=5000)
        out["hypothesis"] = page.evaluate(FIRST_CELL)
    except Exception:  # the grid's accessibility table did not fill: the figure stands without it
        out["hypothesis"] = None
    step0 = STEP_LINE.search(page.locator("body").text_content())
    out["step0_server_s"] = float(step0.group(3)) if step0 else None
    wait_for(page, FILL_DONE, "the fill's result", timeout_s)
    out["fill_done_s"] = time.perf_counter() - start
    wait_for(page, MAP_RESULT, "the map redrawn with the result", 60)
    out["map_result_s"] = time.perf_counter() - start
    out |= read_result(page)
    return out


def read_result(page) -> dict[str, object]:
    """The written text, its cosine and landing distance, and each step's time as shown."""
    def metric(label: str) -> str:
        return page.locator('[data-testid="stMetric"]', has_text=label).locator(
            '[data-testid="stMetricValue"]').first.inner_text()

    steps = STEP_LINE.findall(page.locator("body").text_content())
    return {
        "text": page.locator('[data-testid="stMarkdownContainer"] blockquote').last.inner_text().strip(),
        "cosine": float(metric("Cosine")),
        "distance": float(metric("Distance")),
        "best_step": metric("Best step"),
        "step_s": [float(s[2]) for s in steps] or None,  # each step's own time, on the server
    }


def shot(page, name: str) -> str:
    """A screenshot of the whole page. Streamlit scrolls inside its main section, not the
    document, so `full_page` alone gives the viewport: the viewport grows to fit meanwhile."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    height = page.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                           " m.scrollTop = 0; return m.scrollHeight; }")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], height)})
    page.evaluate(TWO_FRAMES)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)
    page.evaluate(TWO_FRAMES)
    return str(path.relative_to(ROOT))


def others_running() -> bool:
    return subprocess.run(["pgrep", "-f", OTHERS], capture_output=True).returncode == 0


def rounded(d: dict[str, object]) -> dict[str, object]:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in d.items()}


# ---- the run --------------------------------------------------------------------------------

def sessions(browser, url: str, server_pid: int, gap, ranges, timeout_s: float,
             contended: list[str]) -> dict[str, object]:
    """The first session after the server started (a user's first visit: paint, model, fill,
    screenshots), then a second one on the warm process (a later visitor)."""
    out: dict[str, object] = {"server_mib": {"start": memory_mib(server_pid)}}
    page, out["first_paint_cold_s"] = open_session(browser, url, timeout_s)
    out["model_ready_s"] = wait_for_model(page, timeout_s)
    shown = page.evaluate(AXIS_RANGES)
    if max(abs(a - b) for a, b in zip(sum(shown, []), sum(ranges, []))) > 1e-6:
        print(f"the page's axis ranges {shown} differ from the engine's {ranges}: using the page's", file=sys.stderr)
        ranges = tuple(shown)
    out["screenshots"] = [shot(page, "app_map")]
    out |= fill_gap(page, gap, ranges, timeout_s)
    out["screenshots"].append(shot(page, "app_fill"))
    out["marks_cold_s"] = page.evaluate("() => window.__marks")
    page.context.close()
    out["server_mib"]["one_session"] = memory_mib(server_pid)
    if others_running():
        contended.append("cold_session")
    page, out["first_paint_warm_s"] = open_session(browser, url, timeout_s)
    out["model_ready_warm_s"] = wait_for_model(page, timeout_s)
    warm = fill_gap(page, gap, ranges, timeout_s)
    out |= {k.removesuffix("_s") + "_warm_s": warm[k] for k in WARM_KEYS} | {"text_warm": warm["text"]}
    out["marks_warm_s"] = page.evaluate("() => window.__marks")
    page.context.close()
    out["server_mib"]["two_sessions"] = memory_mib(server_pid)  # each session loads its own models
    if others_running():
        contended.append("warm_session")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for any one thing")
    parser.add_argument("--profile", action="store_true",
                        help="then profile loading Vec2Text and one fill in this process")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing: run `make browser-deps` (it apt-installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    contended = ["start"] if others_running() else []
    eng, gap, engine_s = largest_gap()  # before the server: nothing else shares the cores then
    from ui.figures import axis_ranges

    engine_s |= figure_cost(eng)
    ranges = axis_ranges(eng.map_view().bounds)  # as the app draws them before any fill
    print(f"largest gap: ({gap.x:.3f}, {gap.y:.3f}), radius {gap.radius:.3f}; in this process {engine_s}",
          file=sys.stderr)
    log_path = Path(tempfile.mkdtemp(prefix="gapfill-bench-app-")) / "streamlit.log"
    figures: dict[str, object] = {"engine_s": engine_s, "gap": [round(gap.x, 3), round(gap.y, 3), round(gap.radius, 3)]}
    proc, url, figures["server_start_s"] = start_server(log_path, args.timeout)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
            try:
                figures |= sessions(browser, url, proc.pid, gap, ranges, args.timeout, contended)
            finally:
                browser.close()
    finally:
        stop(proc)
    print(f"server log: {log_path}", file=sys.stderr)
    if args.profile:
        figures["inprocess_s"] = profile_fill(eng, gap)
        if others_running():
            contended.append("profile")
    figures["contended"] = contended  # phases that ended while another benchmark ran
    keys = ["first_paint_cold_s", "first_paint_warm_s", "model_ready_s", "first_hypothesis_s", "fill_done_s"]
    print(json.dumps(rounded({k: figures.pop(k) for k in keys} | figures), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
