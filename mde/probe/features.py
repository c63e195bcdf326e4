"""Clip statistics of every (model, layer) for every clip: each file decoded once, each result cached.

For each audio file, the (model, layer) targets whose statistics are not cached yet are computed from one
decoding of the file: it is read at its own sample rate (stereo when some model takes stereo, mono
otherwise) and the samples are handed to each model's :meth:`~mde.runtime.extractor.Model.embed`, which
resamples them to its rate; clips shorter than a model's window are zero-padded to one window, as
``mde embed`` does. A file that cannot be decoded or embedded is skipped and reported, for every target,
so that all targets are compared on the same clips.

Cache layout (one small ``.npz`` per clip and target, written atomically: a killed run resumes at the
next clip, and a rerun embeds nothing that is cached)::

    <cache>/<model file's SHA-256, 16 hex digits>/<layer>/<clip key>.npz    mean, max (float32 (dim,)), frames

The clip key is a SHA-256 (32 hex digits) of the audio file's resolved path, size in bytes and
modification time in nanoseconds, so an edited or replaced file is embedded again; a retrained model is a
new file content and so a new folder. An unreadable cache file is recomputed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from mde.atomic import atomic_path, remove_stale_parts
from mde.audio import load_audio, to_mono
from mde.errors import MdeError
from mde.probe.pooling import ClipStats
from mde.runtime.extractor import Model

ClipCallback = Optional[Callable[[int, int], None]]
"""``(files done, files in all)`` after each file."""
FailureCallback = Optional[Callable[[Path, str], None]]
"""``(file, one-line message)`` for each file skipped."""

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Target:
    """One (model, layer) to probe. ``label`` is the model as the user named it (a store name or a path),
    ``sha256`` the hex digest of its file's bytes."""

    label: str
    model: Model
    layer: str
    sha256: str


@dataclass
class Features:
    """What :func:`extract` found: per target (in the order given) the statistics of each clip that every
    target could embed, and the files skipped with their one-line reason.

    ``decoded`` counts the files decoded, ``embedded`` the (file, target) pairs computed and ``cached`` those
    read from the cache."""

    stats: list[dict[Path, ClipStats]]
    failed: dict[Path, str] = field(default_factory=dict)
    decoded: int = 0
    embedded: int = 0
    cached: int = 0


class FeatureCache:
    """The cache folder of clip statistics (the layout is in the module's docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, target: Target) -> Path:
        """The folder holding ``target``'s clip files."""
        layer = _SAFE.sub("_", target.layer)
        if layer != target.layer or layer in ("", ".", ".."):  # keep two layer names from sharing a folder
            layer = f"{layer}-{hashlib.sha256(target.layer.encode()).hexdigest()[:8]}"
        return self.root / target.sha256[:16] / layer

    def path(self, target: Target, key: str) -> Path:
        """The file of one clip (by its :func:`clip_key`) for ``target``."""
        return self.folder(target) / f"{key}.npz"

    def load(self, target: Target, key: str) -> Optional[ClipStats]:
        """The cached statistics, or None when absent or unreadable (then they are recomputed)."""
        path = self.path(target, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                mean, top, frames = data["mean"], data["max"], int(data["frames"])
        except Exception:  # a damaged file of any kind (bad zip, missing key, wrong dtype) is recomputed
            return None
        if mean.ndim != 1 or mean.shape != top.shape or frames < 1:
            return None
        return ClipStats(mean.astype(np.float32), top.astype(np.float32), frames)

    def save(self, target: Target, key: str, stats: ClipStats) -> None:
        """Write one clip's statistics atomically; MdeError (one line) when the cache cannot be written."""
        path = self.path(target, key)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, mean=stats.mean, max=stats.max, frames=np.int64(stats.frames))
        except OSError as exc:
            raise MdeError(f"cannot write the probe cache {path}: {exc.strerror or exc}") from None


def clip_key(path: Path) -> str:
    """32 hex digits naming one version of an audio file: its resolved path, size and mtime (ns).
    OSError when the file cannot be looked at."""
    info = os.stat(path)
    text = f"{Path(path).resolve()}\0{info.st_size}\0{info.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def extract(targets: Sequence[Target], paths: Sequence[Path], cache: FeatureCache, on_clip: ClipCallback = None,
            on_failure: FailureCallback = None) -> Features:
    """The :class:`ClipStats` of every path (each once, in order) for every target.

    A file that cannot be looked at, decoded or embedded by some target is left out for all targets,
    recorded in ``Features.failed`` and told to ``on_failure``; its statistics already cached for other
    targets stay in the cache. MdeError when the cache cannot be written.
    """
    unique = list(dict.fromkeys(Path(p) for p in paths))
    features = Features(stats=[{} for _ in targets])
    keys: dict[Path, str] = {}
    for path in unique:
        try:
            keys[path] = clip_key(path)
        except OSError as exc:
            _fail(features, path, f"{path}: {exc.strerror or exc}", on_failure)
    remove_stale_parts(cache.path(t, key) for t in targets for key in keys.values())
    for done, path in enumerate(unique, 1):
        if path in keys:
            found = _clip(targets, path, keys[path], cache, features)
            if isinstance(found, str):
                _fail(features, path, found, on_failure)
            else:
                for column, stats in zip(features.stats, found):
                    column[path] = stats
        if on_clip:
            on_clip(done, len(unique))
    return features


def _clip(targets: Sequence[Target], path: Path, key: str, cache: FeatureCache,
          features: Features) -> list[ClipStats] | str:
    """Every target's statistics of one file (from the cache, else from one decoding), or why it failed."""
    found = [cache.load(target, key) for target in targets]
    missing = [i for i, stats in enumerate(found) if stats is None]
    features.cached += len(targets) - len(missing)
    if missing:
        channels = max(targets[i].model.info.channels for i in missing)
        try:
            samples, rate = load_audio(path, channels=channels)
        except MdeError as exc:
            return str(exc)
        features.decoded += 1
        for i in missing:
            target = targets[i]
            audio = samples if target.model.info.channels > 1 else to_mono(samples)
            try:
                result = target.model.embed(audio, sr=rate, layer=target.layer)
            except MdeError as exc:
                return f"{path}: {target.label}: {exc}"
            stats = ClipStats.of_frames(result.embedding)
            cache.save(target, key, stats)
            features.embedded += 1
            found[i] = stats
    return [stats for stats in found if stats is not None]


def _fail(features: Features, path: Path, message: str, on_failure: FailureCallback) -> None:
    features.failed[path] = message
    if on_failure:
        on_failure(path, message)
