"""Versioned models on disk: one folder per kind and version, and a pointer to the current one.

`ModelStore` keeps `root/<kind>/v0001/`, ... (each a model folder of `gapfill.model_files`:
safetensors plus a manifest, written atomically) and a `CURRENT` pointer; older versions stay
as backups that `set_current` can roll back to. A version is saved into a hidden partial folder
and renamed into place, so a crash never leaves a half-saved version.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gapfill.model_files import (
    MANIFEST_FILE,
    ModelFileError,
    ModelMismatchError,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    load_model,
    read_manifest,
    save_model,
)

logger = logging.getLogger(__name__)

POINTER_FILE = "CURRENT"
_PARTIAL_PREFIX = ".partial-"  # in-progress version folders: `.partial-<pid>-<hex>`
_KIND_RE = re.compile(r"[A-Za-z0-9_-]+")
_VERSION_RE = re.compile(r"v?(\d+)")
_FOLDER_RE = re.compile(r"v(\d{4,})")


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
        fsync_dir(kind_dir)
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
