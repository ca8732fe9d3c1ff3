"""Benchmark: the shipped Vec2Text model against retrieval on held-out WordNet documents.

    python bench/vec2text.py --seed 0 [--n-eval 50] [--n-long 10] [--n-decoded 100]

Held-out documents are those of the built-in corpus that `select_texts` never gave to
training. For each: the inverter's first hypothesis (step 0), the correction loop with
`num_steps=5, sequence_beam_width=4` (and 20 steps on `--n-long` of them), the retrieval
baseline (cosine of the nearest training document), BLEU against the true text, and times:
`first_step_s` until step 0's hypotheses are all scored, `first_hypothesis_s` until its
greedy text is complete (the app shows it as it is written, and then), `fill_s` per fill.
Then the same on targets decoded from the map, decode(encode(e)), the kind a gap click makes.
Last line: one JSON object of figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections import Counter

import numpy as np
from pathlib import Path

# Python puts this script's folder first on the path, where bench/gapfill.py would stand
# in for the gapfill package: the repository root goes there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])


def bleu(hypotheses: list[str], references: list[str], n: int = 4) -> float:
    """Corpus BLEU-4 with brevity penalty (Papineni et al. 2002), lower-cased words, add-one
    smoothing of the higher orders (Lin & Och 2004) so short texts do not zero it."""
    matched, total = [0] * n, [0] * n
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references):
        h, r = hyp.lower().split(), ref.lower().split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for k in range(1, n + 1):
            hc = Counter(tuple(h[i : i + k]) for i in range(len(h) - k + 1))
            rc = Counter(tuple(r[i : i + k]) for i in range(len(r) - k + 1))
            matched[k - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            total[k - 1] += max(len(h) - k + 1, 0)
    logs = [math.log((matched[k] + (k > 0)) / (total[k] + (k > 0))) if total[k] else -math.inf for k in range(n)]
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    return float(bp * math.exp(sum(logs) / n)) if matched[0] else 0.0


def run_inversions(model, targets, embed, num_steps, width, bank, bank_emb):
    """(step-0 texts and cosines, final texts and cosines, first-step seconds, total seconds).
    Each loop gets the model's `seed_documents` texts of `bank` nearest its target, as a fill
    gets the corpus's; step 0's figures are those of the inverter's own hypotheses."""
    from gapfill.correction import invert, nearest_texts

    out = {"step0": [], "step0_cos": [], "final": [], "final_cos": [], "first_s": [], "fill_s": [], "best_step": [],
           "greedy_s": []}
    for target in targets:
        t = time.perf_counter()
        greedy_done: list[float] = []  # when step 0's greedy text was complete (the app shows it then)

        def on_text(step: int, text: str, finished: bool) -> None:
            if step == 0 and finished and not greedy_done:
                greedy_done.append(time.perf_counter() - t)

        seeds = nearest_texts(bank, bank_emb, target, model.config.seed_documents)
        gen = invert(model, target, embed, num_steps=num_steps, sequence_beam_width=width, on_text=on_text, seeds=seeds)
        steps = []
        while True:
            try:
                steps.append(next(gen))
            except StopIteration as stop:
                result = stop.value
                break
            if len(steps) == 1:
                out["first_s"].append(time.perf_counter() - t)
                out["greedy_s"].append(greedy_done[0] if greedy_done else out["first_s"][-1])
        out["fill_s"].append(time.perf_counter() - t)
        out["step0"].append(steps[0].best.text)  # the inverter's best; never a seed
        out["step0_cos"].append(steps[0].best.cosine)
        out["final"].append(result.best.text)
        out["final_cos"].append(result.best.cosine)
        out["best_step"].append(result.best_step)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-eval", type=int, default=50, help="held-out documents inverted with 5 steps")
    parser.add_argument("--n-long", type=int, default=10, help="of those, how many also get 20 steps")
    parser.add_argument("--n-decoded", type=int, default=100, help="map-decoded targets inverted")
    parser.add_argument("--models", type=Path, default=None,
                        help="a model store (e.g. a `--save-to` folder of train-vec2text); default: the shipped models")
    parser.add_argument("--seed-documents", type=int, default=None,
                        help="nearest training texts given to each loop to rewrite (default: the model's seed_documents)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    from gapfill.engine import MAP_KIND, SHIPPED_MODELS, Engine
    from gapfill.storage import ModelStore
    from gapfill.vec2text_train import select_texts

    engine = Engine(store=ModelStore(args.models or SHIPPED_MODELS))
    from gapfill.events import drive

    drive(engine.load_builtin())
    engine.load_map()
    model = engine.load_vec2text()
    embed = engine.embedder.encode
    if args.seed_documents is not None:
        model.config = dataclasses.replace(model.config, seed_documents=args.seed_documents)
    cfg = model.config

    train, val = select_texts(list(engine.corpus.texts), cfg)
    seen = set(train) | set(val)
    texts = list(engine.corpus.texts)
    held = [i for i, t in enumerate(texts) if t not in seen]
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(held, size=min(args.n_eval, len(held)), replace=False)
    e_train = embed(train)
    targets = engine.embeddings[pick]
    truth = [texts[i] for i in pick]

    # The loops' seeds come from the training texts, the retrieval baseline's own pool.
    runs = run_inversions(model, targets, embed, cfg.num_steps, cfg.sequence_beam_width, train, e_train)
    long_runs = run_inversions(model, targets[: args.n_long], embed, 20, cfg.sequence_beam_width, train, e_train)
    retrieval = (targets @ e_train.T).max(1)

    pick_d = rng.choice(held, size=min(args.n_decoded, len(held)), replace=False)
    decoded = engine.map.decode(engine.map.encode(engine.embeddings[pick_d]))
    runs_d = run_inversions(model, decoded, embed, cfg.num_steps, cfg.sequence_beam_width, train, e_train)
    retrieval_d = (decoded @ e_train.T).max(1)

    for i in range(min(5, len(truth))):
        print(json.dumps({"target": truth[i], "step0": runs["step0"][i], "final": runs["final"][i],
                          "cos_step0": round(runs["step0_cos"][i], 3), "cos_final": round(runs["final_cos"][i], 3)}),
              file=sys.stderr)
    result = {
        "cos_step0": round(float(np.mean(runs["step0_cos"])), 4),
        "cos_corrected": round(float(np.mean(runs["final_cos"])), 4),
        "cos_corrected_20": round(float(np.mean(long_runs["final_cos"])), 4),
        "retrieval_cos": round(float(retrieval.mean()), 4),
        "bleu": round(bleu(runs["final"], truth), 4),
        "bleu_step0": round(bleu(runs["step0"], truth), 4),
        "fill_s": round(float(np.mean(runs["fill_s"])), 2),
        "fill_20_s": round(float(np.mean(long_runs["fill_s"])), 2),
        "first_step_s": round(float(np.mean(runs["first_s"])), 2),
        "first_hypothesis_s": round(float(np.mean(runs["greedy_s"])), 2),
        "best_step": round(float(np.mean(runs["best_step"])), 2),
        "train_s": model.metrics.get("train_s"),
        "train_samples_per_s": model.metrics.get("samples_per_s"),
        "decoded_cos": round(float(np.mean(runs_d["final_cos"])), 4),
        "decoded_step0_cos": round(float(np.mean(runs_d["step0_cos"])), 4),
        "decoded_retrieval_cos": round(float(retrieval_d.mean()), 4),
        "n_eval": len(pick), "n_long": min(args.n_long, len(pick)), "n_decoded": len(pick_d),
        "n_train": len(train), "seed_documents": cfg.seed_documents,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
