"""Benchmark: filling the built-in corpus's largest gaps with the shipped models.

    python bench/gapfill.py --seed 0 [--k 20] [--rankings target_aware cosine] [--seed-documents N] [--models DIR]

For each of the k largest gaps: the fill (decode the centre, Vec2Text's correction loop, embed
the text and place it on the map), its landing distance from the centre as a share of the
map's diagonal, and the retrieval baseline's landing distance: the corpus document nearest to
the decoded target in embedding space, which lands where that document is. A fill is novel
when its highest cosine to any corpus document is below 0.95. Each ranking of the loop's
candidates (`target_aware`: cosine minus a penalty on the landing distance; `cosine`: cosine
alone) runs on the same gaps. Last line: one JSON object of figures, the target-aware
ranking's unprefixed, the other's prefixed with `cosine_`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from pathlib import Path

# Python puts this script's folder first on the path, where bench/gapfill.py would stand
# in for the gapfill package: the repository root goes there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

NOVEL_BELOW = 0.95


def run(engine, gaps, target_aware: bool, seed_documents: int | None) -> dict:
    from gapfill.events import drive

    fills, seconds = [], []
    for gap in gaps:
        t = time.perf_counter()
        fills.append(drive(engine.fill(gap.x, gap.y, target_aware=target_aware, seed_documents=seed_documents)))
        seconds.append(time.perf_counter() - t)
    return {
        "landing": float(np.mean([f.distance for f in fills])),
        "novelty_frac": float(np.mean([f.nearest_cosine < NOVEL_BELOW for f in fills])),
        "cos": float(np.mean([f.cosine for f in fills])),
        "best_step": float(np.mean([f.best_step for f in fills])),
        "steps": float(np.mean([f.steps for f in fills])),
        "fill_s": float(np.mean(seconds)),
        "fills": fills,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the built-in corpus sample")
    parser.add_argument("--k", type=int, default=20, help="largest gaps to fill")
    parser.add_argument("--rankings", nargs="+", choices=["target_aware", "cosine"], default=["target_aware", "cosine"])
    parser.add_argument("--seed-documents", type=int, default=None,
                        help="nearest corpus documents handed to the corrector (default: the model's)")
    parser.add_argument("--models", type=Path, default=None, help="a model store to measure (default: the shipped one)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    from gapfill.engine import SHIPPED_MODELS, Engine
    from gapfill.events import drive
    from gapfill.storage import ModelStore

    engine = Engine(store=ModelStore(args.models or SHIPPED_MODELS))
    drive(engine.load_builtin(seed=args.seed))
    engine.load_map()
    engine.load_vec2text()
    gaps = engine.gaps(args.k)
    bounds = engine.map.bounds
    diagonal = float(np.linalg.norm(bounds[1] - bounds[0]))
    targets = engine.map.decode(np.array([[g.x, g.y] for g in gaps], dtype=np.float32))
    nearest = (targets @ engine.embeddings.T).argmax(1)
    centres = np.array([[g.x, g.y] for g in gaps])
    retrieval = np.linalg.norm(engine.positions[nearest] - centres, axis=1) / diagonal

    runs = {name: run(engine, gaps, name == "target_aware", args.seed_documents) for name in args.rankings}
    first = runs[args.rankings[0]]
    for gap, fill in list(zip(gaps, first["fills"]))[:5]:
        print(json.dumps({"gap": [round(gap.x, 3), round(gap.y, 3)], "radius": round(gap.radius / diagonal, 4),
                          "text": fill.text, "landing": round(fill.distance, 4), "cosine": round(fill.cosine, 3),
                          "nearest_cosine": round(fill.nearest_cosine, 3)}), file=sys.stderr)
    result: dict[str, object] = {
        "retrieval_landing": round(float(retrieval.mean()), 4),
        "gap_radius": round(float(np.mean([g.radius for g in gaps])) / diagonal, 4),
        "n_gaps": len(gaps),
        "seed_documents": engine.vec2text.config.seed_documents if args.seed_documents is None else args.seed_documents,
    }
    for name, figures in runs.items():
        prefix = "" if name == "target_aware" else f"{name}_"
        result |= {f"{prefix}{k}": round(v, 4) for k, v in figures.items() if k != "fills"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
