"""Benchmark: our PyTorch Parametric UMAP against umap-learn on the built-in corpus.

    python bench/pumap.py --n 5000 --seed 0

Each side runs in a fresh process (cold: imports, any JIT, graph, fit), then fits again in
that process (warm); one side at a time, so the two never share the 2 cores. Last line of
output: one JSON object of figures (see the keys at the bottom of `main`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# Python puts this script's folder first on the path, where bench/gapfill.py would stand
# in for the gapfill package: the repository root goes there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

T_START = time.perf_counter()  # before the heavy imports: the cold clock starts here


def load_split(n: int, seed: int):
    import numpy as np

    from gapfill.wordnet import load_wordnet
    from gapfill.embedder import Embedder

    corpus = load_wordnet(n=n, seed=seed)
    x = Embedder().encode(list(corpus.texts))
    perm = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.9 * len(x))
    return x[perm[:cut]], x[perm[cut:]]


def knn_mean_inverse(y_query, y_train, x_train, k: int = 10):
    """The simple inverse baseline: mean embedding of the k nearest training points in 2D."""
    import numpy as np

    d = ((y_query[:, None, :] - y_train[None, :, :]) ** 2).sum(-1)
    idx = np.argpartition(d, k, axis=1)[:, :k]
    mean = x_train[idx].mean(1)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


def worker(side: str, n: int, seed: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(2)
    x_train, x_held = load_split(n, seed)  # cached embeddings: not part of either fit
    t_data = time.perf_counter() - T_START
    from gapfill.map_metrics import trustworthiness

    if side == "ours":
        from gapfill.map_config import ParametricUMAPConfig
        from gapfill.pumap import train_map

        def fit():
            # The bench's own 90/10 split is the held-out set: fit on all 90%, as umap-learn does.
            return train_map(x_train, ParametricUMAPConfig(seed=seed, validation_split=0.0))

        transform = lambda m, x: m.encode(x)  # noqa: E731
        inverse = lambda m, y: m.decode(y)  # noqa: E731
    else:
        import umap

        def fit():
            return umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=seed).fit(x_train)

        transform = lambda m, x: m.transform(x)  # noqa: E731
        inverse = lambda m, y: m.inverse_transform(y)  # noqa: E731

    model = fit()
    fit_cold = time.perf_counter() - T_START - t_data
    t = time.perf_counter()
    model = fit()
    fit_warm = time.perf_counter() - t
    # Both sides: the training documents' positions from the fit (umap-learn's `embedding_`,
    # our layout), and held-out documents placed among them by `transform` / `encode`.
    y_train = model.anchors_2d if side == "ours" else model.embedding_
    # Each is timed on later calls, the median of five: the first includes one-off costs
    # (umap-learn's numba compiles its transform for ~50 s when its cache is cold), reported
    # apart, and one call of a few milliseconds on this shared VM varies by half.
    t = time.perf_counter()
    transform(model, x_held)
    transform_first_s = time.perf_counter() - t
    times = []
    for _ in range(5):
        t = time.perf_counter()
        y_held = transform(model, x_held)
        times.append(time.perf_counter() - t)
    transform_s = float(np.median(times))
    inverse(model, y_held)
    t = time.perf_counter()
    x_inv = inverse(model, y_held)
    inverse_s = time.perf_counter() - t
    x_inv = x_inv / np.linalg.norm(x_inv, axis=1, keepdims=True)
    knn = knn_mean_inverse(y_held, y_train, x_train)
    return {
        "fit_cold_s": fit_cold,
        "fit_warm_s": fit_warm,
        "trust": trustworthiness(x_train, y_train, 15),
        "trust_heldout": trustworthiness(x_held, y_held, 15, x_train, y_train),
        "transform_s": transform_s,
        "transform_first_s": transform_first_s,
        "inverse_cos": float((x_inv * x_held).sum(1).mean()),
        "inverse_s": inverse_s,
        "knn_mean_cos": float((knn * x_held).sum(1).mean()),
        "n_train": len(x_train),
        "n_heldout": len(x_held),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=["ours", "ref"])
    parser.add_argument("--only", choices=["ours"], help="skip umap-learn (for quick tuning)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.seed)))
        return
    load_split(args.n, args.seed)  # fill the embedding cache once, outside both timings
    runs = {}
    for side in ("ours",) if args.only else ("ours", "ref"):
        cmd = [sys.executable, __file__, "--worker", side, "--n", str(args.n), "--seed", str(args.seed)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        runs[side] = json.loads(out.strip().splitlines()[-1])
        print(side, runs[side], file=sys.stderr)
    if args.only:
        return
    ours, ref = runs["ours"], runs["ref"]
    result = {
        "fit_cold_s": round(ours["fit_cold_s"], 2),
        "ref_fit_cold_s": round(ref["fit_cold_s"], 2),
        "fit_warm_s": round(ours["fit_warm_s"], 2),
        "ref_fit_warm_s": round(ref["fit_warm_s"], 2),
        "trust": round(ours["trust"], 4),
        "ref_trust": round(ref["trust"], 4),
        "trust_heldout": round(ours["trust_heldout"], 4),
        "ref_trust_heldout": round(ref["trust_heldout"], 4),
        "transform_s": round(ours["transform_s"], 4),
        "ref_transform_s": round(ref["transform_s"], 4),
        "ref_transform_first_s": round(ref["transform_first_s"], 2),
        "transform_speedup": round(ref["transform_s"] / ours["transform_s"], 1),
        "decoder_cos": round(ours["inverse_cos"], 4),
        "ref_inverse_cos": round(ref["inverse_cos"], 4),
        "knn_mean_cos": round(ours["knn_mean_cos"], 4),
        "inverse_s": round(ours["inverse_s"], 5),
        "ref_inverse_s": round(ref["inverse_s"], 3),
        "inverse_speedup": round(ref["inverse_s"] / ours["inverse_s"], 1),
        "n_train": ours["n_train"],
        "n_heldout": ours["n_heldout"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
