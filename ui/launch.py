"""Start the app with what its first page view needs already done.

    python -m ui.launch [streamlit run options...]

`streamlit run app.py` imports the engine (torch: 2-3 s) and prepares the built-in corpus and
its map only when the first browser session runs the page script, so the first visitor waits
for all of it on top of the page itself. This does both first, then runs the same Streamlit
server in this process (`sys.modules` is shared with the page scripts), with the Vec2Text
model loaded into the cache the sessions share: the address it prints serves a ready app
(about 8 s after the start here, once the built-in corpus is embedded and cached). `make run`
starts the app this way.
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("ui.launch")


def _prepare() -> None:
    """The imports, the built-in corpus and its map, the Vec2Text model. A failure is logged
    and left to the sessions, which prepare what is missing themselves and show the error in
    words."""
    try:
        from ui import figures, fills, panels, state  # noqa: F401 - the page scripts' imports

        eng = state.preload_map()
    except Exception:  # noqa: BLE001
        log.exception("preparing the built-in corpus failed; sessions will try again")
        return
    state.preload_vec2text(eng)
    view = eng.map_view()  # plotly loads each trace type's validators on first use: ~1 s of a first click
    figures.closeup_figure(view, figures.Click(float(view.x[0]), float(view.y[0])))
    # What is loaded now lives as long as the server: out of the collector's sight, a
    # collection no longer walks the millions of objects of torch and the models.
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    from streamlit.web import cli

    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    start = time.perf_counter()
    _prepare()
    log.info("prepared in %.1f s; starting the server", time.perf_counter() - start)
    sys.argv = ["streamlit", "run", str(ROOT / "app.py"), *(sys.argv[1:] if argv is None else argv)]
    return cli.main()  # Streamlit's own command line: same options, same server


if __name__ == "__main__":
    sys.exit(main())
