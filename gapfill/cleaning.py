"""From the bytes and cells of an upload to clean document texts: decoding, HTML markup,
Unicode normalisation, and empty, duplicate or overlong texts.

What a user who uploads a spreadsheet export expects, and what happens:
- UTF-8 (with or without a byte-order mark) is read as is; UTF-16 and UTF-32 with a
  byte-order mark (Excel's "Unicode text") are decoded too.
- A UTF-8 file with a few damaged bytes keeps its good accents: each undecodable byte becomes
  U+FFFD and is counted, rather than the whole file being re-read as latin-1 ("cafÃ©").
- A file that is not UTF-8 at all is a legacy Windows or ISO export: cp1252 when it holds
  cp1252's quotes and dashes (bytes 0x80-0x9F), else latin-1, with a warning in the log.
- NUL bytes (a spreadsheet, UTF-16 without a byte-order mark, a binary file) are refused.
- HTML is turned into its visible text: tags and comments go, `<script>` and `<style>`
  contents go, entities such as `&amp;` become characters. Markup would otherwise dominate
  the embeddings and the map's tooltips. A bare `<` or `>` in prose ("a < b") is not markup
  and is kept. Pass `strip_html=False` to `gapfill.csv_loader.load_csv` to keep markup as text.
- Every text is put in Unicode NFC, so that "café" typed two ways is one text, not two.
- Empty texts are dropped, texts over the length limit are cut, and duplicates (judged after
  all of the above) are dropped; each is counted.
"""
from __future__ import annotations

import codecs
import logging
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser

logger = logging.getLogger(__name__)

# Longest first: UTF-32-LE's mark begins with UTF-16-LE's.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# A complete tag (`<p>`, `</b>`, `<br/>`, `<a href="x">`), a comment, or an entity.
_MARKUP = re.compile(r"<(?:/?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?|!--.*?--)>|&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z]+);",
                     re.DOTALL)


class DecodeError(ValueError):
    """The bytes are not text in any encoding a CSV export uses; the message says what to do."""


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str  # "utf-8", "utf-16", "utf-32", "cp1252" or "latin-1"
    undecodable: int = 0  # damaged byte sequences of a UTF-8 file, each now U+FFFD


def decode(raw: bytes) -> Decoded:
    """The text of a CSV file, its encoding and how many byte sequences could not be decoded."""
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            try:
                return Decoded(raw.decode(codec), codec)
            except UnicodeDecodeError as exc:
                raise DecodeError(f"The file starts with a {codec.upper()} byte-order mark but is not valid "
                                  f"{codec.upper()} ({exc}). Save it as a UTF-8 CSV and upload again.") from exc
    if b"\x00" in raw:  # latin-1 would 'succeed' on any binary file
        raise DecodeError("The file is not text (it contains NUL bytes): a spreadsheet such as .xlsx, UTF-16 "
                          "without a byte-order mark, or another binary file. Save it as a UTF-8 CSV and upload again.")
    try:
        return Decoded(raw.decode("utf-8-sig"), "utf-8")
    except UnicodeDecodeError as exc:
        first_error = exc
    text = raw.decode("utf-8-sig", errors="replace")
    undecodable = text.count("\ufffd") - raw.count("\ufffd".encode())
    valid_non_ascii = len(text) - len(text.encode("ascii", errors="ignore")) - text.count("\ufffd")
    # Legacy encodings almost never form valid multi-byte UTF-8 by chance: a file with as many
    # of those as of damaged sequences is UTF-8 with damage. Keep it and mark the damage.
    if valid_non_ascii >= undecodable:
        logger.warning("CSV is UTF-8 with %d undecodable byte sequence(s) (first: %s); each is now U+FFFD.",
                       undecodable, first_error)
        return Decoded(text, "utf-8", undecodable)
    encoding = "cp1252" if any(0x80 <= b <= 0x9F for b in raw) else "latin-1"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:  # one of the five bytes cp1252 leaves undefined
        encoding, text = "latin-1", raw.decode("latin-1")
    logger.warning("CSV is not valid UTF-8 (%s); reading it as %s, accents may be wrong.", first_error, encoding)
    return Decoded(text, encoding)


def has_markup(text: str) -> bool:
    return _MARKUP.search(text) is not None


class _VisibleText(HTMLParser):
    """Collects the text a browser would show: no tags, no script or style, entities decoded."""

    _HIDDEN = {"script", "style", "noscript", "template"}
    _BREAKS = {"p", "div", "br", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
               "pre", "section", "article", "header", "footer", "ul", "ol", "table", "hr", "dt", "dd"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BREAKS:
            self.parts.append(" ")  # `a<br>b` reads as two words

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BREAKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def strip_markup(text: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    parser = _VisibleText()
    parser.feed(text)
    parser.close()
    return " ".join("".join(parser.parts).split())


@dataclass(frozen=True)
class CleanTexts:
    """Kept texts by row number, and how many rows each rule changed."""

    kept: dict[int, str]
    empty: int
    duplicate: int
    truncated: int
    html: int  # texts whose markup was stripped (kept or not)


def clean_texts(values: list[str], max_chars: int, strip_html: bool = True) -> CleanTexts:
    """Markup stripped, NFC, whitespace trimmed, cut to `max_chars`; then empty and duplicate
    texts dropped. Duplicates are judged last, so the corpus never holds two equal texts."""
    kept: dict[int, str] = {}
    seen: set[str] = set()
    empty = duplicate = truncated = html = 0
    for row, value in enumerate(values):
        doc = value
        if strip_html and has_markup(doc):
            doc, html = strip_markup(doc), html + 1
        doc = unicodedata.normalize("NFC", doc).strip()
        if not doc:
            empty += 1
            continue
        cut = len(doc) > max_chars
        doc = doc[:max_chars].rstrip() if cut else doc
        if doc in seen:
            duplicate += 1
            continue
        seen.add(doc)
        kept[row] = doc
        truncated += cut
    return CleanTexts(kept, empty, duplicate, truncated, html)
