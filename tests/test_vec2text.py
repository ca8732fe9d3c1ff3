"""Vec2Text on a tiny random backbone: training runs and learns, models save and load, the
correction loop drives it. The real SmolLM2 is measured by bench/vec2text.py, not here."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from gapfill.backbone import backbone_dir, build_tiny_backbone, generation_dtype
from gapfill.correction import invert
from gapfill.events import drive
from gapfill.model_files import ModelFileError
from gapfill.storage import ModelStore
from gapfill.vec2text_config import Vec2TextConfig
from gapfill.vec2text_train import load_vec2text, select_texts, train_vec2text

pytestmark = pytest.mark.skipif(
    not (backbone_dir() / "READY.json").exists(), reason="backbone not prepared: run `make setup`"
)

TEXTS = [f"{w}: a kind of {k} found near the {p}" for w, k, p in [
    ("oak", "tree", "river"), ("trout", "fish", "lake"), ("hammer", "tool", "shed"), ("lark", "bird", "field"),
    ("maple", "tree", "road"), ("pike", "fish", "pond"), ("chisel", "tool", "bench"), ("wren", "bird", "hedge"),
    ("birch", "tree", "hill"), ("carp", "fish", "canal"), ("saw", "tool", "yard"), ("finch", "bird", "garden"),
    ("elm", "tree", "park"), ("perch", "fish", "stream"), ("drill", "tool", "garage"), ("robin", "bird", "lawn"),
]]
TINY = {"epochs": 2, "batch_size": 4, "warmup_steps": 2, "num_prefix": 2, "lora_rank": 2,
        "corrector_documents": 8, "max_length": 24, "learning_rate": 1e-3, "projection_learning_rate": 3e-3}


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory):
    return build_tiny_backbone(tmp_path_factory.mktemp("tiny_lm") / "lm")


@pytest.fixture(scope="session")
def embedder(tiny_st_model_dir, tmp_path_factory):
    from gapfill.embedder import Embedder

    return Embedder(str(tiny_st_model_dir), cache_dir=tmp_path_factory.mktemp("v2t_cache"))


@pytest.fixture(scope="session")
def trained(tiny_backbone, embedder):
    events = []
    model = drive(train_vec2text(TEXTS, embedder.encode, Vec2TextConfig(**TINY), embedder_id="tiny",
                                 backbone_path=tiny_backbone), events.append)
    return model, events


def test_config_rejects_bad_values_and_unknown_names():
    with pytest.raises(ValueError, match="batch_size"):
        Vec2TextConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown Vec2Text settings"):
        Vec2TextConfig.from_dict({"epoch": 3})
    assert Vec2TextConfig().learning_rate == 2e-5 and Vec2TextConfig().max_length == 512


def test_training_reports_every_stage_and_lowers_the_loss(trained):
    _, events = trained
    stages = [e.stage for e in events]
    assert {"embed", "inverter", "hypotheses", "corrector"} <= set(stages)
    inverter = [e for e in events if e.stage == "inverter"]
    assert inverter[-1].loss < inverter[0].loss
    assert all({"lr", "samples_per_s", "eta_s"} <= set(e.metrics) for e in inverter)
    assert any("val_loss" in e.metrics for e in inverter)


def test_inverter_and_corrector_write_text_for_every_row(trained, embedder):
    model, _ = trained
    targets = embedder.encode(TEXTS[:3])
    hyps = model.generate(targets, num_return_sequences=2)
    assert len(hyps) == 3 and all(len(h) == 2 and all(isinstance(t, str) for t in h) for h in hyps)
    fixed = model.correct(targets, embedder.encode([h[0] for h in hyps]), [h[0] for h in hyps])
    assert len(fixed) == 3 and all(len(f) == 1 for f in fixed)


def test_the_first_of_several_texts_is_the_greedy_one(trained, embedder):
    model, _ = trained
    targets = embedder.encode(TEXTS[:3])
    alone = model.generate(targets, num_return_sequences=1)
    with_samples = model.generate(targets, num_return_sequences=3)
    assert [row[0] for row in with_samples] == [row[0] for row in alone]


def test_the_shared_prompt_cache_gives_the_logits_of_the_whole_prompt(trained, embedder):
    """A row's k texts share one computation of its prompt but its last position
    (`_shared_prefill`); reading that last position through the repeated cache must give what
    the whole prompt gives, for left-padded rows too."""
    model, _ = trained
    hyps = ["oak", TEXTS[5], f"{TEXTS[6]}, {TEXTS[7]}"]  # prompts of three lengths: left padding
    targets, hyp_emb = (torch.from_numpy(embedder.encode(t)) for t in (TEXTS[:3], hyps))
    model.generate_in(torch.float32)
    try:
        with torch.no_grad():
            inputs, mask, _ = model.assemble(model.prefixes(targets, hyp_emb), model.corrector_prompts(hyps))
            assert (mask == 0).any()
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            whole = model.lm(inputs_embeds=inputs, attention_mask=mask, position_ids=positions).logits[:, -1]
            k = 2
            cache = model._shared_prefill(inputs, mask, k)
            repeated = {"attention_mask": mask.repeat_interleave(k, 0), "past_key_values": cache,
                        "position_ids": positions.repeat_interleave(k, 0)[:, -1:]}
            last = model.lm(inputs_embeds=inputs.repeat_interleave(k, 0)[:, -1:], **repeated).logits[:, -1]
    finally:
        model.generate_in(generation_dtype())
    torch.testing.assert_close(last, whole.repeat_interleave(k, 0), atol=1e-4, rtol=1e-4)


def test_the_greedy_text_is_reported_token_by_token_as_it_is_written(trained, embedder):
    model, _ = trained
    seen: list[tuple[str, bool]] = []
    rows = model.generate(embedder.encode(TEXTS[:2]), num_return_sequences=3,
                          on_text=lambda text, finished: seen.append((text, finished)))
    assert seen and seen[-1] == (rows[0][0], True)  # the first target's greedy text, complete
    assert [finished for _, finished in seen].count(True) == 1
    texts = [text for text, _ in seen]
    assert all(b.startswith(a.rstrip()) or not a for a, b in zip(texts, texts[1:]))  # it only grows


def test_warm_up_generates_once_and_changes_nothing(trained, embedder):
    model, _ = trained
    targets = embedder.encode(TEXTS[:2])
    before, limit = model.generate(targets), model.max_new_tokens
    model.warm_up()
    assert model.max_new_tokens == limit and model.generate(targets) == before


def test_samples_stop_at_one_and_a_half_times_their_greedy_text():
    import torch

    from gapfill.decoding import SampleLength

    stop = SampleLength(k=3, stop_ids=[0], factor=1.5, extra=4)
    done_at = {}
    for length in range(1, 40):
        ids = torch.full((6, length), 7)  # two groups of three rows; row 0 of each is greedy
        if length >= 4:
            ids[0, 3:] = 0  # group 0's greedy text ends at its 4th token (then padding)
        if length >= 6:
            ids[1, 5:] = 0  # and its first sample at its 6th, before the limit
        done = stop(ids)
        for row in range(6):
            if done[row] and row not in done_at:
                done_at[row] = length
    assert done_at == {0: 10, 1: 10, 2: 10}  # ceil(1.5 * 4) + 4; group 1's greedy never ended
    assert stop.cut.tolist() == [False, False, True, False, False, False]  # only row 2 broke off


def test_a_text_cut_off_goes_back_to_its_last_whole_clause():
    from gapfill.decoding import clipped

    assert clipped("spongillum: a rounded, open-ended part of a leaf; in many") == (
        "spongillum: a rounded, open-ended part of a leaf")
    assert clipped("organ: the body of the digestive system; including the stomach, duod") == (
        "organ: the body of the digestive system; including the stomach")
    assert clipped("worm: any of the flatworms that have a simple tubular body and") is None  # no clause
    assert clipped("worm, any of the flatworms that have a simple tubular body and") is None  # too early


def test_save_and_load_round_trip_keeps_the_model(trained, tiny_backbone, embedder, tmp_path):
    model, _ = trained
    store = ModelStore(tmp_path)
    version = store.save("vec2text", model.state_tensors(), model.manifest("tiny"))
    size = sum(p.stat().st_size for p in store.path("vec2text", version).iterdir())
    assert size < 5_000_000  # only the adapter and projections, never the backbone
    loaded = load_vec2text(store.path("vec2text", version), embedder_id="tiny", dim=model.dim,
                           backbone_path=tiny_backbone)
    assert loaded.max_new_tokens == model.max_new_tokens
    for name, tensor in model.state_tensors().items():
        np.testing.assert_allclose(loaded.state_dict()[name].numpy(), tensor.float().numpy(), atol=1e-3)
    with pytest.raises(ModelFileError, match="embedder"):
        load_vec2text(store.path("vec2text", version), embedder_id="all-MiniLM-L6-v2", backbone_path=tiny_backbone)


def test_sampled_rows_draw_one_token_of_the_nucleus_and_greedy_rows_are_left_alone():
    import torch

    from gapfill.decoding import SampledRows

    torch.manual_seed(0)
    # Row 0 greedy; rows 1-2 sampled. Token 3 holds 95% of the mass at temperature 1: the
    # nucleus of p = 0.9 is token 3 alone. Row 2 is flat over 4 tokens: all four count.
    scores = torch.full((3, 10), -30.0)
    scores[0, 5] = 2.0
    scores[1, 3], scores[1, 4] = 3.0, 0.0
    scores[2, :4] = 1.0
    sampler = SampledRows(torch.tensor([1, 2]), temperature=1.0, top_p=0.9, top_k=5)
    drawn = set()
    for _ in range(40):
        out = sampler(torch.zeros(3, 1, dtype=torch.long), scores)
        assert torch.equal(out[0], scores[0])  # the greedy row is untouched
        for row in (1, 2):
            assert torch.isfinite(out[row]).sum() == 1  # one drawn token, the rest masked
        assert out[1].argmax() == 3
        drawn.add(int(out[2].argmax()))
    assert drawn == {0, 1, 2, 3}


def test_a_stop_request_ends_training_between_steps(tiny_backbone, embedder):
    stop = threading.Event()
    stop.set()
    events = []
    model = drive(train_vec2text(TEXTS, embedder.encode, Vec2TextConfig(**TINY), backbone_path=tiny_backbone,
                                 stop=stop), events.append)
    assert model is not None
    assert not [e for e in events if e.stage in ("inverter", "corrector")]


def test_resume_continues_after_the_last_checkpointed_epoch(tiny_backbone, embedder, tmp_path):
    cfg = Vec2TextConfig(**(TINY | {"epochs": 1, "corrector_documents": 0, "corrector_neighbours": 0}))
    drive(train_vec2text(TEXTS, embedder.encode, cfg, backbone_path=tiny_backbone, checkpoint_dir=tmp_path))
    assert (tmp_path / "checkpoint" / "manifest.json").exists()
    events = []
    cfg2 = Vec2TextConfig(**(TINY | {"epochs": 2, "corrector_documents": 0, "corrector_neighbours": 0}))
    drive(train_vec2text(TEXTS, embedder.encode, cfg2, backbone_path=tiny_backbone, checkpoint_dir=tmp_path,
                         resume=True), events.append)
    steps = [e.step for e in events if e.stage == "inverter"]
    per_epoch = -(-len(select_texts(TEXTS, cfg2)[0]) // cfg2.batch_size)
    assert steps[0] == per_epoch + 1  # the first epoch was not run again


def test_the_corrector_also_learns_to_rewrite_the_nearest_other_document():
    from gapfill.vec2text_train import _neighbour_pairs

    rng = np.random.default_rng(0)
    e = rng.normal(size=(20, 8)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    pairs = _neighbour_pairs(e, lambda idx: e[idx], 6, rng)  # real targets
    assert len(pairs.golds) == 6 == len(set(pairs.golds)) and pairs.targets.shape == (6, 8)
    for gold, hyp in zip(pairs.golds, pairs.hypotheses):
        others = [j for j in range(20) if j != gold]
        assert hyp != gold and hyp == others[int(np.argmax(e[others] @ e[gold]))]


def test_neighbour_pairs_alone_train_the_corrector(tiny_backbone, embedder):
    events = []
    cfg = Vec2TextConfig(**(TINY | {"epochs": 1, "corrector_documents": 0, "corrector_neighbours": 6}))
    drive(train_vec2text(TEXTS, embedder.encode, cfg, backbone_path=tiny_backbone), events.append)
    stages = {e.stage for e in events}
    assert "corrector" in stages and "hypotheses" not in stages
    assert max(e.total for e in events if e.stage == "corrector") == -(-6 // cfg.batch_size)


def test_held_out_selection_is_deterministic_and_disjoint():
    cfg = Vec2TextConfig(max_documents=10, validation_split=0.2)
    train, val = select_texts(TEXTS, cfg)
    assert (train, val) == select_texts(TEXTS, cfg)
    assert len(train) == 8 and len(val) == 2 and not set(train) & set(val)


def test_correction_loop_runs_on_the_model_and_never_gets_worse(trained, embedder):
    model, _ = trained
    target = embedder.encode(TEXTS[5])
    steps = list(invert(model, target, embedder.encode, num_steps=2, sequence_beam_width=2))
    best = [s.best.cosine for s in steps]
    assert steps[0].step == 0 and best == sorted(best)


def _reloaded(model, tiny_backbone, folder):
    """`model` saved to a store in `folder` and loaded back, as the app loads one."""
    store = ModelStore(folder)
    version = store.save("vec2text", model.state_tensors(), model.manifest("tiny"))
    return load_vec2text(store.path("vec2text", version), embedder_id="tiny", dim=model.dim,
                         backbone_path=tiny_backbone)


def test_generating_in_bfloat16_keeps_the_trained_weights_and_refuses_training(
    trained, tiny_backbone, embedder, tmp_path
):
    import torch

    loaded = _reloaded(trained[0], tiny_backbone, tmp_path)
    saved = {k: v.clone() for k, v in loaded.state_tensors(torch.float32).items()}
    loaded.generate_in(torch.bfloat16)
    rows = loaded.generate(embedder.encode(TEXTS[:2]), num_return_sequences=2)
    assert loaded.lm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert all(len(r) == 2 and all(isinstance(t, str) for t in r) for r in rows)
    # Only the frozen backbone is cast: what is trained and saved stays float32, unchanged.
    after = loaded.state_tensors(torch.float32)
    assert all(torch.equal(after[k], saved[k]) for k in saved)
    assert all(p.dtype == torch.float32 for p in loaded.proj.parameters())
    with pytest.raises(RuntimeError, match="train a new model"):
        loaded.loss(torch.from_numpy(embedder.encode(TEXTS[:1])), TEXTS[:1])
    with pytest.raises(ValueError, match="dtype"):
        loaded.generate_in(torch.float16)


def test_texts_cut_off_by_a_length_limit_are_clipped_and_finished_ones_are_not(trained, embedder, monkeypatch):
    from gapfill import decoding

    model = trained[0]
    seen: list[str] = []
    monkeypatch.setattr(decoding, "clipped", lambda text: seen.append(text) or "CLIPPED")
    keep = model.max_new_tokens
    model.max_new_tokens = 2  # the tiny model never ends a text this soon: every row is cut
    try:
        rows = model.generate(embedder.encode(TEXTS[:2]), num_return_sequences=2)
    finally:
        model.max_new_tokens = keep
    assert rows == [["CLIPPED", "CLIPPED"]] * 2 and len(seen) == 4


def test_a_row_is_unfinished_when_its_last_token_is_a_word_or_the_length_rule_cut_it():
    import torch

    from gapfill.decoding import SampleLength, unfinished

    out = torch.tensor([[5, 6, 2, 2], [5, 6, 7, 8], [5, 0, 2, 2], [5, 6, 7, 2]])  # 2: end of text (and padding), 0: newline
    assert unfinished(out, [2, 0]).tolist() == [False, True, False, False]
    rule = SampleLength(k=2, stop_ids=[2, 0])
    rule.cut = torch.tensor([False, False, False, True])  # row 3 was stopped by the rule (then padded)
    assert unfinished(out, [2, 0], rule).tolist() == [False, True, False, True]


def test_the_plain_backbone_is_float32_and_leaves_generation_as_it_was(trained, tiny_backbone, embedder, tmp_path):
    import torch

    loaded = _reloaded(trained[0], tiny_backbone, tmp_path)
    loaded.generate_in(torch.bfloat16)
    targets = embedder.encode(TEXTS[:3])
    before = loaded.generate(targets)
    weights = {k: v.clone() for k, v in loaded.lm.state_dict().items() if "lora" not in k}
    with loaded.backbone_only():
        assert loaded.lm.get_input_embeddings().weight.dtype == torch.float32
    assert loaded.lm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert all(torch.equal(loaded.lm.state_dict()[k], w) for k, w in weights.items())  # no drift
    assert loaded.generate(targets) == before


def test_generation_precision_follows_the_cpu_unless_told(monkeypatch):
    import torch

    from gapfill.backbone import generation_dtype

    monkeypatch.setenv("GAPFILL_GENERATION_DTYPE", "float32")
    assert generation_dtype() == torch.float32
    monkeypatch.setenv("GAPFILL_GENERATION_DTYPE", "bfloat16")
    assert generation_dtype() == torch.bfloat16
    monkeypatch.setenv("GAPFILL_GENERATION_DTYPE", "half")
    with pytest.raises(ValueError, match="GAPFILL_GENERATION_DTYPE"):
        generation_dtype()
    monkeypatch.delenv("GAPFILL_GENERATION_DTYPE")
    assert generation_dtype() in (torch.float32, torch.bfloat16)
