"""GapFill: the Streamlit entry script is only a router (Streamlit multipage guidance)."""
import streamlit as st

from ui import prefetch

st.set_page_config(page_title="GapFill", layout="wide")
remove_prefetch = prefetch.chart_library()  # the browser loads Plotly while the page is prepared

pages = [
    st.Page("pages/map.py", title="Map", icon=":material/scatter_plot:", default=True),
    st.Page("pages/corpus.py", title="Corpus", icon=":material/table:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
]
st.navigation(pages).run()
remove_prefetch()
