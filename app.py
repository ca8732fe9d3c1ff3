"""GapFill: the Streamlit entry script is only a router (Streamlit multipage guidance)."""
import streamlit as st

st.set_page_config(page_title="GapFill", layout="wide")

pages = [
    st.Page("pages/map.py", title="Map", icon=":material/scatter_plot:", default=True),
]
st.navigation(pages).run()
