"""Corpus: upload a CSV of documents, or return to the built-in WordNet corpus."""
import streamlit as st

from gapfill.corpus import CorpusError, map_problem
from gapfill.wordnet import WORDNET_ATTRIBUTION
from ui import panels, state

st.title("Corpus")
eng = state.ready_engine()
st.markdown(f"**In use:** {panels.plain(eng.corpus.name)}, {len(eng.corpus)} documents.")
if eng.corpus.report is not None:
    st.caption(eng.corpus.report.summary())
if state.uses_builtin(eng):
    st.caption(WORDNET_ATTRIBUTION)
elif st.button("Return to the built-in WordNet corpus"):
    state.use_builtin(eng)
    st.rerun()

st.subheader("Upload a CSV")
limit_mib = state.UPLOAD_LIMIT_BYTES / 2**20
upload = st.file_uploader(
    f"One document per row, up to {limit_mib:.0f} MiB", type=["csv", "tsv", "txt"], key=state.UPLOAD,
    help="The text column is 'content' or 'text', else the only text column (you choose when it is not "
         "clear). Optional columns: id, label, embedding (a JSON list per row). Comma, semicolon, tab or "
         "pipe separated; UTF-8, or UTF-16 with a byte-order mark (legacy Windows files are read as cp1252). "
         "HTML is turned into plain text; empty and duplicate texts are dropped and long ones cut, with counts.",
)
if upload is not None:
    data = upload.getvalue()
    parsed, column = panels.parse_upload(data, upload.name, upload.file_id)
    if parsed is not None:
        st.caption(parsed.report.summary())
        st.dataframe(parsed.to_frame().drop(columns="embedding", errors="ignore").head(50), hide_index=True,
                     width="stretch")
        # Refused here, before the corpus in use is replaced: the map is trained right after.
        problem = map_problem(parsed, eng.embedder.dim)
        if problem is not None:
            st.error(f"This file cannot replace the corpus: {problem}")
        elif st.button(f"Use these {len(parsed)} documents", type="primary",
                       help="Embeds them and trains a map (or loads the saved one made for them)."):
            try:
                state.use_csv(eng, data, column)
            except (CorpusError, ValueError) as err:
                st.error(f"The corpus was not changed: {err}")
            else:
                st.rerun()
