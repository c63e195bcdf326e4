"""GTZAN genres: one folder of audio files per genre, single-label.

Layout of ``DIR``: ``DIR/genres/<genre>/*`` (the original release, ``.au``), ``DIR/genres_original/
<genre>/*`` (the Kaggle copy, ``.wav``) or ``DIR/<genre>/*``; any suffix in
:data:`mde.audio.AUDIO_EXTENSIONS` counts. Labels are one-hot over the sorted genre names.

Split: when ``DIR`` holds the fault-filtered lists ``train_filtered.txt``, ``valid_filtered.txt`` and
``test_filtered.txt`` (Kereliuk et al.; lines like ``jazz/jazz.00054.wav``) they are used, matching
files by genre and name whatever their suffix; otherwise each genre's files are shuffled with a
seed derived from the genre's name and split 80/10/10 (valid and test get round(n / 10) files each,
at least one when the genre has three or more).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mde.audio import AUDIO_EXTENSIONS
from mde.errors import MdeError
from mde.trainer.data.common import require_files
from mde.trainer.data.dataset import SPLITS, Clip, TaggingDataset

_ROOTS = ("genres", "genres_original", ".")
"""Where genre folders are looked for inside ``DIR``, in order."""

HOLDOUT_FRACTION = 0.1
"""The share of each genre's files that goes to valid, and again to test, without a split list."""


def load_gtzan(data: Path) -> TaggingDataset:
    """Read GTZAN from ``data`` (see the module docstring for layout and split)."""
    root, files = _genre_files(data)
    genres = tuple(sorted(files))
    by_split = _listed_split(data, root, files) or _seeded_split(files)
    one_hot = np.eye(len(genres), dtype=np.float32)
    index = {genre: i for i, genre in enumerate(genres)}
    splits = {s: [Clip(path, one_hot[index[path.parent.name]]) for path in by_split[s]] for s in SPLITS}
    return TaggingDataset("gtzan", genres, True, splits)


def _genre_files(data: Path) -> tuple[Path, dict[str, list[Path]]]:
    """The first candidate root with genre folders, and each genre's audio files (sorted)."""
    if not data.is_dir():
        raise MdeError(f"{data}: GTZAN folder not found")
    for root in (data / name for name in _ROOTS):
        if not root.is_dir():
            continue
        files = {
            folder.name: sorted(p for p in folder.iterdir() if _is_audio(p))
            for folder in root.iterdir()
            if folder.is_dir() and not folder.name.startswith(".")
        }
        files = {genre: paths for genre, paths in files.items() if paths}
        if len(files) >= 2:
            return root, files
    raise MdeError(f"{data}: no GTZAN genre folders found (expected genres/<genre>/*.au or <genre>/*.wav)")


def _is_audio(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in AUDIO_EXTENSIONS


def _listed_split(data: Path, root: Path, files: dict[str, list[Path]]) -> dict[str, list[Path]] | None:
    """The split of the fault-filtered lists in ``data``, or None when there are none."""
    lists = {s: data / f"{s}_filtered.txt" for s in SPLITS}
    present = [s for s, path in lists.items() if path.is_file()]
    if not present:
        return None
    if len(present) < len(SPLITS):
        lacking = ", ".join(lists[s].name for s in SPLITS if s not in present)
        raise MdeError(f"{data}: has {', '.join(lists[s].name for s in present)} but not {lacking}")
    found = {(genre, path.stem): path for genre, paths in files.items() for path in paths}
    by_split = {}
    for split, path in lists.items():
        entries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        keys = [(Path(entry).parent.name, Path(entry).stem) for entry in entries]
        by_split[split] = [found.get(key, root / entry) for key, entry in zip(keys, entries)]
        require_files(by_split[split], str(path))
    return by_split


def _seeded_split(files: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Per genre a seeded shuffle cut into train / valid / test (see the module docstring)."""
    by_split: dict[str, list[Path]] = {s: [] for s in SPLITS}
    for genre, paths in sorted(files.items()):
        order = np.random.default_rng(list(genre.encode())).permutation(len(paths))
        held = max(round(len(paths) * HOLDOUT_FRACTION), 1 if len(paths) >= 3 else 0)
        shuffled = [paths[i] for i in order]
        by_split["valid"] += shuffled[:held]
        by_split["test"] += shuffled[held : 2 * held]
        by_split["train"] += shuffled[2 * held :]
    return by_split
