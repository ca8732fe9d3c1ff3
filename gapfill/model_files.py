"""A saved model on disk: safetensors weights plus a JSON manifest, each written atomically.

Why this shape (house style, rule 7): safetensors can hold nothing but tensors, so loading a
model a user hands us never runs code, unlike `torch.load`/pickle. Every file is written to a
temporary name, fsynced and renamed, so a crash leaves either the old file or the new one, never
half of either. A model folder is complete exactly when it has a manifest, because the manifest
is written last and carries the sha256 of the weights it describes. Versions of a kind and the
pointer to the current one live in `gapfill.storage`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
REQUIRED_KEYS = ("kind", "sha256")
REDO = "restore a backup version or save the model again"


class ModelFileError(ValueError):
    """A model folder is missing, incomplete, corrupt, or does not fit the current setup."""


class ModelMismatchError(ModelFileError):
    """The model is intact but was made for another setup (see `load_model(expect=...)`)."""


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable; POSIX only (Windows cannot open directories)."""
    if os.name == "posix":
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never part.

    The temp file lives in the same folder because `os.replace` is only atomic within one
    filesystem.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def json_safe(obj: Any) -> Any:
    """Replace NaN and ±inf by None (recursively; tuples become lists).

    Strict JSON has no NaN, and a NaN in a manifest (a diverged validation loss, say) would make
    the file unreadable by other tools, so it is stored as `null`: "no valid number".
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Atomically write `obj` as strict JSON; non-finite floats are stored as null."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def _prepare_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detach, move to cpu and make contiguous; clone tensors that share memory with an earlier
    one, because safetensors refuses shared storage (tied weights)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise ValueError(f"tensors must map str names to torch.Tensor; got {name!r}: "
                             f"{type(t).__name__}")
        t = t.detach().cpu().contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def save_model(folder: Path | str, tensors: dict[str, torch.Tensor], manifest: dict) -> None:
    """Write `weights.safetensors`, then `manifest.json` with format_version, saved_at and sha256.

    `manifest` must name the model's `kind`. An old manifest is removed first, so while the new
    weights are written the folder does not claim to be complete.
    """
    folder = Path(folder)
    if not isinstance(manifest.get("kind"), str) or not manifest["kind"]:
        raise ValueError("manifest needs a non-empty 'kind' string, e.g. 'pumap'")
    data = st_save(_prepare_tensors(tensors))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_FILE).unlink(missing_ok=True)
    atomic_write_bytes(folder / WEIGHTS_FILE, data)
    full = {
        **manifest,
        "format_version": FORMAT_VERSION,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    atomic_write_json(folder / MANIFEST_FILE, full)
    logger.info("saved %s model (%.1f MB) to %s", manifest["kind"], len(data) / 1e6, folder)


def read_manifest(folder: Path | str) -> dict:
    """Read and validate `manifest.json` without touching the (possibly large) weights."""
    path = Path(folder) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(
            f"{path} is missing: {folder} is not a model folder, or its save was interrupted; "
            "pick another folder or version, or save the model again"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path} is corrupt ({e}); {REDO}") from None
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{path} holds {type(manifest).__name__}, not an object; {REDO}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path} has no valid format_version ({version!r}); {REDO}")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path} has format_version {version}, but this GapFill reads "
                             f"up to {FORMAT_VERSION}; upgrade GapFill")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelFileError(f"{path} lacks required keys {missing}; {REDO}")
    return manifest


def check_expect(manifest: dict, expect: dict, where: Path | str = "") -> None:
    """Raise ModelMismatchError unless every key in `expect` equals the manifest's value."""
    for key, wanted in expect.items():
        wanted = json_safe(wanted)  # compare as it would have been stored (tuples are lists)
        found = manifest.get(key)
        if found != wanted:
            raise ModelMismatchError(
                f"the {manifest.get('kind', '?')} model in {where} was made for {key}={found!r}, "
                f"but the current setup has {key}={wanted!r}; retrain it, or load a version "
                f"made for {key}={wanted!r}"
            )


def load_model(
    folder: Path | str, *, expect: dict | None = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """Load (tensors, manifest); check `expect` first, then the sha256, then parse safetensors.

    Checking `expect` before reading weights makes a mismatch cheap and gives the useful message
    ("made for 768-d, current embedder gives 384-d") even when the weights are also damaged.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    check_expect(manifest, expect or {}, folder)
    path = folder / WEIGHTS_FILE
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"cannot read {path} ({e}); {REDO}") from None
    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise ModelFileError(f"{path} does not match the sha256 in its manifest (truncated or "
                             f"overwritten); {REDO}")
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise ModelFileError(f"{path} is not a valid safetensors file ({e}); {REDO}") from None
    return tensors, manifest
