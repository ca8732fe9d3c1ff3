"""Start the browser loading the chart library while the server prepares the page.

Streamlit's Plotly component is 4.7 MB of JavaScript that the browser fetches only when the
first chart arrives; loading and compiling it took about 2 s of the first paint here, after
the map had been built and sent. This module imports only Streamlit, so it can run before the
page's heavy imports.
"""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

_REQUESTED = "chart_library_requested"
_EMPTY_CHART = {"data": [{"type": "scatter", "x": [0], "y": [0], "mode": "markers", "marker": {"opacity": 0},
                          "hoverinfo": "skip", "showlegend": False}],
                "layout": {"height": 10, "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
                                      "xaxis": {"visible": False}, "yaxis": {"visible": False}}}


def chart_library() -> Callable[[], None]:
    """On a session's first run, an empty Plotly chart ten pixels high, so that the browser starts
    loading the Plotly component now; returns what removes it again (call it at the end of
    the run). Later runs add nothing."""
    if st.session_state.get(_REQUESTED):
        return lambda: None
    st.session_state[_REQUESTED] = True
    slot = st.empty()
    slot.plotly_chart(_EMPTY_CHART, config={"displayModeBar": False, "staticPlot": True})
    return slot.empty
