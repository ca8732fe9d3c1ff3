"""Vec2Text on SmolLM2: an inverter (embedding → text) and a corrector, one small adapter.

After Morris et al. 2023, "Text Embeddings Reveal (Almost) As Much As Text", rebuilt for a
decoder-only backbone (the `vec2text` package supports only T5, see shared/notes/models.md):
- the inverter turns the target embedding into `num_prefix` input vectors that the backbone
  reads before writing the text;
- the corrector reads vectors for the target embedding, the hypothesis's embedding and their
  difference (as `CorrectorEncoderModel` does), then the hypothesis text, and writes a better
  text.
Both share the frozen backbone and one LoRA adapter; what is trained (the adapter and the four
projections) is a few MB. Training lives in `gapfill/vec2text_train.py`; the correction loop
in `gapfill/correction.py`.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from gapfill import decoding
from gapfill.vec2text_config import Vec2TextConfig

log = logging.getLogger(__name__)

PROJECTIONS = ("inverter", "target", "hypothesis", "difference")
# Between the hypothesis and the text the corrector writes: a line break reads naturally to
# an instruction-tuned model and is one token.
SEPARATOR = "\n"


class Projection(nn.Module):
    """An embedding (D) → `n` input vectors of the backbone (n, H). The inner width is D:
    no bottleneck narrower than the embedding, no more weights than that needs."""

    def __init__(self, dim: int, hidden: int, n: int) -> None:
        super().__init__()
        self.n, self.hidden = n, hidden
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, n * hidden))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e).view(len(e), self.n, self.hidden)  # (B, n, H)


class Vec2Text(nn.Module):
    """Inverter and corrector over one backbone with a LoRA adapter."""

    def __init__(self, config: Vec2TextConfig, backbone, tokenizer, dim: int) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model

        self.config, self.tokenizer, self.dim = config, tokenizer, dim
        torch.manual_seed(config.seed)
        hidden = backbone.config.hidden_size
        self.proj = nn.ModuleDict({name: Projection(dim, hidden, config.num_prefix) for name in PROJECTIONS})
        lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, lora_dropout=0.0,
                          target_modules=["q_proj", "v_proj"])
        self.lm = get_peft_model(backbone, lora)
        self.max_new_tokens = 64  # set from the training texts' lengths
        # Trained on one-line texts, a line break means the model has finished its text and
        # started chatting (an instruction-tuned backbone's habit): stop there, it saves time.
        self.single_line = True
        self._merged = False
        self._merge_lock = threading.Lock()  # the app shares one loaded model between sessions
        # The precision of the frozen backbone while generating (`generate_in`); training
        # always runs in float32.
        self.generation_dtype = torch.float32
        decoding.flatten_head(self.lm.get_output_embeddings())
        self.metrics: dict[str, float] = {}
        self.sep_ids = tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"]

    @property
    def embedding_dim(self) -> int:
        return self.dim

    # ---- inputs ---------------------------------------------------------------------------

    def prefixes(self, targets: torch.Tensor, hyp_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Input vectors for the inverter (targets only) or the corrector. (B, P, H)"""
        if hyp_embeddings is None:
            return self.proj["inverter"](targets)
        parts = (self.proj["target"](targets), self.proj["hypothesis"](hyp_embeddings),
                 self.proj["difference"](targets - hyp_embeddings))
        return torch.cat(parts, dim=1)

    def assemble(
        self,
        prefixes: torch.Tensor,
        prompts: list[list[int]],
        answers: list[list[int]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """[prefix vectors, prompt tokens, answer tokens + eos] per row, padded: on the right
        for training (labels on the answer only), on the left for generation (no answer).
        Returns inputs_embeds (B, T, H), attention_mask (B, T), labels (B, T) or None."""
        embed = self.lm.get_input_embeddings()
        prefixes = prefixes.to(embed.weight.dtype)  # the projections stay float32
        eos = self.tokenizer.eos_token_id
        rows, label_rows = [], []
        for i, prompt in enumerate(prompts):
            answer = [] if answers is None else answers[i] + [eos]
            ids = torch.tensor(prompt + answer, dtype=torch.long)
            rows.append(torch.cat([prefixes[i], embed(ids)], dim=0))  # (P + T_i, H)
            label_rows.append([-100] * (len(prefixes[i]) + len(prompt)) + answer)
        width = max(len(r) for r in rows)
        hidden = prefixes.shape[-1]
        inputs = prefixes.new_zeros(len(rows), width, hidden)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, label_rows)):
            span = slice(0, len(r)) if answers is not None else slice(width - len(r), width)
            inputs[i, span], mask[i, span] = r, 1
            labels[i, span] = torch.tensor(lab)
        return inputs, mask, (labels if answers is not None else None)

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        limit = self.config.max_length
        return [ids[:limit] for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def corrector_prompts(self, hyp_texts: list[str]) -> list[list[int]]:
        return [ids + self.sep_ids for ids in self.encode_texts(hyp_texts)]

    # ---- training loss --------------------------------------------------------------------

    def loss(self, targets: torch.Tensor, texts: list[str], hyp_embeddings: torch.Tensor | None = None,
             hyp_texts: list[str] | None = None) -> torch.Tensor:
        """Teacher-forced loss of writing `texts` from `targets` (inverter), or from targets,
        hypothesis embeddings and hypothesis texts (corrector)."""
        self._for_training()
        prompts = [[] for _ in texts] if hyp_texts is None else self.corrector_prompts(hyp_texts)
        inputs, mask, labels = self.assemble(self.prefixes(targets, hyp_embeddings), prompts, self.encode_texts(texts))
        return self.lm(inputs_embeds=inputs, attention_mask=mask, labels=labels).loss

    # ---- generation: the two verbs the correction loop uses -------------------------------

    @torch.no_grad()
    def _generate(self, prefixes: torch.Tensor, prompts: list[list[int]], k: int, on_text=None) -> list[list[str]]:
        """k texts per row: the greedy one, then k - 1 samples (nucleus, p = 0.9), from one
        batched greedy call in which `decoding.SampledRows` draws the samples. `on_text(text,
        finished)` is called with the first row's greedy text as each token is decoded.

        Beam search would give the k best continuations, but on a CPU it costs several times
        what greedy decoding of the same batch does (measured here: 48-102 s against 8 s for
        four beams of one row); the correction loop only needs varied candidates, because it
        ranks them itself by re-embedding them. One call for greedy and sampled texts halves
        the decoding steps of two: at these batch sizes a step costs nearly the same for 4
        rows as for 8."""
        self.for_inference()
        inputs, mask, _ = self.assemble(prefixes, prompts)
        stops = [self.tokenizer.eos_token_id]
        if self.single_line:
            stops += [ids[0] for ids in self.tokenizer(["\n", "\n\n"], add_special_tokens=False)["input_ids"]]
        common = {"attention_mask": mask, "max_new_tokens": self.max_new_tokens, "no_repeat_ngram_size": 3,
                  "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": stops}
        if on_text is not None:
            common["streamer"] = decoding.FirstRowText(self.tokenizer, stops, on_text, self.single_line)
        # The corrector's prompts only (the inverter's, its prefix vectors, are too short to
        # gain), and for every k, so that a greedy text does not depend on k.
        if any(prompts):
            common["past_key_values"] = self._shared_prefill(inputs, mask, k)
        length_rule = None
        if k == 1:
            out = self.lm.generate(inputs_embeds=inputs, do_sample=False, **common)
        else:
            torch.manual_seed(self.config.seed)  # the same point gives the same candidates
            from transformers import LogitsProcessorList

            # Rows come k per input, the first of each greedy.
            common["attention_mask"] = mask.repeat_interleave(k, dim=0)
            rows = torch.arange(len(prompts) * k)
            sampler = decoding.SampledRows(rows[rows % k != 0])
            length_rule = decoding.SampleLength(k, stops)
            out = self.lm.generate(inputs_embeds=inputs.repeat_interleave(k, dim=0), do_sample=False,
                                   logits_processor=LogitsProcessorList([sampler]),
                                   stopping_criteria=[length_rule], **common)
        texts = self._clean(self.tokenizer.batch_decode(out, skip_special_tokens=True))
        cut = decoding.unfinished(out, stops, length_rule)
        texts = [(decoding.clipped(t) or t) if c else t for t, c in zip(texts, cut.tolist())]
        return [texts[i * k : (i + 1) * k] for i in range(len(prompts))]

    @torch.no_grad()
    def _shared_prefill(self, inputs: torch.Tensor, mask: torch.Tensor, k: int):
        """The attention cache of each row's prompt but its last position, computed once and
        repeated for the row's k texts (generation then reads the last position itself): the
        k texts share a prompt, and the prompt was a quarter of a correction call at k = 4."""
        from transformers import DynamicCache

        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding, as generation counts
        cache = DynamicCache(config=self.lm.config)
        self.lm(inputs_embeds=inputs[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(k)
        return cache

    def _clean(self, texts: list[str]) -> list[str]:
        return [(t.split("\n", 1)[0] if self.single_line else t).strip() for t in texts]

    def generate_in(self, dtype: torch.dtype) -> None:
        """Generate with the frozen backbone in `dtype` from the next generation on (bfloat16:
        about 1.5 x quicker where the CPU has it, see `backbone.generation_dtype`). Only for a
        finished model: once its backbone is cast, `loss` refuses to train it."""
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"generation dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        self.generation_dtype = dtype

    def for_inference(self) -> None:
        """Fold the LoRA weights into the backbone for generation (an unmerged adapter costs
        an extra matrix product per layer and token), then cast the backbone to
        `generation_dtype`; `loss` unfolds them again."""
        self.eval()
        with self._merge_lock:
            if not self._merged:
                self.lm.merge_adapter()  # in float32: the sum is exact before any rounding
                self._merged = True
            self._cast_backbone(self.generation_dtype)

    def _for_training(self) -> None:
        with self._merge_lock:
            if self._backbone_dtype() != torch.float32:
                raise RuntimeError(
                    f"this model's backbone was cast to {self._backbone_dtype()} for generation and "
                    "cannot be trained further; train a new model (train_vec2text)"
                )
            if self._merged:
                self.lm.unmerge_adapter()
                self._merged = False

    @contextlib.contextmanager
    def backbone_only(self) -> Iterator[None]:
        """The plain backbone, adapter switched off (e.g. for perplexity), in float32; the
        model is ready to generate again afterwards. Casting bfloat16 to float32 is exact and
        merging back rounds to the same bfloat16 weights, so nothing drifts."""
        with self._merge_lock:
            self._cast_backbone(torch.float32)
            if self._merged:
                self.lm.unmerge_adapter()
                self._merged = False
        try:
            with self.lm.disable_adapter():
                yield
        finally:
            self.for_inference()

    def _backbone_dtype(self) -> torch.dtype:
        return self.lm.get_input_embeddings().weight.dtype

    def _cast_backbone(self, dtype: torch.dtype) -> None:
        """The frozen backbone's weights to `dtype` in place; the trained adapter and
        projections stay float32 (they are what is saved). Ties survive: a shared Parameter
        is cast once."""
        if self._backbone_dtype() == dtype:
            return
        for p in self.lm.parameters():
            if not p.requires_grad:
                p.data = p.data.to(dtype)

    def warm_up(self) -> None:
        """One two-token generation, so that the first real one does not pay for transformers'
        lazy imports and first-call set-up (about 1.5 s of the app's first click, measured)."""
        keep = self.max_new_tokens
        self.max_new_tokens = 2
        try:
            self.generate(np.full((1, self.dim), self.dim**-0.5, dtype=np.float32), num_return_sequences=2)
        finally:
            self.max_new_tokens = keep

    def generate(self, targets: np.ndarray, *, num_return_sequences: int = 1, on_text=None) -> list[list[str]]:
        """Step 0: hypotheses for each target embedding (B, D). `on_text(text, finished)`
        watches the first target's greedy text being written."""
        t = torch.from_numpy(np.asarray(targets, dtype=np.float32))
        return self._generate(self.prefixes(t), [[] for _ in range(len(t))], num_return_sequences, on_text)

    def correct(self, targets: np.ndarray, hyp_embeddings: np.ndarray, hyp_texts: list[str], *,
                num_return_sequences: int = 1, on_text=None) -> list[list[str]]:
        """One correction of each hypothesis towards its target (`on_text`: as `generate`)."""
        t = torch.from_numpy(np.asarray(targets, dtype=np.float32))
        h = torch.from_numpy(np.asarray(hyp_embeddings, dtype=np.float32))
        return self._generate(self.prefixes(t, h), self.corrector_prompts(hyp_texts), num_return_sequences, on_text)

    # ---- persistence: only what was trained -----------------------------------------------

    def state_tensors(self, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
        """The trained weights only; half precision by default, which halves the file and
        changes no generated token we have seen (they load back into fp32)."""
        return {k: v.detach().to(dtype).clone() for k, v in self.named_parameters() if v.requires_grad}

    def load_trained(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = {k for k, v in self.named_parameters() if v.requires_grad}
        missing = sorted(expected - set(tensors))
        if missing:
            raise ValueError(f"saved Vec2Text weights lack {len(missing)} tensors (e.g. {missing[0]}); "
                             "the file was made with another num_prefix or lora_rank")
        self.load_state_dict({k: tensors[k].float() for k in expected}, strict=False)
        self.eval()

    def manifest(self, embedder_id: str) -> dict[str, object]:
        return {"kind": "vec2text", "config": self.config.to_dict(), "backbone": self.config.backbone,
                "embedder": embedder_id, "embedding_dim": self.dim, "max_new_tokens": self.max_new_tokens, "single_line": self.single_line,
                "metrics": self.metrics}
