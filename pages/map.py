"""Map: the corpus on the plane; click anywhere to watch the text that belongs there being written."""
import streamlit as st

from gapfill.wordnet import WORDNET_ATTRIBUTION
from ui import figures, fills, panels, state

st.title("GapFill")
st.caption("The corpus on a 2D map. Click an empty region: Vec2Text writes the document that belongs there.")

eng = state.ready_engine()
model_ready = state.vec2text_ready(eng)
loading = state.vec2text_loading()
if not model_ready and loading is None:
    st.info(f"Clicks cannot be filled yet: {state.vec2text_problem()}")
    st.page_link("pages/train.py", label="Train a Vec2Text model on the Train page", icon=":material/model_training:")

panels.fill_settings(state.fill_defaults(eng), disabled=not model_ready)
gap_toggle, gap_count, gap_button = st.columns([2, 1, 2], vertical_alignment="bottom")
show_gaps = gap_toggle.toggle("Show the largest gaps", key=state.SHOW_GAPS, persist_state="session")
k = gap_count.number_input("How many gaps", min_value=1, max_value=50, value=5, key=state.GAP_COUNT,
                           persist_state="session")
if gap_button.button(f"Fill the top {k} gaps", disabled=not model_ready or fills.fill_running()):
    fills.fill_gaps(eng, k)
    st.rerun()

fills.record_finished_fill()
if model_ready:
    fills.start_pending_fill(eng)
run = fills.fill_run()
current = run.job.result if run is not None else None
# While a fill runs, the map stays as it was (redrawing its ~20k points would take the cores
# from the fill's first step); the close-up beside it follows the fill. It is redrawn once,
# with the path and the result, when the fill is done.
done = run is not None and not run.job.running
click = figures.Click(run.x, run.y, run.job.snapshot().events, current) if done else None

view = eng.map_view()
gaps = state.per_map(eng, f"gaps-{k}", lambda: eng.gaps(k)) if show_gaps else []
others = [f for f in eng.fills if f is not current]
fig = state.memoized("map-figure", (eng.map, tuple(map(id, others)), tuple(gaps), click),
                     lambda: figures.map_figure(view, others, gaps, click))
map_column, fill_column = st.columns([3, 2])
map_column.plotly_chart(fig, key=state.MAP_CHART, on_select=fills.remember_click, selection_mode="points",
                        width="stretch")
map_column.caption(f"{len(view.texts)} documents · {eng.corpus.name} · map trustworthiness "
                   f"{eng.map.metrics.get('trust', float('nan')):.3f} · click anywhere, points or empty space")

if loading is not None:

    @st.fragment(run_every=state.POLL_S)
    def wait_for_model() -> None:
        if loading.running:
            st.info("Loading the Vec2Text model (a few seconds, once per session); a click made meanwhile "
                    "is filled as soon as it is ready.")
        else:
            st.rerun(scope="app")

    with fill_column:
        wait_for_model()
elif run is None:
    fill_column.info("Click anywhere on the map, on a document or in empty space: the text written for that "
                     "point appears here step by step.")
else:
    started_running = run.job.running

    @st.fragment(run_every=state.FILL_POLL_S if started_running else None)
    def live_fill() -> None:
        snapshot = run.job.snapshot()
        st.subheader(f"Filling ({run.x:.2f}, {run.y:.2f})")
        closeup = figures.Click(run.x, run.y, snapshot.events, run.job.result)
        st.plotly_chart(state.memoized("closeup-figure", closeup, lambda: figures.closeup_figure(view, closeup)),
                        key="fill_closeup", width="stretch")
        panels.fill_steps(snapshot, run.writing.latest())
        if snapshot.state == "done":
            panels.fill_result(run.job.result)
        if started_running and snapshot.state != "running":
            st.rerun(scope="app")  # once: redraw the map with the path and the result

    with fill_column:
        live_fill()

st.subheader("Fills of this session")
if eng.fills:
    frame = eng.fills_frame()
    st.dataframe(frame, hide_index=True, width="stretch")
    st.download_button("Download the fills as CSV", frame.to_csv(index=False).encode("utf-8"),
                       file_name="gapfill-fills.csv", mime="text/csv")
else:
    st.caption("None yet: click the map, or fill the largest gaps.")

if state.uses_builtin(eng):
    st.caption(WORDNET_ATTRIBUTION)
