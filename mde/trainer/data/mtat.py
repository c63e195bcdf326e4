"""MagnaTagATune: ``annotations_final.csv``, the mp3 tree and the sota-music-tagging-models split.

Layout of ``DIR``: ``annotations_final.csv`` (tab-separated, quoted; ``clip_id``, 188 tag columns of
0/1, ``mp3_path``), the audio as ``DIR/<d>/<file>.mp3`` or ``DIR/mp3/<d>/<file>.mp3`` with ``<d>``
one of the 16 folders 0-9, a-f, and optionally split files in ``DIR/split/`` or ``DIR`` itself.

Tags: optionally the synonym groups of the multi-scale paper are merged first (a merged tag is the OR
of its members and is named by the group's first tag); then the ``top_k`` most frequent tags are
chosen (ties keep the CSV's column order).

Split, following the sota-music-tagging-models recipe (``preprocessing/mtat_read.py``):

* With ``train.npy``, ``valid.npy``, ``test.npy`` (arrays of ``"<row>\\t<d>/<file>.mp3"``, ``row``
  the 0-based data row of ``annotations_final.csv``) every listed clip is used, as that recipe's
  loader does. Labels come from ``binary.npy`` (rows x tags, in ``tags.npy`` order) when it is there
  and the requested vocabulary is that of ``tags.npy`` (no merging, ``top_k == len(tags)``);
  otherwise they are rebuilt from the annotations (``tags.npy`` still fixes the order when it names
  the requested vocabulary). A listed file that is missing on disk is an error.
* Without them the recipe's own rule builds the split: folders 0-b train, c valid, d-f test, keeping
  only clips that have at least one chosen tag and whose mp3 exists (the recipe's published split
  files were made this way, which is why they hold about 21k of the 25,863 clips).

``split='random'`` builds the multi-scale CNN's split instead (many-facedgod/Music-Tagger,
``src/trainer.py``): every clip whose mp3 exists, tagged or not, shuffled with a fixed seed; the first
2,000 are the validation split, the last 18,000 the training split, the rest the test split. The source's
own permutation (Totem's generator, seed 1337) cannot be reproduced; ours is numpy's with the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mde.errors import MdeError
from mde.trainer.data.common import csv_records, require_files, top_k_by_count
from mde.trainer.data.dataset import SPLITS, Clip, TaggingDataset

ANNOTATIONS = "annotations_final.csv"

SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("beat", "beats"),
    ("chant", "chanting"),
    ("choir", "choral"),
    ("classical", "clasical", "classic"),
    ("drum", "drums"),
    ("electro", "electronic", "electronica", "electric"),
    ("fast", "fast beat", "quick"),
    ("female", "female singer", "female singing", "female vocals", "female voice", "woman",
     "woman singing", "women"),
    ("flute", "flutes"),
    ("guitar", "guitars"),
    ("hard", "hard rock"),
    ("harpsichord", "harpsicord"),
    ("heavy", "heavy metal", "metal"),
    ("horn", "horns"),
    ("india", "indian"),
    ("jazz", "jazzy"),
    ("male", "male singer", "male vocal", "male vocals", "male voice", "man", "man singing", "men"),
    ("no beat", "no drums"),
    ("no singer", "no singing", "no vocal", "no vocals", "no voice", "no voices", "instrumental"),
    ("opera", "operatic"),
    ("orchestra", "orchestral"),
    ("quiet", "silence"),
    ("singer", "singing"),
    ("space", "spacey"),
    ("string", "strings"),
    ("synth", "synthesizer"),
    ("violin", "violins"),
    ("vocal", "vocals", "voice", "voices"),
    ("strange", "weird"),
)
"""MagnaTagATune synonym groups (keunwoochoi/magnatagatune-list, as merged by the multi-scale paper)."""

_FOLDER_SPLIT = {folder: split for split, folders in
                 (("train", "0123456789ab"), ("valid", "c"), ("test", "def")) for folder in folders}
"""The sota recipe's split by the clip's first-level folder."""


@dataclass(frozen=True)
class Annotations:
    """The parsed ``annotations_final.csv``: per data row its mp3 path and 0/1 tags."""

    tag_names: tuple[str, ...]
    paths: tuple[str, ...]
    matrix: np.ndarray  # uint8 (rows, tags)


RANDOM_SPLIT_SEED = 1337
"""The multi-scale source's seed, for its random split."""
RANDOM_SPLIT_SIZES = {"valid": 2000, "train": 18000}
"""Clips of the random split's validation and training splits; the rest is the test split."""
MTAT_SPLITS = ("sota", "random")


def load_mtat(data: Path, *, merge_synonyms: bool = False, top_k: int = 50, split: str = "sota") -> TaggingDataset:
    """Read MagnaTagATune from ``data`` (see the module docstring for layout, tags and ``split``: 'sota'
    or 'random')."""
    if split not in MTAT_SPLITS:
        raise MdeError(f"the MagnaTagATune split must be one of {', '.join(MTAT_SPLITS)}, got {split!r}")
    if not data.is_dir():
        raise MdeError(f"{data}: MagnaTagATune folder not found")
    audio_root = data / "mp3" if (data / "mp3").is_dir() else data
    if split == "random":
        annotations = _read_prepared(data, merge_synonyms)
        return _random_split(annotations, top_k_by_count(annotations.matrix.sum(axis=0), top_k), audio_root)
    split_dir = find_split_dir(data)
    if split_dir is None:
        annotations = _read_prepared(data, merge_synonyms)
        chosen = top_k_by_count(annotations.matrix.sum(axis=0), top_k)
        return _by_folder(annotations, chosen, audio_root, data / ANNOTATIONS)
    return _from_split_files(data, split_dir, audio_root, merge_synonyms, top_k)


def read_annotations(path: Path) -> Annotations:
    """Parse ``annotations_final.csv``; MdeError with the line number for any malformed line."""
    if not path.is_file():
        raise MdeError(f"{path}: MagnaTagATune annotations not found")
    records = csv_records(path, delimiter="\t")
    header = next(records, (0, []))[1]
    if len(header) < 3 or header[0] != "clip_id" or header[-1] != "mp3_path":
        raise MdeError(f"{path}: not a MagnaTagATune annotations file (header must run clip_id ... mp3_path)")
    n_tags = len(header) - 2
    paths, rows = [], []
    for line, fields in records:
        if not fields:
            continue
        if len(fields) != len(header):
            raise MdeError(f"{path}:{line}: expected {len(header)} fields, got {len(fields)}")
        values = np.frombuffer("".join(fields[1:-1]).encode(), np.uint8) - ord("0")
        if len(values) != n_tags or values.max(initial=0) > 1:
            raise MdeError(f"{path}:{line}: tag columns must hold 0 or 1")
        paths.append(fields[-1])
        rows.append(values)
    if not rows:
        raise MdeError(f"{path}: the annotations hold no clips")
    return Annotations(tuple(header[1:-1]), tuple(paths), np.stack(rows))


def merge_synonym_tags(annotations: Annotations) -> Annotations:
    """Merge each :data:`SYNONYMS` group present into one column named by the group's first tag.

    The merged column is the OR of its members and sits where the group's first present member was;
    members absent from the CSV are ignored.
    """
    index = {name: i for i, name in enumerate(annotations.tag_names)}
    group_of = {}
    for group in SYNONYMS:
        present = [index[name] for name in group if name in index]
        if present:
            group_of.update(dict.fromkeys(present, (group[0], present)))
    names, columns = [], []
    for i, name in enumerate(annotations.tag_names):
        head, members = group_of.get(i, (name, [i]))
        if i == members[0]:
            names.append(head)
            columns.append(annotations.matrix[:, members].max(axis=1))
    return Annotations(tuple(names), annotations.paths, np.stack(columns, axis=1))


def find_split_dir(data: Path) -> Path | None:
    """``data/split`` or ``data`` when it holds train/valid/test.npy; None when neither holds any.

    A folder holding some but not all three is an error naming the missing ones.
    """
    for folder in (data / "split", data):
        present = [s for s in SPLITS if (folder / f"{s}.npy").is_file()]
        if len(present) == len(SPLITS):
            return folder
        if present:
            lacking = ", ".join(f"{s}.npy" for s in SPLITS if s not in present)
            raise MdeError(f"{folder}: has {', '.join(f'{s}.npy' for s in present)} but not {lacking}")
    return None


def read_split_file(path: Path) -> list[tuple[int, str]]:
    """Parse a sota split file: an array of ``"<row>\\t<d>/<file>.mp3"`` -> [(row, path)]."""
    try:
        entries = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise MdeError(f"{path}: not a readable split file ({e})") from None
    if entries.ndim != 1 or entries.dtype.kind != "U":
        raise MdeError(f"{path}: expected a 1-D array of strings, got {entries.dtype} {entries.shape}")
    parsed = []
    for i, entry in enumerate(entries.tolist()):
        row, _, clip = entry.partition("\t")
        if not row.isdigit() or not clip:
            raise MdeError(f"{path}: entry {i} is {entry!r}, expected '<row>\\t<dir>/<file>.mp3'")
        parsed.append((int(row), clip))
    return parsed


def _read_prepared(data: Path, merge_synonyms: bool) -> Annotations:
    """The annotations of ``data``, with synonyms merged when asked."""
    annotations = read_annotations(data / ANNOTATIONS)
    return merge_synonym_tags(annotations) if merge_synonyms else annotations


def _by_folder(annotations: Annotations, chosen: list[int], audio_root: Path, origin: Path) -> TaggingDataset:
    """The sota rule: split by folder, keep clips with a chosen tag and an mp3 on disk.

    ``origin`` (the annotations file) starts the message for a clip outside the 16 folders.
    """
    labels = annotations.matrix[:, chosen].astype(np.float32)
    splits: dict[str, list[Clip]] = {name: [] for name in SPLITS}
    for clip, row in zip(annotations.paths, labels):
        split = _FOLDER_SPLIT.get(clip[:1]) if clip[1:2] == "/" else None
        if split is None:
            raise MdeError(f"{origin}: mp3_path {clip!r} is not inside one of the folders 0-9, a-f")
        path = audio_root / clip
        if row.any() and path.is_file():
            splits[split].append(Clip(path, row))
    names = tuple(annotations.tag_names[i] for i in chosen)
    return TaggingDataset("mtat", names, False, splits)


def _random_split(annotations: Annotations, chosen: list[int], audio_root: Path) -> TaggingDataset:
    """The multi-scale source's split (see the module docstring) of the clips whose mp3 exists."""
    labels = annotations.matrix[:, chosen].astype(np.float32)
    present = [row for row, clip in enumerate(annotations.paths) if (audio_root / clip).is_file()]
    needed = sum(RANDOM_SPLIT_SIZES.values()) + 1
    if len(present) < needed:
        raise MdeError(f"{audio_root}: the random split needs at least {needed} clips on disk (2,000 valid, "
                       f"18,000 train, the rest test), found {len(present)}")
    order = np.random.default_rng(RANDOM_SPLIT_SEED).permutation(present)
    valid, train = RANDOM_SPLIT_SIZES["valid"], RANDOM_SPLIT_SIZES["train"]
    rows = {"valid": order[:valid], "test": order[valid : len(order) - train], "train": order[len(order) - train :]}
    splits = {name: [Clip(audio_root / annotations.paths[r], labels[r]) for r in rows[name]] for name in SPLITS}
    return TaggingDataset("mtat", tuple(annotations.tag_names[i] for i in chosen), False, splits)


def _from_split_files(
    data: Path, split_dir: Path, audio_root: Path, merge_synonyms: bool, top_k: int
) -> TaggingDataset:
    """Every clip the split files list, labelled from binary.npy or rebuilt from the annotations."""
    listed = {s: read_split_file(split_dir / f"{s}.npy") for s in SPLITS}
    require_files([audio_root / clip for entries in listed.values() for _, clip in entries], str(split_dir))
    sota_tags = _read_tags(split_dir / "tags.npy")
    sota_vocabulary = sota_tags if sota_tags is not None and not merge_synonyms and top_k == len(sota_tags) else None
    if sota_vocabulary is not None and (split_dir / "binary.npy").is_file():
        names, labels = sota_vocabulary, _read_binary(split_dir / "binary.npy", len(sota_vocabulary))
    else:
        annotations = _read_prepared(data, merge_synonyms)
        _check_rows(listed, annotations.paths, split_dir)
        if sota_vocabulary is not None:
            chosen = _columns_of(sota_vocabulary, annotations.tag_names, split_dir / "tags.npy")
        else:
            chosen = top_k_by_count(annotations.matrix.sum(axis=0), top_k)
        names = tuple(annotations.tag_names[i] for i in chosen)
        labels = annotations.matrix[:, chosen].astype(np.float32)
    for split, entries in listed.items():
        beyond = [row for row, _ in entries if row >= len(labels)]
        if beyond:
            raise MdeError(f"{split_dir / split}.npy: row {beyond[0]} is beyond the {len(labels)} label rows")
    splits = {s: [Clip(audio_root / clip, labels[row]) for row, clip in entries] for s, entries in listed.items()}
    return TaggingDataset("mtat", names, False, splits)


def _read_tags(path: Path) -> tuple[str, ...] | None:
    """The tag names of a sota ``tags.npy``, or None when there is none."""
    if not path.is_file():
        return None
    tags = np.load(path, allow_pickle=False)
    if tags.ndim != 1 or tags.dtype.kind != "U":
        raise MdeError(f"{path}: expected a 1-D array of tag names, got {tags.dtype} {tags.shape}")
    return tuple(tags.tolist())


def _read_binary(path: Path, n_tags: int) -> np.ndarray:
    """A sota ``binary.npy`` (rows, n_tags) of 0/1 as float32."""
    binary = np.load(path, allow_pickle=False)
    if binary.ndim != 2 or binary.shape[1] != n_tags:
        raise MdeError(f"{path}: expected (rows, {n_tags}) labels matching tags.npy, got shape {binary.shape}")
    return binary.astype(np.float32)


def _check_rows(listed: dict[str, list[tuple[int, str]]], paths: tuple[str, ...], split_dir: Path) -> None:
    """Each listed row must exist in the annotations and name the same mp3 there."""
    for split, entries in listed.items():
        for row, clip in entries:
            if row >= len(paths) or paths[row] != clip:
                found = repr(paths[row]) if row < len(paths) else "no such row"
                raise MdeError(
                    f"{split_dir / split}.npy: row {row} lists {clip!r} but {ANNOTATIONS} has {found} "
                    "(the split files belong to another annotations file)"
                )


def _columns_of(tags: tuple[str, ...], tag_names: tuple[str, ...], origin: Path) -> list[int]:
    """Column indices of ``tags`` in the annotations; a tag the CSV lacks is an error."""
    index = {name: i for i, name in enumerate(tag_names)}
    unknown = [t for t in tags if t not in index]
    if unknown:
        raise MdeError(f"{origin}: tag(s) {', '.join(map(repr, unknown[:3]))} are not columns of {ANNOTATIONS}")
    return [index[t] for t in tags]
