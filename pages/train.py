"""Train: a new map or a new Vec2Text model in the background, with live loss charts; saved
versions to load or roll back to."""
import streamlit as st

from gapfill.jobs import stoppable
from gapfill.map_config import ParametricUMAPConfig
from gapfill.vec2text_config import Vec2TextConfig
from ui import panels, state

st.title("Train")
eng = state.ready_engine()
busy = state.any_training()
notice = st.container()  # always there, so the tabs below keep their place (and the open tab) when it empties
if busy:
    notice.info("A training is running; it goes on if you switch pages. Its charts are below.")

map_tab, v2t_tab, versions_tab = st.tabs(["Map (Parametric UMAP)", "Vec2Text", "Saved versions"])

with map_tab:
    st.caption(f"Trains a new map on the {len(eng.corpus)} documents in use; it replaces the map when done.")
    panels.training_panel("map")
    with st.expander("Settings", expanded=state.train_job("map") is None):
        config = panels.config_form(ParametricUMAPConfig, "map_form", "Train a new map", disabled=busy)
    if config is not None:
        state.start_training("map", lambda stop: stoppable(eng.train_map(config), stop))
        st.rerun()
    if st.button("Save the current map", disabled=busy):
        st.success(f"Saved the map as {eng.save_map()}.")

with v2t_tab:
    st.caption("Trains the inverter and the corrector on the corpus's texts (the backbone stays frozen).")
    panels.training_panel("vec2text")
    with st.expander("Settings", expanded=state.train_job("vec2text") is None):
        config = panels.config_form(Vec2TextConfig, "vec2text_form", "Train Vec2Text", disabled=busy)
    if config is not None:
        state.start_training("vec2text", lambda stop: eng.train_vec2text(config, stop=stop))
        st.rerun()
    if st.button("Save the current Vec2Text model", disabled=busy or eng.vec2text is None):
        st.success(f"Saved the Vec2Text model as {eng.save_vec2text()}.")

with versions_tab:
    panels.versions(eng, "pumap", "Maps")
    panels.versions(eng, "vec2text", "Vec2Text models")
