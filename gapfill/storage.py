"""Saved models on disk: safetensors weights plus a JSON manifest, written atomically, versioned.

Why this shape (house style, rule 7): safetensors can hold nothing but tensors, so loading a
model a user hands us never runs code, unlike `torch.load`/pickle. Every file is written to a
temporary name, fsynced and renamed, so a crash leaves either the old file or the new one, never
half of either. A model folder is complete exactly when it has a manifest, because the manifest
is written last and carries the sha256 of the weights it describes.

`ModelStore` keeps one folder per kind and version (`root/<kind>/v0001/`, ...) and a `CURRENT`
pointer; older versions stay as backups that `set_current` can roll back to.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
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
POINTER_FILE = "CURRENT"
REQUIRED_KEYS = ("kind", "sha256")
_PARTIAL_PREFIX = ".partial-"  # in-progress version folders: `.partial-<pid>-<hex>`
_KIND_RE = re.compile(r"[A-Za-z0-9_-]+")
_VERSION_RE = re.compile(r"v?(\d+)")
_FOLDER_RE = re.compile(r"v(\d{4,})")
_REDO = "restore a backup version or save the model again"


class ModelFileError(ValueError):
    """A model folder is missing, incomplete, corrupt, or does not fit the current setup."""


class ModelMismatchError(ModelFileError):
    """The model is intact but was made for another setup (see `load_model(expect=...)`)."""


def _fsync_dir(folder: Path) -> None:
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
    _fsync_dir(path.parent)


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
        raise ModelFileError(f"{path} is corrupt ({e}); {_REDO}") from None
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{path} holds {type(manifest).__name__}, not an object; {_REDO}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path} has no valid format_version ({version!r}); {_REDO}")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path} has format_version {version}, but this GapFill reads "
                             f"up to {FORMAT_VERSION}; upgrade GapFill")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelFileError(f"{path} lacks required keys {missing}; {_REDO}")
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
        raise ModelFileError(f"cannot read {path} ({e}); {_REDO}") from None
    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise ModelFileError(f"{path} does not match the sha256 in its manifest (truncated or "
                             f"overwritten); {_REDO}")
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise ModelFileError(f"{path} is not a valid safetensors file ({e}); {_REDO}") from None
    return tensors, manifest


@dataclass(frozen=True)
class VersionInfo:
    """One version folder of a kind. `complete` is False when its manifest is missing or bad;
    `problem` then says why."""

    version: str
    path: Path
    saved_at: str | None
    metrics: dict = field(default_factory=dict)
    is_current: bool = False
    complete: bool = True
    problem: str | None = None


def _version_id(version: str | int) -> str:
    """Accept 'v0003', 'v3', '3' or 3; return the folder name 'v0003'."""
    m = _VERSION_RE.fullmatch(str(version).strip())
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"version must look like 'v0003' (or 3), got {version!r}")
    return f"v{int(m.group(1)):04d}"


class ModelStore:
    """Versioned model folders under `root` (env GAPFILL_MODELS, else ./models)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root if root is not None else os.environ.get("GAPFILL_MODELS", "models"))

    def _kind_dir(self, kind: str) -> Path:
        if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
            raise ValueError(f"kind must use only letters, digits, '_' and '-' (e.g. 'pumap'); "
                             f"got {kind!r}")
        return self.root / kind

    def path(self, kind: str, version: str | int) -> Path:
        return self._kind_dir(kind) / _version_id(version)

    def _numbers(self, kind: str) -> list[int]:
        folder = self._kind_dir(kind)
        if not folder.is_dir():
            return []
        found = (_FOLDER_RE.fullmatch(p.name) for p in folder.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def _sweep_partials(self, kind_dir: Path) -> None:
        """Delete `.partial-*` folders left by a save whose process died (e.g. was killed)."""
        if os.name != "posix" or not kind_dir.is_dir():
            return
        for p in kind_dir.glob(f"{_PARTIAL_PREFIX}*"):
            pid = p.name[len(_PARTIAL_PREFIX):].split("-")[0]
            try:
                os.kill(int(pid), 0)  # signal 0 only asks whether the process exists
            except ProcessLookupError:
                logger.warning("removing %s, left by an interrupted save", p)
                shutil.rmtree(p, ignore_errors=True)
            except (ValueError, OSError):  # not our naming, or another user's live process
                pass

    def save(self, kind: str, tensors: dict[str, torch.Tensor], manifest: dict) -> str:
        """Save a new version and make it current; returns its id (e.g. 'v0003').

        The version is written in a `.partial-*` folder and renamed into place, so a crash
        leaves no half version; the pointer moves only after the rename.
        """
        kind_dir = self._kind_dir(kind)
        if manifest.get("kind", kind) != kind:
            raise ValueError(f"manifest kind {manifest['kind']!r} is not the store kind {kind!r}")
        kind_dir.mkdir(parents=True, exist_ok=True)
        self._sweep_partials(kind_dir)
        tmp = kind_dir / f"{_PARTIAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            number = max(self._numbers(kind), default=0) + 1
            save_model(tmp, tensors, {**manifest, "kind": kind, "version": _version_id(number)})
            while True:
                try:
                    os.rename(tmp, kind_dir / _version_id(number))
                    break
                except OSError:  # another process took this number: renumber and retry
                    if not (kind_dir / _version_id(number)).exists():
                        raise
                    number = max(self._numbers(kind), default=0) + 1
                    renamed = {**read_manifest(tmp), "version": _version_id(number)}
                    atomic_write_json(tmp / MANIFEST_FILE, renamed)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(kind_dir)
        version = _version_id(number)
        self.set_current(kind, version)
        return version

    def versions(self, kind: str) -> list[VersionInfo]:
        """All version folders, oldest first; incomplete ones are listed with complete=False."""
        try:
            current = self.current(kind)
        except ModelFileError:  # a corrupt pointer must not hide the versions to repair it with
            current = None
        infos = []
        for n in self._numbers(kind):
            version, path = _version_id(n), self.path(kind, n)
            try:
                m = read_manifest(path)
            except ModelFileError as e:
                logger.debug("version %s of %r is incomplete: %s", version, kind, e)
                infos.append(VersionInfo(version, path, None, {}, version == current,
                                         complete=False, problem=str(e)))
                continue
            infos.append(VersionInfo(version, path, m.get("saved_at"), m.get("metrics") or {},
                                     version == current))
        return infos

    def _complete(self, kind: str) -> list[str]:
        return [v.version for v in self.versions(kind) if v.complete]

    def current(self, kind: str) -> str | None:
        """The version CURRENT names; without a pointer, the newest complete version (a save
        that crashed between renaming its folder and writing the pointer); None if no versions."""
        pointer = self._kind_dir(kind) / POINTER_FILE
        try:
            text = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            done = [n for n in self._numbers(kind) if (self.path(kind, n) / MANIFEST_FILE).exists()]
            return _version_id(done[-1]) if done else None
        try:
            return _version_id(text)
        except ValueError:
            raise ModelFileError(f"{pointer} is corrupt ({text[:40]!r}); choose a version "
                                 f"with set_current({kind!r}, ...)") from None

    def set_current(self, kind: str, version: str | int) -> None:
        """Point CURRENT at `version` (roll back or forward); it must be a complete version."""
        version = _version_id(version)
        available = self._complete(kind)
        if version not in available:
            raise ModelFileError(f"{kind!r} has no complete version {version}; "
                                 f"available: {', '.join(available) or 'none'}")
        atomic_write_bytes(self._kind_dir(kind) / POINTER_FILE, f"{version}\n".encode())
        logger.info("current %s model is now %s", kind, version)

    def load(
        self, kind: str, version: str | int | None = None, *, expect: dict | None = None
    ) -> tuple[dict[str, torch.Tensor], dict]:
        """Load a version (default: the current one) as (tensors, manifest)."""
        chosen = self.current(kind) if version is None else _version_id(version)
        if chosen is None:
            raise ModelFileError(f"no saved {kind!r} model under {self.root}; train one first")
        try:
            return load_model(self.path(kind, chosen), expect=expect)
        except ModelMismatchError:
            raise
        except ModelFileError as e:
            others = [v for v in self._complete(kind) if v != chosen]
            hint = (f"roll back with set_current({kind!r}, {others[-1]!r}); complete versions: "
                    f"{', '.join(others)}" if others else "no version to roll back to; retrain")
            raise ModelFileError(f"version {chosen} of {kind!r} is broken: {e}. {hint}") from None
