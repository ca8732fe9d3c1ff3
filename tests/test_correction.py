"""The correction loop on a toy bag-of-words world: real edits, real embeddings, no torch.

The toy embedder counts words of a 12-word vocabulary; the toy corrector reads the difference
`target - hypothesis embedding` (as Vec2Text's corrector is conditioned on it) and proposes
single-word edits: the helpful ones first, then a bad one.
"""
from __future__ import annotations

import numpy as np
import pytest

from gapfill.correction import (
    Candidate, InversionResult, Step, invert, invert_embeddings, invert_strings, nearest_texts,
)

VOCAB = ("cat", "dog", "sat", "ran", "on", "the", "mat", "park", "red", "big", "fast", "sun")
INDEX = {w: i for i, w in enumerate(VOCAB)}


class BagOfWords:
    """Unit-normalised word counts; records every text it embeds."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), len(VOCAB)))
        for row, text in zip(out, texts):
            for word in text.split():
                row[INDEX[word]] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    @property
    def embedded(self) -> list[str]:
        return [t for call in self.calls for t in call]


class EditInverter:
    """Starts from a fixed poor text; corrects by single-word edits that the difference points to."""

    embedding_dim = len(VOCAB)

    def __init__(self, start: str = "sun") -> None:
        self.start = start

    def generate(self, targets: np.ndarray, *, num_return_sequences: int = 1) -> list[list[str]]:
        return [[self.start] for _ in targets]

    def correct(self, targets, hyp_embeddings, hyp_texts, *, num_return_sequences=1):
        out = []
        for target, emb, text in zip(targets, hyp_embeddings, hyp_texts):
            words = text.split()
            diff = target - emb
            add = VOCAB[int(np.argmax(diff))]  # the word the target wants more of
            worst = min(words, key=lambda w: diff[INDEX[w]])  # the word it wants less of
            bad = VOCAB[int(np.argmin(diff))]
            edits = [
                " ".join(add if w == worst else w for w in words),  # replace
                " ".join(words + [add]),  # insert
                " ".join(w for w in words if w != worst) or add,  # delete
                " ".join(words + [bad]),  # a bad edit
            ]
            out.append(edits[:num_return_sequences])
        return out


class WorseInverter(EditInverter):
    def correct(self, targets, hyp_embeddings, hyp_texts, *, num_return_sequences=1):
        return [[f"{t} sun", f"{t} sun sun"][:num_return_sequences] for t in hyp_texts]


class RepeatInverter(EditInverter):
    def correct(self, targets, hyp_embeddings, hyp_texts, *, num_return_sequences=1):
        return [[t] for t in hyp_texts]


def run(gen) -> tuple[list[Step], InversionResult]:
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            return steps, stop.value


@pytest.fixture
def embed() -> BagOfWords:
    return BagOfWords()


def target_of(text: str) -> np.ndarray:
    return BagOfWords()([text])[0]


def test_loop_reaches_a_reachable_target_and_best_never_decreases(embed):
    steps, result = run(invert(EditInverter(), target_of("cat sat mat"), embed, num_steps=6))
    assert result.best.cosine == pytest.approx(1.0, abs=1e-9)
    assert result.best_step <= 4
    bests = [s.best.cosine for s in steps]
    assert all(b >= a - 1e-12 for a, b in zip(bests, bests[1:]))
    assert result.steps == tuple(steps)


class WritingInverter(EditInverter):
    """Reports its first row's text word by word through `on_text`, as Vec2Text does per token."""

    def _written(self, rows, on_text):
        words = rows[0][0].split()
        for i in range(1, len(words) + 1):
            on_text(" ".join(words[:i]), i == len(words))
        return rows

    def generate(self, targets, *, num_return_sequences=1, on_text):
        return self._written(super().generate(targets, num_return_sequences=num_return_sequences), on_text)

    def correct(self, targets, hyp_embeddings, hyp_texts, *, num_return_sequences=1, on_text):
        rows = super().correct(targets, hyp_embeddings, hyp_texts, num_return_sequences=num_return_sequences)
        return self._written(rows, on_text)


def test_the_text_being_written_is_reported_with_its_step_before_the_step(embed):
    seen: list[tuple[int, str, bool]] = []
    gen = invert(WritingInverter(), target_of("cat sat mat"), embed, num_steps=3,
                 on_text=lambda step, text, finished: seen.append((step, text, finished)))
    steps = []
    for step in gen:
        steps.append(step)
        assert seen[-1][0] == step.step and seen[-1][2], "a step's text is finished before the step comes"
    assert seen[0] == (0, "sun", True)  # step 0: the inverter's text
    assert {s for s, _, _ in seen} == {s.step for s in steps}
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))


def test_beam_is_bounded_and_sorted(embed):
    for width in (1, 2, 3):
        steps, _ = run(invert(EditInverter(), target_of("the cat sat on the mat"), embed, sequence_beam_width=width))
        for s in steps:
            assert 1 <= len(s.beam) <= width
            scores = [c.score for c in s.beam]
            assert scores == sorted(scores, reverse=True)
            assert s.best == s.beam[0]


def test_worse_corrections_stop_at_step_one(embed):
    steps, result = run(invert(WorseInverter(start="cat"), target_of("cat sat mat"), embed, num_steps=5))
    assert [s.step for s in steps] == [0, 1]
    assert result.stopped == "no_improvement"
    assert not steps[1].improved
    assert result.best.text == "cat" and result.best_step == 0


def test_already_seen_corrections_stop_at_step_one(embed):
    steps, result = run(invert(RepeatInverter(), target_of("cat sat mat"), embed, num_steps=5))
    assert len(steps) == 2 and steps[1].candidates == ()
    assert result.stopped == "no_improvement"


def test_num_steps_zero_yields_only_the_inverter_hypotheses(embed):
    steps, result = run(invert(EditInverter(), target_of("cat sat mat"), embed, num_steps=0))
    assert [s.step for s in steps] == [0]
    assert result.stopped == "num_steps" and result.best_step == 0


def test_loop_that_keeps_improving_stops_at_num_steps(embed):
    _, result = run(invert(EditInverter(), target_of("the cat sat on the mat"), embed, num_steps=2))
    assert result.stopped == "num_steps" and len(result.steps) == 3


@pytest.mark.parametrize(
    "target, kw",
    [
        (np.ones(len(VOCAB)), {"num_steps": -1}),
        (np.ones(len(VOCAB)), {"sequence_beam_width": 0}),
        (np.ones((1, len(VOCAB))), {}),
        (np.full(len(VOCAB), np.nan), {}),
        (np.ones(len(VOCAB) + 1), {}),
        (np.zeros(len(VOCAB)), {}),
    ],
)
def test_bad_arguments_raise_value_error_at_call_time(embed, target, kw):
    with pytest.raises(ValueError):
        invert(EditInverter(), target, embed, **kw)
    assert embed.calls == []


def test_custom_scorer_changes_the_best_but_cosine_stays_true(embed):
    target = target_of("cat sat mat")
    # Rank by cosine, but forbid "sat" (as a map-position scorer might forbid a region).
    no_sat = lambda emb, t: emb @ t - 10.0 * (emb[:, INDEX["sat"]] > 0)  # noqa: E731
    _, plain = run(invert(EditInverter(), target, embed))
    _, scored = run(invert(EditInverter(), target, BagOfWords(), scorer=no_sat))
    assert "sat" in plain.best.text.split() and "sat" not in scored.best.text.split()
    for c in (s for step in scored.steps for s in step.candidates):
        assert c.cosine == pytest.approx(float(target_of(c.text) @ target))
    assert scored.best.cosine < plain.best.cosine


def test_nothing_is_embedded_twice(embed):
    run(invert(EditInverter(), target_of("the big red dog ran"), embed, num_steps=6))
    assert len(embed.embedded) == len(set(embed.embedded))
    assert len(embed.calls) >= 3


def test_invert_strings_round_trips_toy_sentences(embed):
    texts = ["cat sat mat", "big dog ran", "the sun"]
    out = invert_strings(EditInverter(), texts, embed, num_steps=6)
    cos = np.sum(BagOfWords()(out) * BagOfWords()(texts), axis=1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-9)


def test_invert_embeddings_returns_one_text_per_row(embed):
    out = invert_embeddings(EditInverter(), BagOfWords()(["cat", "dog ran"]), embed, num_steps=3)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    with pytest.raises(ValueError):
        invert_embeddings(EditInverter(), np.ones(len(VOCAB)), embed)


def test_candidate_repr_leaves_out_the_embedding():
    c = Candidate("cat", 0.5, 0.5, 0, embedding=np.ones(3))
    assert "embedding" not in repr(c)


def test_seeds_are_rewritten_but_never_returned():
    """A seed close to the target joins step 0's beam, the corrector edits it, and the result
    is a written text, even where the seed itself is closer than anything written."""
    embed = BagOfWords()
    target = embed(["the cat sat on the mat"])[0]
    gen = invert(EditInverter("sun"), target, embed, num_steps=3, sequence_beam_width=2, seeds=["the cat sat on the"])
    steps, result = run(gen)
    seed = [c for c in steps[0].candidates if c.seed]
    assert [c.text for c in seed] == ["the cat sat on the"]
    assert steps[0].best.text == "sun" and not steps[0].best.seed  # step 0's best is the inverter's
    assert any(c.seed for c in steps[0].beam)  # ... while the seed leads the beam
    written = [c for s in steps[1:] for c in s.candidates]
    assert any(c.text.startswith("the cat sat on the") for c in written)  # edits of the seed
    assert not result.best.seed and result.best.text != "the cat sat on the"
    assert result.best.cosine > seed[0].cosine  # one edit of the seed reaches the target
    assert result.best.cosine == pytest.approx(1.0)


def test_improvement_is_measured_against_written_texts_only():
    """A seed better than every rewrite does not stop the loop: a step improves when its best
    text beats the best text written before it."""
    embed = BagOfWords()
    target = embed(["cat dog sat ran"])[0]
    steps, result = run(invert(EditInverter("sun"), target, embed, num_steps=2, sequence_beam_width=1,
                               seeds=["cat dog sat ran red"]))
    assert [s.improved for s in steps[1:]] == [True, True]
    assert result.stopped == "num_steps" and not result.best.seed
    assert all(s.best.cosine <= steps[-1].best.cosine for s in steps)


def test_blank_seeds_are_ignored_and_non_texts_refused():
    embed = BagOfWords()
    steps, _ = run(invert(EditInverter(), embed(["cat"])[0], embed, num_steps=0, seeds=["", "  "]))
    assert not any(c.seed for c in steps[0].candidates)
    with pytest.raises(ValueError, match="seeds must be texts"):
        invert(EditInverter(), embed(["cat"])[0], embed, seeds=[3])


def test_nearest_texts_are_the_closest_first():
    embed = BagOfWords()
    texts = ["dog ran", "cat sat", "cat sat mat", "sun"]
    assert nearest_texts(texts, embed(texts), embed(["cat sat mat"])[0], 2) == ["cat sat mat", "cat sat"]
    assert nearest_texts(texts, embed(texts), embed(["cat"])[0], 0) == []


class CountingInverter(EditInverter):
    """Records how many texts each correction call asks for per hypothesis, and of how many."""

    def __init__(self) -> None:
        super().__init__("sun sun sun")
        self.asked: list[tuple[int, int]] = []

    def correct(self, targets, hyp_embeddings, hyp_texts, *, num_return_sequences=1):
        self.asked.append((len(hyp_texts), num_return_sequences))
        return super().correct(targets, hyp_embeddings, hyp_texts, num_return_sequences=num_return_sequences)


@pytest.mark.parametrize(("width", "per_hypothesis"), [(1, 2), (2, 2), (3, 3), (4, 4)])
def test_each_hypothesis_of_the_beam_expands_into_width_texts(embed, width, per_hypothesis):
    """Morris et al.'s sequence-level beam search: every hypothesis proposes `width` texts
    (at least 2, so a deterministic first proposal is never all), and the best `width` go on."""
    model = CountingInverter()
    steps, _ = run(invert(model, target_of("cat sat on the mat"), embed, num_steps=2, sequence_beam_width=width,
                          seeds=["dog ran", "red park", "big sun"]))
    assert model.asked and all(n == per_hypothesis for _, n in model.asked)
    assert model.asked[0][0] == min(width, 4)  # the first beam: the inverter's text and the seeds
    assert all(len(s.beam) <= width for s in steps)
