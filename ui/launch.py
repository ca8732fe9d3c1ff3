"""Start the app with what its first page view needs already under way.

    python -m ui.launch [streamlit run options...]

`streamlit run app.py` imports the engine (torch, 2-3 s), prepares the built-in corpus and its
map, and loads the Vec2Text model only when the first browser session runs the page script,
so the first visitor waits for all of it. This runs the same Streamlit server in this process
and, in a background thread from the start, imports those modules (`sys.modules` is shared
with the page scripts), prepares the built-in corpus and map once for every session, and loads
the shipped (or saved) Vec2Text model into the cache the sessions share. A session that comes
before it is done waits only for what is left. `make run` starts the app this way.
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("ui.launch")


def _preload() -> None:
    try:
        from ui import state

        state.preload()
        # What is loaded now lives as long as the server: out of the collector's sight, a
        # collection no longer walks the millions of objects of torch and the models.
        gc.freeze()
    except Exception:  # noqa: BLE001 - the sessions then do it themselves and show the error
        log.exception("preloading the app failed; sessions will prepare it themselves")


def main(argv: list[str] | None = None) -> int:
    from streamlit.web import cli

    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    threading.Thread(target=_preload, name="gapfill-preload", daemon=True).start()
    sys.argv = ["streamlit", "run", str(ROOT / "app.py"), *(sys.argv[1:] if argv is None else argv)]
    return cli.main()  # Streamlit's own command line: same options, same server


if __name__ == "__main__":
    sys.exit(main())
