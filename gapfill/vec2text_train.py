"""Training Vec2Text: the inverter, then the corrector on the inverter's own hypotheses and on
neighbouring training texts (rewrite the nearest other text into this one).

A generator of `Progress` events in three stages ("inverter", "hypotheses", "corrector"),
with validation loss, per-epoch checkpoints, resume, early stopping and a stop request
honoured between steps. Gap targets are decoded from the map and lie off the manifold of real
sentence embeddings, so part of every batch trains on such targets: map-decoded ones when the
caller passes the map's round trip as `off_manifold`, and noisy ones.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gapfill.backbone import generation_dtype, load_backbone
from gapfill.events import Progress, Stopwatch
from gapfill.model_files import load_model, save_model
from gapfill.vec2text import Vec2Text
from gapfill.vec2text_config import Vec2TextConfig

log = logging.getLogger(__name__)

Embed = Callable[[list[str]], np.ndarray]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class _Targets:
    """Training targets per document: the real embedding, or with probability
    `off_manifold_fraction` a map-decoded or a noisy version of it."""

    def __init__(self, e: np.ndarray, decoded: np.ndarray | None, cfg: Vec2TextConfig, rng: np.random.Generator):
        self.e, self.decoded, self.cfg, self.rng = e, decoded, cfg, rng

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        out = self.e[idx].copy()
        off = self.rng.random(len(idx)) < self.cfg.off_manifold_fraction
        noisy = off & ((self.decoded is None) | (self.rng.random(len(idx)) < 0.5))
        if self.decoded is not None:
            out[off & ~noisy] = self.decoded[idx[off & ~noisy]]
        direction = _unit(self.rng.normal(size=(int(noisy.sum()), out.shape[1])))
        out[noisy] = _unit(out[noisy] + self.cfg.noise * direction)
        return out


@dataclass(frozen=True)
class _NeighbourPairs:
    golds: np.ndarray  # (N,) the texts to write
    targets: np.ndarray  # (N, D) their targets, from the same mix as the inverter's
    hypotheses: np.ndarray  # (N,) for each, the other training text nearest that target


def _neighbour_pairs(
    e: np.ndarray, targets: Callable[[np.ndarray], np.ndarray], n: int, rng: np.random.Generator
) -> _NeighbourPairs:
    """`n` training texts, their targets, and the training text nearest each target other than
    the text itself: the pairs that teach the corrector to rewrite a close document."""
    golds = np.sort(rng.choice(len(e), n, replace=False)) if n and len(e) > 1 else np.zeros(0, dtype=np.int64)
    t = targets(golds)
    sims = t @ e.T  # (N, n_train)
    sims[np.arange(len(golds)), golds] = -np.inf
    return _NeighbourPairs(golds, t, sims.argmax(1) if len(golds) else golds)


def _optimizer(model: Vec2Text, cfg: Vec2TextConfig, total_steps: int, start_step: int = 0):
    lora = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("proj.")]
    proj = [p for p in model.proj.parameters()]
    opt = torch.optim.AdamW(
        [{"params": lora, "lr": cfg.learning_rate}, {"params": proj, "lr": cfg.projection_learning_rate}],
        weight_decay=cfg.weight_decay,
    )

    def factor(step: int) -> float:  # linear warm-up, then linear decay to zero
        step += start_step  # a resumed run picks the schedule up where it stopped
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - cfg.warmup_steps))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _run_stage(stage, model, cfg, n_train, batch_loss, val_loss, rng, stop, ckpt, start_epoch):
    """Epochs of minibatch AdamW over `n_train` examples; yields one event per step."""
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    opt, sched = _optimizer(model, cfg, total, start_epoch * steps_per_epoch)
    clock = Stopwatch(total - start_epoch * steps_per_epoch)
    best, since_best, done = math.inf, 0, 0
    for epoch in range(start_epoch, cfg.epochs):
        order = rng.permutation(n_train)
        model.train()
        for s in range(steps_per_epoch):
            if stop is not None and stop.is_set():
                log.info("%s: stopped on request at epoch %d step %d", stage, epoch + 1, s)
                return False
            loss = batch_loss(order[s * cfg.batch_size : (s + 1) * cfg.batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            sched.step()
            done += 1
            step = epoch * steps_per_epoch + s + 1
            metrics = {
                "lr": sched.get_last_lr()[0],
                "samples_per_s": done * cfg.batch_size / clock.elapsed(),
                "eta_s": clock.eta(done),
                "epoch": float(epoch + 1),
            }
            if s == steps_per_epoch - 1:
                model.eval()
                with torch.no_grad():
                    metrics["val_loss"] = val_loss()
                best, since_best = (metrics["val_loss"], 0) if metrics["val_loss"] < best - 1e-4 else (best, since_best + 1)
            yield Progress(step, total, loss.item(), metrics, stage=stage)
        model.metrics[f"{stage}_samples_per_s"] = round(metrics["samples_per_s"], 2)
        if "val_loss" in metrics:
            model.metrics[f"{stage}_val_loss"] = round(metrics["val_loss"], 4)
        if ckpt is not None:
            ckpt(stage, epoch + 1)
        if cfg.early_stopping_patience and since_best >= cfg.early_stopping_patience:
            log.info("%s: early stop after epoch %d", stage, epoch + 1)
            break
    return True


def select_texts(texts: list[str], cfg: Vec2TextConfig) -> tuple[list[str], list[str]]:
    """The (training, validation) texts that `train_vec2text` uses: distinct non-empty texts,
    a seeded sample of `max_documents` of them, `validation_split` held out. Public so that
    benchmarks can measure on texts never seen in training."""
    texts = list(dict.fromkeys(t for t in texts if t.strip()))
    if len(texts) < 2:
        raise ValueError(f"Vec2Text needs at least 2 distinct non-empty texts, got {len(texts)}")
    if len(texts) > cfg.max_documents:
        rng = np.random.default_rng(cfg.seed)
        texts = [texts[i] for i in np.sort(rng.choice(len(texts), cfg.max_documents, replace=False))]
    n_val = max(1, int(len(texts) * cfg.validation_split)) if cfg.validation_split else 0
    return texts[n_val:], texts[:n_val]


def train_vec2text(
    texts: list[str],
    embed: Embed,
    config: Vec2TextConfig | None = None,
    *,
    embedder_id: str = "",
    off_manifold: Callable[[np.ndarray], np.ndarray] | None = None,
    backbone_path: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    stop: threading.Event | None = None,
) -> Generator[Progress, None, Vec2Text]:
    """Train inverter and corrector on `texts`; `embed` must be the embedder whose vectors
    will be inverted. Returns the trained model (also when stopped early)."""
    started = time.perf_counter()
    cfg = config or Vec2TextConfig()
    rng = np.random.default_rng(cfg.seed + 1)
    train_texts, val_texts = select_texts(texts, cfg)
    yield Progress(0, 1, stage="embed")
    e = _unit(embed(train_texts))
    e_val = _unit(embed(val_texts)) if val_texts else e[:0]
    targets = _Targets(e, None if off_manifold is None else _unit(off_manifold(e)), cfg, rng)

    backbone, tokenizer = load_backbone(backbone_path)
    model = Vec2Text(cfg, backbone, tokenizer, e.shape[1])
    lengths = [len(ids) for ids in model.encode_texts(train_texts)]
    # Long enough for nearly every training text; the rare longest ones would make every
    # unfinished generation run that long.
    model.max_new_tokens = int(min(cfg.max_length, np.percentile(lengths, 99) + 4))
    model.single_line = not any("\n" in t for t in train_texts)

    done_stage, done_epoch = "", 0
    ckpt_folder = None if checkpoint_dir is None else Path(checkpoint_dir) / "checkpoint"
    if resume and ckpt_folder is not None and (ckpt_folder / "manifest.json").exists():
        tensors, manifest = load_model(ckpt_folder, expect={"kind": "vec2text-checkpoint"})
        model.load_trained(tensors)
        done_stage, done_epoch = manifest["stage"], int(manifest["epoch"])
        log.info("resuming after %s epoch %d", done_stage, done_epoch)

    def checkpoint(stage: str, epoch: int) -> None:
        if ckpt_folder is not None:
            save_model(ckpt_folder, model.state_tensors(torch.float32), {"kind": "vec2text-checkpoint", "stage": stage,
                                                             "epoch": epoch, "config": cfg.to_dict()})

    def val_inverter() -> float:
        if not val_texts:
            return float("nan")
        losses = [model.loss(torch.from_numpy(e_val[i : i + 16]), val_texts[i : i + 16]).item()
                  for i in range(0, len(val_texts), 16)]
        return float(np.mean(losses))

    if done_stage != "corrector":
        start = done_epoch if done_stage == "inverter" else 0
        finished = yield from _run_stage(
            "inverter", model, cfg, len(train_texts),
            lambda b: model.loss(torch.from_numpy(targets(b)), [train_texts[i] for i in b]),
            val_inverter, rng, stop, checkpoint, start,
        )
        if not finished:
            return _finished(model)

    if cfg.corrector_documents or cfg.corrector_neighbours:
        # The corrector learns to fix the inverter's real mistakes: its hypotheses for a sample
        # of training texts, from the same mix of targets the inverter saw.
        pick = np.sort(rng.choice(len(train_texts), min(cfg.corrector_documents, len(train_texts)), replace=False))
        t_hyp = targets(pick)
        model.eval()
        hyps: list[str] = []
        batch = 16
        for i in range(0, len(pick), batch):
            if stop is not None and stop.is_set():
                return _finished(model)
            hyps += [h[0] for h in model.generate(t_hyp[i : i + batch])]
            yield Progress(min(i + batch, len(pick)), len(pick), stage="hypotheses")
        h_emb = _unit(embed(hyps)) if hyps else e[:0]
        gold = [train_texts[i] for i in pick]
        n_cv = min(len(pick) // 10, 32)
        # And to rewrite a real document close to the target, which is what a fill's
        # seed_documents hand it: the nearest other training text, with its own embedding.
        near = _neighbour_pairs(e, targets, min(cfg.corrector_neighbours, len(train_texts)), rng)
        t_hyp = np.concatenate([t_hyp, near.targets])
        h_emb = np.concatenate([h_emb, e[near.hypotheses]])
        hyps += [train_texts[j] for j in near.hypotheses]
        gold += [train_texts[i] for i in near.golds]

        def corrector_loss(b: np.ndarray) -> torch.Tensor:
            b = b + n_cv
            return model.loss(torch.from_numpy(t_hyp[b]), [gold[i] for i in b],
                              torch.from_numpy(h_emb[b]), [hyps[i] for i in b])

        def val_corrector() -> float:  # on the inverter's hypotheses: the loss a plain fill sees
            if not n_cv:
                return float("nan")
            return model.loss(torch.from_numpy(t_hyp[:n_cv]), gold[:n_cv], torch.from_numpy(h_emb[:n_cv]),
                              hyps[:n_cv]).item()

        start = done_epoch if done_stage == "corrector" else 0
        yield from _run_stage("corrector", model, cfg, len(gold) - n_cv, corrector_loss, val_corrector,
                              rng, stop, checkpoint, start)
    model.eval()
    elapsed = time.perf_counter() - started
    model.metrics |= {"train_s": round(elapsed, 1), "n_train": len(train_texts)}
    return _finished(model)


def _finished(model: Vec2Text) -> Vec2Text:
    """A model done training (or stopped) generates in the CPU's quickest precision."""
    model.eval()
    model.generate_in(generation_dtype())
    return model


def load_vec2text(folder: Path, *, embedder_id: str | None = None, dim: int | None = None,
                  backbone_path: Path | None = None) -> Vec2Text:
    """A saved Vec2Text model on the shared backbone; the manifest is checked (embedder,
    dimension, backbone) before any weight is read."""
    expect: dict[str, object] = {"kind": "vec2text"}
    if embedder_id is not None:
        expect["embedder"] = embedder_id
    if dim is not None:
        expect["embedding_dim"] = dim
    tensors, manifest = load_model(folder, expect=expect)
    cfg = Vec2TextConfig.from_dict(manifest["config"])
    backbone, tokenizer = load_backbone(backbone_path)
    model = Vec2Text(cfg, backbone, tokenizer, int(manifest["embedding_dim"]))
    model.load_trained(tensors)
    model.max_new_tokens = int(manifest["max_new_tokens"])
    model.single_line = bool(manifest.get("single_line", True))
    model.metrics = dict(manifest.get("metrics") or {})
    model.generate_in(generation_dtype())
    model.for_inference()  # fold the adapter in and cast now, not on the first fill (~0.3 s)
    return model
