"""Loading corpora: CSV uploads and the built-in WordNet sample."""
from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import pytest

from gapfill.corpus import Corpus, CorpusError
from gapfill.csv_loader import load_csv
from gapfill.wordnet import WORDNET_ATTRIBUTION, load_wordnet

# --------------------------------------------------------------------------- text column


def test_content_column_is_preferred_over_text(small_csv_bytes):
    corpus = load_csv(small_csv_bytes([["text", "Content"], ["short", "the document"]]))
    assert corpus.texts == ("the document",)
    assert corpus.report.text_column == "Content"


def test_text_column_is_found_case_insensitively(small_csv_bytes):
    corpus = load_csv(small_csv_bytes([["year", "TEXT"], ["1999", "a party"], ["2000", "a bug"]]))
    assert corpus.texts == ("a party", "a bug")


def test_the_only_text_like_column_is_used(small_csv_bytes):
    rows = [["id", "price", "review", "label"], ["a", "3.5", "good soup", "pos"], ["b", "4", "cold soup", "neg"]]
    corpus = load_csv(small_csv_bytes(rows))
    assert corpus.report.text_column == "review"
    assert corpus.ids == ("a", "b")
    assert corpus.labels == ("pos", "neg")


def test_two_text_like_columns_raise_an_error_listing_them(small_csv_bytes):
    rows = [["title", "body", "n"], ["Soup", "good soup", "1"], ["Tea", "hot tea", "2"]]
    with pytest.raises(CorpusError, match="title, body") as info:
        load_csv(small_csv_bytes(rows))
    assert info.value.columns == ["title", "body"]


def test_explicit_column_wins_and_a_missing_one_lists_the_columns(small_csv_bytes):
    data = small_csv_bytes([["title", "body"], ["Soup", "good soup"]])
    assert load_csv(data, text_column="title").texts == ("Soup",)
    with pytest.raises(CorpusError, match="No column named 'abstract'.*title, body") as info:
        load_csv(data, text_column="abstract")
    assert info.value.columns == ["title", "body"]


def test_ids_default_to_row_numbers_of_the_file(small_csv_bytes):
    corpus = load_csv(small_csv_bytes([["text"], [""], ["b"], ["c"]]))
    assert corpus.ids == ("1", "2")


# --------------------------------------------------------------------------- encodings and delimiters


def test_utf8_with_bom_is_read_and_the_bom_is_not_in_the_header():
    corpus = load_csv("\ufefftext\ncafé au lait\n".encode("utf-8"))
    assert corpus.report.text_column == "text"
    assert corpus.texts == ("café au lait",)


def test_latin1_falls_back_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="gapfill.corpus"):
        corpus = load_csv("text\ncafé crème\n".encode("latin-1"))
    assert corpus.texts == ("café crème",)
    assert corpus.report.encoding == "latin-1"
    assert "latin-1" in caplog.text


def test_binary_bytes_raise_a_clear_error():
    with pytest.raises(CorpusError, match="UTF-8 CSV"):
        load_csv("text\nhello\n".encode("utf-16-le"))  # no byte-order mark: NUL bytes, not text


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_delimiter_is_sniffed_even_when_texts_contain_commas(small_csv_bytes, delimiter):
    rows = [["id", "text"], ["1", "apples, pears, plums"], ["2", "one, two"]]
    corpus = load_csv(small_csv_bytes(rows, delimiter=delimiter))
    assert corpus.texts == ("apples, pears, plums", "one, two")
    assert corpus.report.delimiter == delimiter


def test_quoted_texts_may_hold_delimiters_and_line_breaks():
    corpus = load_csv(b'id,text\r\n1,"multi\nline, yes"\r\n2,next\r\n')
    assert corpus.texts == ("multi\nline, yes", "next")


def test_a_line_with_too_many_fields_is_named_in_the_error():
    with pytest.raises(CorpusError, match="Line 3 has 4 fields"):
        load_csv(b"id,text\n1,fine\n2,not, quoted, here\n")


def test_single_column_file_keeps_unquoted_commas_inside_texts():
    corpus = load_csv(b"text\nhello, world\nfoo, bar, baz\n")
    assert corpus.texts == ("hello, world", "foo, bar, baz")


# --------------------------------------------------------------------------- cleaning


def test_empty_and_duplicate_texts_are_dropped_and_counted(small_csv_bytes):
    rows = [["text"], ["alpha"], ["   "], [""], ["beta"], ["alpha"], [" beta "]]
    corpus = load_csv(small_csv_bytes(rows))
    assert corpus.texts == ("alpha", "beta")
    report = corpus.report
    assert (report.rows_read, report.dropped_empty, report.dropped_duplicate) == (6, 2, 2)
    assert "kept 2 texts" in report.summary() and "dropped 2 empty and 2 duplicate" in report.summary()


def test_long_texts_are_truncated_and_counted(small_csv_bytes):
    corpus = load_csv(small_csv_bytes([["text"], ["x" * 50], ["short"]]), max_chars=20)
    assert [len(t) for t in corpus.texts] == [20, 5]
    assert corpus.report.truncated == 1


def test_repeated_ids_raise_an_error(small_csv_bytes):
    with pytest.raises(CorpusError, match="repeats the id '7'"):
        load_csv(small_csv_bytes([["id", "text"], ["7", "a"], ["7", "b"]]))


# --------------------------------------------------------------------------- embeddings


def test_embedding_column_is_parsed_and_normalised(small_csv_bytes):
    rows = [["text", "embedding"], ["a", json.dumps([3.0, 4.0])], ["b", json.dumps([0.0, 2.0])]]
    corpus = load_csv(small_csv_bytes(rows))
    assert corpus.embeddings.dtype == np.float32
    np.testing.assert_allclose(corpus.embeddings, [[0.6, 0.8], [0.0, 1.0]], atol=1e-6)


def test_embedding_of_wrong_dimension_names_the_row(small_csv_bytes):
    rows = [["text", "embedding"], ["a", "[1, 0]"], ["b", "[1, 0]"], ["c", "[1, 0, 0]"]]
    with pytest.raises(CorpusError, match="Row 3 .*dimension 3"):
        load_csv(small_csv_bytes(rows))


@pytest.mark.parametrize("bad", ["[1, NaN]", "[1, Infinity]", "not json", "[[1, 2]]", "[0, 0]"])
def test_invalid_embedding_names_the_row(small_csv_bytes, bad):
    rows = [["text", "embedding"], ["a", "[1, 0]"], ["b", bad]]
    with pytest.raises(CorpusError, match="row 2 of the 'embedding' column"):
        load_csv(small_csv_bytes(rows))


# --------------------------------------------------------------------------- files that cannot be used


def test_empty_file_raises_a_clear_error():
    with pytest.raises(CorpusError, match="empty"):
        load_csv(b"  \n")


def test_header_only_raises_a_clear_error():
    with pytest.raises(CorpusError, match="header but no rows"):
        load_csv(b"id,text\n")


def test_only_empty_texts_raise_a_clear_error():
    with pytest.raises(CorpusError, match="No documents left"):
        load_csv(b"text,n\n ,1\n,2\n", text_column="text")


def test_file_over_the_size_limit_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(b"text\n" + b"word " * 1000)
    with pytest.raises(CorpusError, match="over the .* limit"):
        load_csv(path, max_bytes=1000)
    with pytest.raises(CorpusError, match="over the .* limit"):
        load_csv(path.read_bytes(), max_bytes=1000)


def test_path_loading_names_the_corpus_after_the_file(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text\ngood\n", encoding="utf-8")
    assert load_csv(path).name == "reviews"
    assert load_csv(str(path)).name == "reviews"


# --------------------------------------------------------------------------- Corpus


def test_subset_fingerprint_and_frame_follow_the_documents(small_csv_bytes):
    rows = [["id", "text", "label", "embedding"]] + [[f"d{i}", f"doc {i}", "x", f"[{i + 1}, 1]"] for i in range(4)]
    corpus = load_csv(small_csv_bytes(rows))
    part = corpus.subset([2, 0])
    assert part.ids == ("d2", "d0") and part.labels == ("x", "x")
    np.testing.assert_allclose(part.embeddings, corpus.embeddings[[2, 0]])
    assert len(corpus.subset(np.array([True, False, True, False]))) == 2
    assert part.fingerprint() != corpus.fingerprint()
    assert corpus.subset(range(4)).fingerprint() == corpus.fingerprint()
    frame = corpus.to_frame()
    assert list(frame.columns) == ["id", "text", "label", "embedding"] and len(frame) == 4


def test_corpus_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        Corpus(ids=("a",), texts=("x", "y"))


# --------------------------------------------------------------------------- WordNet


@pytest.fixture(scope="module")
def wordnet_300() -> Corpus:
    return load_wordnet(n=300, seed=0)


def test_wordnet_sample_is_deterministic_for_a_seed(wordnet_300):
    again = load_wordnet(n=300, seed=0)
    assert len(wordnet_300) == 300
    assert again.ids == wordnet_300.ids and again.fingerprint() == wordnet_300.fingerprint()


def test_wordnet_sample_changes_with_the_seed(wordnet_300):
    other = load_wordnet(n=300, seed=1)
    assert len(set(other.ids) & set(wordnet_300.ids)) < 150


def test_wordnet_labels_are_noun_topics_spread_over_many_topics(wordnet_300):
    counts = Counter(wordnet_300.labels)
    assert len(counts) >= 20
    assert {"animal", "food", "plant", "artifact"} <= set(counts)
    assert "Tops" not in counts and not any(label.startswith("noun.") for label in counts)
    assert max(counts.values()) <= 3 * min(counts.values())  # stratified, not dominated by one


def test_wordnet_texts_are_lemma_colon_definition_of_at_least_five_words(wordnet_300):
    assert all(i.startswith("wn-") for i in wordnet_300.ids)
    for text in wordnet_300.texts:
        lemma, _, rest = text.partition(": ")
        definition = rest.split(". Example: ")[0]
        assert lemma and "_" not in lemma
        assert len(definition.split()) >= 5
    assert any(". Example: " in text for text in wordnet_300.texts)


def test_wordnet_default_size_and_attribution():
    corpus = load_wordnet()
    assert 9000 <= len(corpus) <= 9600
    assert max(Counter(corpus.labels).values()) == 400
    assert corpus.name == "WordNet 3.0 nouns"
    assert "Princeton University" in WORDNET_ATTRIBUTION and "wordnet.princeton.edu" in WORDNET_ATTRIBUTION


def test_a_text_longer_than_the_csv_modules_field_limit_is_truncated_not_refused():
    long_text = "word " * 40_000  # 200,000 characters, over csv's 131,072 default
    corpus = load_csv(f"text\n\"{long_text}\"\nshort one\n".encode(), max_chars=2000)
    assert len(corpus) == 2 and len(corpus.texts[0]) <= 2000
    assert corpus.report.truncated == 1


def test_a_header_longer_than_the_csv_modules_field_limit_still_loads():
    name = "x" * 200_000
    corpus = load_csv(f"{name}\nhello world\n".encode())
    assert corpus.texts == ("hello world",)
