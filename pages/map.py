"""Map: the corpus on the plane, coloured by label."""
import plotly.graph_objects as go
import streamlit as st

from gapfill.wordnet import WORDNET_ATTRIBUTION
from ui import state

st.title("GapFill")
st.caption("The corpus on a 2D map. Empty regions are the documents it is missing.")

eng = state.ready_engine()
view = eng.map_view()
labels = view.labels or ("document",) * len(view.texts)
fig = go.Figure()
for label in sorted(set(labels)):
    idx = [i for i, lab in enumerate(labels) if lab == label]
    fig.add_trace(go.Scattergl(
        x=view.x[idx], y=view.y[idx], mode="markers", name=label,
        marker={"size": 4, "opacity": 0.7},
        text=[view.texts[i] for i in idx], hovertemplate="%{text}<extra>" + label + "</extra>",
    ))
fig.update_layout(height=700, margin={"l": 0, "r": 0, "t": 0, "b": 0}, legend={"itemsizing": "constant"})
st.plotly_chart(fig, key="map", width="stretch")
st.caption(f"{len(view.texts)} documents · {eng.corpus.name} · map trust {eng.map.metrics.get('trust', float('nan')):.3f}")
if eng.corpus.name.startswith("WordNet"):
    st.caption(WORDNET_ATTRIBUTION)
