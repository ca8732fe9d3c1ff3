"""`gapfill`: the command line over the engine (train, fill, evaluate, serve), with progress bars."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

from gapfill.events import Progress

if TYPE_CHECKING:  # imported where used: `gapfill --help` needs no torch
    from gapfill.engine import Engine


def _render(gen: Generator[Progress, None, object], label: str):
    """Drive a generator of events with one tqdm bar per stage; return its result."""
    from tqdm import tqdm

    bar, stage = None, None
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if bar is None or event.stage != stage or event.total != bar.total:
                if bar is not None:
                    bar.close()
                stage = event.stage
                bar = tqdm(total=event.total, desc=f"{label} {stage}".strip(), unit="step", dynamic_ncols=True)
            bar.n = event.step
            post = {} if event.loss is None else {"loss": f"{event.loss:.4f}"}
            post |= {k: f"{v:.4g}" for k, v in event.metrics.items() if k in ("val_loss", "lr", "samples_per_s")}
            bar.set_postfix(post, refresh=False)
            bar.refresh()
    finally:
        if bar is not None:
            bar.close()


def _add_config_options(parser: argparse.ArgumentParser, config_cls, prefix: str = "") -> None:
    """One option per config field, with the field's help sentence."""
    for f in dataclasses.fields(config_cls):
        default = f.default
        kind = type(default)
        if isinstance(default, tuple):
            parser.add_argument(f"--{prefix}{f.name.replace('_', '-')}", dest=f.name, type=int, nargs="+",
                                default=None, help=f.metadata.get("help", ""))
        else:
            parser.add_argument(f"--{prefix}{f.name.replace('_', '-')}", dest=f.name, type=kind,
                                default=None, help=f"{f.metadata.get('help', '')} (default: {default})")


def _count(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number from `minimum` to `maximum` (if given), so that a bad
    value fails at once, before the engine spends seconds loading."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be {maximum} or less, got {value}")
        return value

    return parse


def _finite(text: str) -> float:
    """An argparse type: a finite number (float() alone takes 'nan' and 'inf')."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _config(config_cls, args: argparse.Namespace):
    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in vars(args).items() if k in names and v is not None})


def _engine_with_corpus(args: argparse.Namespace):
    from gapfill.engine import Engine

    engine = Engine()
    if getattr(args, "csv", None):
        _render(engine.load_csv(Path(args.csv), text_column=args.text_column), "embedding")
    else:
        _render(engine.load_builtin(n=args.builtin_n, seed=args.seed_corpus), "embedding")
    return engine


def _corpus_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", help="a CSV corpus (default: the built-in WordNet corpus)")
    parser.add_argument("--text-column", help="the CSV's text column, when it cannot be guessed")
    parser.add_argument("--builtin-n", type=_count(1), default=None, help="documents of the built-in corpus (default: all)")
    parser.add_argument("--seed-corpus", type=int, default=0, help="seed of the built-in corpus sample")


def cmd_train_map(args: argparse.Namespace) -> int:
    from gapfill.map_config import ParametricUMAPConfig
    from gapfill.storage import ModelStore

    config = _config(ParametricUMAPConfig, args)  # a bad setting fails before the corpus loads
    engine = _engine_with_corpus(args)
    model = _render(engine.train_map(config), "map")
    version = engine.save_map(ModelStore(args.save_to) if args.save_to else None)
    print(json.dumps({"version": version, "metrics": model.metrics}))
    return 0


def _engine_ready(args: argparse.Namespace):
    """An engine with the corpus, its saved (or shipped) map and Vec2Text model."""
    engine = _engine_with_corpus(args)
    if engine.load_map_for_corpus() is None:
        raise RuntimeError("no saved map for this corpus: run `gapfill train-map` first")
    engine.load_vec2text()
    return engine


def _render_fill(engine: Engine, x: float, y: float, **kw) -> object:
    """Drive a fill with a bar over its correction steps: the text being written in front of
    it, the best cosine and landing distance so far behind it, each step's best text above."""
    from tqdm import tqdm

    with tqdm(desc="fill", unit="step", dynamic_ncols=True) as bar:

        def writing(step: int, text: str, finished: bool) -> None:
            bar.set_description_str(f"step {step}: {text[-60:]}" + ("" if finished else "…"))

        gen = engine.fill(x, y, on_text=writing, **kw)
        while True:
            try:
                step = next(gen)
            except StopIteration as stop:
                return stop.value
            bar.set_postfix({"cos": f"{step.best.cosine:.3f}", "distance": f"{step.best.distance:.3f}"}, refresh=False)
            bar.update(1)
            tqdm.write(f"step {step.step}: {step.best.text}", file=sys.stderr)  # stdout: the JSON


def cmd_fill(args: argparse.Namespace) -> int:
    if args.gaps is None and (args.x is None or args.y is None):
        raise ValueError("give a point (X Y) or --gaps K to fill the K largest gaps")
    engine = _engine_ready(args)
    kw = {"num_steps": args.num_steps, "sequence_beam_width": args.sequence_beam_width,
          "target_aware": not args.cosine_only, "seed_documents": args.seed_documents}
    points = [(args.x, args.y)] if args.gaps is None else [(g.x, g.y) for g in engine.gaps(args.gaps)]
    results = [_render_fill(engine, x, y, **kw) for x, y in points]
    if args.save_csv:
        engine.fills_frame().to_csv(args.save_csv, index=False)
    print(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
    return 0


def cmd_gaps(args: argparse.Namespace) -> int:
    engine = _engine_with_corpus(args)
    if engine.load_map_for_corpus() is None:
        raise RuntimeError("no saved map for this corpus: run `gapfill train-map` first")
    print(json.dumps([dataclasses.asdict(g) for g in engine.gaps(args.k)], indent=1))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    engine = _engine_ready(args)
    print(json.dumps(engine.evaluate(n_fills=args.fills), indent=1, default=float))
    return 0


def cmd_train_vec2text(args: argparse.Namespace) -> int:
    from gapfill.engine import MAP_KIND
    from gapfill.storage import ModelStore
    from gapfill.vec2text_config import Vec2TextConfig

    config = _config(Vec2TextConfig, args)  # a bad setting fails before the corpus loads
    engine = _engine_with_corpus(args)
    _render(engine.ensure_map(), "map")
    model = _render(engine.train_vec2text(config, checkpoint_dir=args.checkpoint_dir,
                                          resume=args.resume), "vec2text")
    store = ModelStore(args.save_to) if args.save_to else None
    version = engine.save_vec2text(store)
    if args.save_to and store.current(MAP_KIND) is None:  # ship the map beside it: the pair is complete
        engine.save_map(store)
    print(json.dumps({"version": version, "metrics": model.metrics}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gapfill.api import PREFIX, create_app, serving_token

    # Beyond loopback a token is required; without $GAPFILL_API_TOKEN this raises ValueError
    # saying what to set, and `main` exits with it before anything listens.
    token = serving_token(args.host)
    host = f"[{args.host}]" if ":" in args.host else args.host
    auth = "; requests that change the server need 'Authorization: Bearer $GAPFILL_API_TOKEN'" if token else ""
    print(f"gapfill: serving the API on http://{host}:{args.port}{PREFIX}/ (OpenAPI docs on /docs){auth}",
          file=sys.stderr, flush=True)
    # One process: the engine and its running job live in memory, so no --workers.
    uvicorn.run(create_app(token=token), host=args.host, port=args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    from gapfill.filling import SETTING_BOUNDS
    from gapfill.map_config import ParametricUMAPConfig
    from gapfill.vec2text_config import Vec2TextConfig

    parser = argparse.ArgumentParser(prog="gapfill", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-map", help="train a Parametric UMAP map of a corpus and save it")
    _corpus_options(p)
    _add_config_options(p, ParametricUMAPConfig)

    p.add_argument("--save-to", type=Path, default=None,
                   help="a model store folder (e.g. assets/models to ship a map); default: the user's store")
    p.set_defaults(func=cmd_train_map)

    p = sub.add_parser("gaps", help="list the largest empty regions of the corpus's saved map")
    _corpus_options(p)
    p.add_argument("-k", type=_count(1), default=10, help="how many gaps (default: 10)")
    p.set_defaults(func=cmd_gaps)

    p = sub.add_parser("fill", help="write the text for a point of the map, or for its largest gaps")
    _corpus_options(p)
    p.add_argument("x", type=_finite, nargs="?", help="the point's x on the map")
    p.add_argument("y", type=_finite, nargs="?", help="the point's y on the map")
    p.add_argument("--gaps", type=_count(1), default=None, metavar="K", help="fill the K largest gaps instead of a point")
    for name, text in (("num_steps", "correction steps"), ("sequence_beam_width", "hypotheses kept per step"),
                       ("seed_documents", "nearest corpus documents given to the corrector to rewrite")):
        least, most = SETTING_BOUNDS[name]
        p.add_argument(f"--{name.replace('_', '-')}", type=_count(least, most), default=None,
                       help=f"{text}, {least}-{most} (default: the model's)")
    p.add_argument("--cosine-only", action="store_true", help="rank texts by cosine alone, not also by where they land")
    p.add_argument("--save-csv", type=Path, default=None, help="also write the fills to this CSV file")
    p.set_defaults(func=cmd_fill)

    p = sub.add_parser("evaluate", help="the quality metrics of the map and of fills of its largest gaps")
    _corpus_options(p)
    p.add_argument("--fills", type=_count(0), default=3, help="largest gaps to fill for the text metrics (default: 3)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train-vec2text", help="train Vec2Text on a corpus (and its map) and save it")
    _corpus_options(p)
    _add_config_options(p, Vec2TextConfig)
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="folder for per-epoch checkpoints")
    p.add_argument("--resume", action="store_true", help="resume from the checkpoint in --checkpoint-dir")
    p.add_argument("--save-to", type=Path, default=None,
                   help="a model store folder (e.g. assets/models to ship a model); default: the user's store")
    p.set_defaults(func=cmd_train_vec2text)

    p = sub.add_parser("serve", help="serve the REST API (the engine configured from GAPFILL_* variables)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only); any other address "
                        "requires a token in GAPFILL_API_TOKEN on every request that changes the server")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    p.set_defaults(func=cmd_serve)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, RuntimeError) as err:
        print(f"gapfill: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
