"""Evaluate: how faithful the map is, and how good the texts written into it are."""
import streamlit as st

from gapfill import evaluation
from ui import figures, fills, state

st.title("Evaluate")
eng = state.ready_engine()

st.subheader("The map")
report = state.per_map(eng, "map-report", lambda: evaluation.evaluate_map(eng.map, eng.embeddings))
trust, decoder, recon = st.columns(3)
trust.metric("Trustworthiness", "n/a" if report.trust is None else f"{report.trust:.3f}",
             help="Are a document's nearest neighbours on the map also near it in embedding space? 1 is perfect.")
decoder.metric("Decoder cosine", f"{1 - report.embedding_distance:.3f}",
               help="Mean cos(decode(encode(e)), e) over up to 1000 documents: how much of an embedding survives the map.")
recon.metric("Reconstruction error", f"{report.reconstruction_error:.3f}",
             help="Mean |encode(decode(p)) − p| over a grid, as a share of the map's diagonal.")
xs, ys, errors = state.per_map(eng, "heatmap", lambda: evaluation.reconstruction_heatmap(eng.map, 30))
st.caption("Reconstruction error over the map: where a decoded point does not land back where it was taken, "
           "a click there cannot be filled faithfully.")
st.plotly_chart(figures.heatmap_figure(xs, ys, errors, eng.map_view()), key="heatmap", width="stretch")

st.subheader("The fills")
recent = eng.fills[-50:]
if not recent:
    st.info("No fills yet: click the map or fill the largest gaps, then come back.")
else:
    baseline = evaluation.retrieval_cosines(recent, eng.map, eng.embeddings)
    st.caption(f"Cosine to the target of the last {len(recent)} fills, against the retrieval baseline: the most "
               "similar corpus document's cosine to the same target.")
    st.plotly_chart(figures.histogram_figure(
        {"fills": [f.cosine for f in recent], "nearest corpus document": baseline}, "cosine to the target"),
        key="cosines", width="stretch")
    names = [f"#{i}" for i in range(len(eng.fills) - len(recent) + 1, len(eng.fills) + 1)]
    st.caption("How far each fill's text lands from its click (share of the map's diagonal).")
    st.plotly_chart(figures.bar_figure(names, [f.distance for f in recent], "landing distance"),
                    key="distances", width="stretch")
    traces = [t for t in fills.traces()[-10:] if t.steps]
    if traces:
        st.caption("Convergence: the best cosine so far at each correction step of recent fills.")
        st.plotly_chart(figures.convergence_figure(
            [(f"({t.result.x:.1f}, {t.result.y:.1f})", t.steps) for t in traces]), key="convergence", width="stretch")
