"""GapFill: write the documents a corpus is missing.

One engine (`gapfill.engine.Engine`) behind three front-ends: the Streamlit app, the REST API
(`gapfill.api`) and the CLI (`gapfill.cli`).
"""
from __future__ import annotations

__version__ = "0.1.0"
