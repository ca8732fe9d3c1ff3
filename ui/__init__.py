"""Streamlit-side helpers: session state keys and cached loaders (the pages stay thin)."""
