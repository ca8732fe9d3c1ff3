"""The pieces of one batched `generate` call that writes a greedy text and its samples.

transformers' `generate` takes logits processors, stopping criteria and a streamer; these are
ours, by duck typing (its classes are only interfaces, and not subclassing them keeps
transformers out of this module's import): `SampledRows` samples some rows of a greedy batch,
`SampleLength` stops samples that ramble, `FirstRowText` hands the first row's text over as
it is written, and `flatten_head` keeps the output layer's product two-dimensional.
Used by `gapfill.vec2text`.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class SampledRows:
    """Samples some rows of a greedy batch itself and leaves the others greedy: for each
    sampled row, temperature, its `top_k` best tokens, the nucleus (top-p) of those, one draw,
    and every other token masked so that greedy decoding picks the drawn one. The same
    distribution as transformers' sampling with these settings (its default top_k is 50).

    transformers sorts the whole vocabulary for top-p and draws from all of it, 49,152 tokens
    a row at every step: measured, a fifth of a decoding step in bfloat16 (19 ms of about 90)."""

    def __init__(self, rows: torch.Tensor, temperature: float = 0.8, top_p: float = 0.9, top_k: int = 50) -> None:
        self.rows, self.temperature, self.top_p, self.top_k = rows, temperature, top_p, top_k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        sub = scores[self.rows].float() / self.temperature  # (S, V)
        top, idx = sub.topk(min(self.top_k, sub.shape[-1]), dim=-1)  # best first
        probs = top.softmax(-1)
        # The nucleus: the best tokens until their mass reaches top_p (the best always counts).
        probs = probs * ((probs.cumsum(-1) - probs) < self.top_p)
        token = idx.gather(1, torch.multinomial(probs, 1))  # (S, 1)
        scores = scores.clone()
        scores[self.rows] = torch.full_like(sub, -math.inf).scatter(1, token, 0.0).to(scores.dtype)
        return scores


class SampleLength:
    """Stops the sampled rows of a group once they are `factor` times as long as the group's
    greedy row (its first), plus `extra` tokens, after that one has finished. A batch decodes
    until its longest row ends, and now and then a sample rambles on to several times the
    greedy text's length: measured on the shipped model, one such sample made a step 4.9 s
    instead of 1.6 s. The greedy text is the model's best guess of the text's length, and a
    candidate far longer is rarely the closest to the target. (A stopping criterion by duck
    typing, as `SampledRows` is a logits processor.)"""

    def __init__(self, k: int, stop_ids: list[int], factor: float = 1.5, extra: int = 4) -> None:
        self.k, self.factor, self.extra = k, factor, extra
        self.stop_ids = torch.tensor(stop_ids)
        self.limit: torch.Tensor | None = None  # (G,) generated length at which a group stops
        self.cut: torch.Tensor | None = None  # (rows,) stopped here before writing a stop token
        self._ended: torch.Tensor | None = None  # (rows,) ended, one way or the other

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        rows, length = input_ids.shape  # only generated tokens: the inputs are embeddings
        groups = rows // self.k
        if self.limit is None:
            self.limit = torch.full((groups,), torch.iinfo(torch.long).max)
            self.cut, self._ended = torch.zeros(rows, dtype=torch.bool), torch.zeros(rows, dtype=torch.bool)
        last = input_ids[:, -1] if length else torch.full((rows,), -1)
        self._ended |= torch.isin(last, self.stop_ids)
        greedy_ended = self._ended[:: self.k] & (self.limit == torch.iinfo(torch.long).max)
        self.limit[greedy_ended] = math.ceil(self.factor * length) + self.extra
        stop = (length >= self.limit).repeat_interleave(self.k)
        self.cut |= stop & ~self._ended
        self._ended |= stop
        return stop


def unfinished(out: torch.Tensor, stop_ids: list[int], length_rule: SampleLength | None = None) -> torch.Tensor:
    """Which rows of `generate`'s output (rows, T) broke off instead of writing a stop token:
    cut by `max_new_tokens` (a word, not a stop token, last) or by the samples' length rule.
    (The padding after a finished row is the end-of-text token, so it reads as a stop.)"""
    cut = ~torch.isin(out[:, -1], torch.tensor(stop_ids)) if out.shape[1] else torch.zeros(len(out), dtype=torch.bool)
    if length_rule is not None and length_rule.cut is not None:
        cut |= length_rule.cut
    return cut


def clipped(text: str) -> str | None:
    """A text the length limit cut off mid-way, back to its last whole clause: up to its last
    ';' or ',' beyond its first third (a text that shows where it stops reads better than one
    that breaks off, "...part of a leaf; in many"). None when it has no such clause: the caller
    keeps the text as it is."""
    cut = max(text.rfind(";"), text.rfind(","))
    if cut <= len(text) // 3:
        return None
    return text[:cut].rstrip()


class FirstRowText:
    """Hands the first row's text to `callback(text, finished)` as it is decoded, token by
    token: the greedy text of the first target (a streamer for transformers' `generate`, by
    duck typing). The other rows are sampled alternatives; nobody watches them being written."""

    def __init__(self, tokenizer, stop_ids: list[int], callback, single_line: bool) -> None:
        self.tokenizer, self.stop_ids, self.callback, self.single_line = tokenizer, set(stop_ids), callback, single_line
        self.ids: list[int] = []
        self.finished = False

    def put(self, value: torch.Tensor) -> None:
        if value.ndim != 1 or self.finished:  # the prompt (empty: the inputs are vectors), or done
            return
        token = int(value[0])
        if token in self.stop_ids:
            self.finished = True
        else:
            self.ids.append(token)
        self.callback(self.text(), self.finished)

    def end(self) -> None:
        if not self.finished:
            self.finished = True
            self.callback(self.text(), True)

    def text(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not self.finished:
            text = text.rstrip("\ufffd")  # a character whose bytes are not all decoded yet
        return (text.split("\n", 1)[0] if self.single_line else text).strip()


def flatten_head(head: nn.Linear) -> None:
    """Make the output layer multiply a 2D view of its input. On the first decoding step
    transformers hands it the last position of every row, a non-contiguous (B, 1, H) slice,
    and torch's matmul then expands the (V, H) weight to (B, H, V) and copies it: 40 ms in
    float32, 0.7 s in bfloat16, measured, against 3 ms for the same product in 2D."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.reshape(-1, x.shape[-1]), head.weight, head.bias).view(*x.shape[:-1], -1)

    head.forward = forward
