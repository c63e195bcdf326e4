"""The Million Song Dataset with the AllMusic (AMG) tag sets and album reviews (the third seed, Schindler et al.).

Layout of ``DIR``:

* ``msd_amglabels_all.h5``, the AMG tag sets as published (tuwien-musicir/msd), read with h5py. The seed
  reads it with ``pandas.read_hdf(path, "data")``: a DataFrame indexed by MSD track id with the list-valued
  columns ``genres``, ``styles``, ``moods``, ``themes`` (a list of tag strings per track, NaN where a set
  has none) beside ``artist_name``, ``title``, ``release``. List cells cannot go into pandas' table format,
  so the file is a fixed-format store, whose layout is what this module reads:

  - group ``/data`` with the attributes ``pandas_type = "frame"`` and ``nblocks`` (the number of blocks);
  - ``/data/axis0``: the column names and ``/data/axis1``: the index, the track ids; fixed-length byte
    strings (UTF-8);
  - per block ``i``: ``/data/block{i}_items``, the names of its columns (byte strings), and
    ``/data/block{i}_values``, its cells as (tracks, columns) (or (columns, tracks) when the dataset's
    ``transposed`` attribute is 0). An object block (where the tag columns live) is PyTables' object atom:
    a variable-length uint8 dataset of one element, the pickle of a numpy object array. Only numpy's
    array and scalar constructors are accepted while unpickling (any other global is refused), so a
    crafted file cannot run code. A float block holds a column without any tag (all NaN).

  A cell is a list, tuple or array of tag strings, or None / NaN (no tags in that set). The four sets are
  merged by tag name, in the order genres, styles, moods, themes, duplicates dropped.
* ``splits.csv`` (UTF-8, a header, columns in any order, extra columns ignored): ``track_id,split``, one
  row per track used, ``split`` one of train, valid, test. The tracks it lists are the dataset; tracks of
  the tag file that it does not list are not used. (The seed's ISMIR 2020 partition: the tracks with at
  least one AMG genre and audio; train those with an album review, less a stratified 1 % that is the
  validation split; test those without a review.)
* ``reviews.csv`` or ``reviews.parquet`` (optional, not both): ``track_id,text``, free text per track (the
  CSV as splits.csv, the parquet file with string columns). Several rows of one track are joined, in file
  order, with a blank line; empty or null texts are skipped. Reviews of tracks that splits.csv does not
  list are ignored (a review table covers more tracks than a subset does, and the seed's test split is
  exactly the tracks without one).
* ``audio/<track_id>.<ext>`` (any suffix in :data:`mde.audio.AUDIO_EXTENSIONS`) when ``audio/`` holds
  audio files itself; otherwise the MSD's tree ``audio/<A>/<B>/<C>/<track_id>.mp3``, ``A``, ``B``, ``C``
  the track id's 3rd to 5th characters (``TRAXLZU12903D05F94`` -> ``audio/A/X/L/``).

Tags: the ``top_k`` most frequent over the listed tracks (all splits; ties broken by name), multi-hot;
a track without any kept tag keeps all-zero labels.
"""

from __future__ import annotations

import codecs
import io
import math
import os
import pickle
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mde.audio import AUDIO_EXTENSIONS
from mde.errors import MdeError, MissingExtraError
from mde.trainer.data.common import csv_records, require_files, top_k_by_count
from mde.trainer.data.dataset import SPLITS, Clip, TaggingDataset

AMG_TAGS = "msd_amglabels_all.h5"
SPLITS_FILE = "splits.csv"
REVIEW_FILES = ("reviews.csv", "reviews.parquet")
AUDIO_DIR = "audio"
FRAME_KEY = "data"
"""The key the tag file's DataFrame is stored under (the seed's ``read_hdf(path, "data")``)."""
TAG_SETS = ("genres", "styles", "moods", "themes")
REVIEW_SEPARATOR = "\n\n"
"""Between the texts of one track's review rows."""

_TRACK_ID = re.compile(r"TR[A-Z0-9]{16}")
"""An MSD track id, e.g. TRAAABD128F429CF47."""
_SHOWN = 3
"""How many unknown tracks an error message names before it only counts the rest."""


def load_msd(folder: Path, *, top_k: int = 50) -> TaggingDataset:
    """Read the MSD with its AMG tags from ``folder`` (see the module docstring for the layout).

    Raises MdeError (one line naming the file, and the track or row where one applies) for any
    malformed or missing input, a listed track without audio or not in the tag file, and no tags at all.
    """
    if not folder.is_dir():
        raise MdeError(f"{folder}: MSD folder not found")
    split_of = read_splits(folder / SPLITS_FILE)
    track_ids = list(split_of)
    tags = read_amg_tags(folder / AMG_TAGS, track_ids)
    texts = read_reviews(folder)
    paths = audio_paths(folder / AUDIO_DIR, track_ids)
    require_files(paths, str(folder / SPLITS_FILE))
    vocabulary = _vocabulary(tags, top_k, folder / AMG_TAGS)
    index = {tag: i for i, tag in enumerate(vocabulary)}
    splits: dict[str, list[Clip]] = {name: [] for name in SPLITS}
    for track, path, track_tags in zip(track_ids, paths, tags):
        labels = np.zeros(len(vocabulary), np.float32)
        labels[[index[t] for t in track_tags if t in index]] = 1.0
        splits[split_of[track]].append(Clip(path, labels, texts.get(track, "")))
    return TaggingDataset("msd", vocabulary, False, splits)


def _vocabulary(tags: Sequence[tuple[str, ...]], top_k: int, origin: Path) -> tuple[str, ...]:
    """The ``top_k`` most frequent tags (ties by name), sorted by name."""
    counts = Counter(tag for track_tags in tags for tag in track_tags)
    if not counts:
        raise MdeError(f"{origin}: none of the {len(tags)} tracks of {SPLITS_FILE} has a tag")
    ranked = sorted(counts)
    return tuple(sorted(ranked[i] for i in top_k_by_count([counts[t] for t in ranked], top_k)))


# --- splits.csv and the review table --------------------------------------------------------------------


def read_splits(path: Path) -> dict[str, str]:
    """Track id -> split ('train', 'valid' or 'test') of ``splits.csv``, in file order.

    Raises MdeError (with the line number) for a missing file or column, a malformed row, a track id
    that is not an MSD one, an empty or unknown split, a track listed twice, and a file without rows.
    """
    if not path.is_file():
        raise MdeError(f"{path}: split file not found")
    split_of: dict[str, str] = {}
    for where, (track, split) in _csv_rows(path, ("track_id", "split")):
        if not _TRACK_ID.fullmatch(track):
            raise MdeError(f"{where}: {track!r} is not an MSD track id (TR and 16 capital letters or digits)")
        if not split:
            raise MdeError(f"{where}: track {track} has no split")
        if split not in SPLITS:
            raise MdeError(f"{where}: track {track}: split {split!r} is not one of {', '.join(SPLITS)}")
        if track in split_of:
            raise MdeError(f"{where}: track {track} is listed twice")
        split_of[track] = split
    if not split_of:
        raise MdeError(f"{path}: no tracks")
    return split_of


def read_reviews(folder: Path) -> dict[str, str]:
    """Track id -> review text from ``reviews.csv`` or ``reviews.parquet`` in ``folder`` ({} without one).

    A track's non-empty texts (stripped) are joined with a blank line in file order. Raises MdeError for
    both files present, a missing column, a column that is not text, and a row without a track id.
    """
    present = [folder / name for name in REVIEW_FILES if (folder / name).is_file()]
    if not present:
        return {}
    if len(present) > 1:
        raise MdeError(f"{folder}: has both {' and '.join(p.name for p in present)}; keep one")
    path = present[0]
    rows = _parquet_reviews(path) if path.suffix == ".parquet" else _csv_reviews(path)
    texts: dict[str, list[str]] = {}
    for track, text in rows:
        if text and text.strip():
            texts.setdefault(track, []).append(text.strip())
    return {track: REVIEW_SEPARATOR.join(parts) for track, parts in texts.items()}


def _csv_reviews(path: Path) -> Iterator[tuple[str, str]]:
    """(track id, text) of each row of a review CSV."""
    for where, (track, text) in _csv_rows(path, ("track_id", "text"), strip=False):
        if not track.strip():
            raise MdeError(f"{where}: empty track_id")
        yield track.strip(), text


def _parquet_reviews(path: Path) -> Iterator[tuple[str, str | None]]:
    """(track id, text or None) of each row of a review parquet file (both columns strings)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        for name in ("track_id", "text"):
            if name not in schema.names:
                raise MdeError(f"{path}: no column {name!r} (columns: {', '.join(schema.names)})")
            kind = schema.field(name).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
                raise MdeError(f"{path}: column {name!r} is {kind}, expected strings")
        table = pq.read_table(path, columns=["track_id", "text"])
    except (pa.ArrowException, OSError) as e:
        raise MdeError(f"{path}: not a readable parquet file ({e})") from None
    for row, (track, text) in enumerate(zip(table.column("track_id").to_pylist(), table.column("text").to_pylist())):
        if not track or not track.strip():
            raise MdeError(f"{path}: row {row}: no track_id")
        yield track.strip(), text


def _csv_rows(path: Path, columns: tuple[str, ...], strip: bool = True) -> Iterator[tuple[str, list[str]]]:
    """("file:line", the values of ``columns``) of each non-blank row of a CSV file with a header.

    Values are stripped of surrounding spaces unless ``strip`` is false. Raises MdeError for a header
    without one of ``columns`` and a row with another number of fields than the header.
    """
    records = csv_records(path)
    header = [name.strip() for name in next(records, (0, []))[1]]
    lacking = [name for name in columns if name not in header]
    if lacking:
        raise MdeError(f"{path}: the header lacks column(s) {', '.join(lacking)} (expected {','.join(columns)})")
    positions = [header.index(name) for name in columns]
    for line, fields in records:
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(header):
            raise MdeError(f"{path}:{line}: expected {len(header)} fields ({','.join(header)}), got {len(fields)}")
        yield f"{path}:{line}", [fields[i].strip() if strip else fields[i] for i in positions]


# --- audio ----------------------------------------------------------------------------------------------


def audio_paths(root: Path, track_ids: Sequence[str]) -> list[Path]:
    """Each track's audio file under ``root`` (``DIR/audio``), existing or not (for the missing-file check).

    Flat layout (``root`` holds audio files itself): ``root/<track_id>.<ext>``; a track without a file
    gets the suffix most of the files have. Otherwise the MSD tree ``root/<A>/<B>/<C>/<track_id>.mp3``.
    Raises MdeError when ``root`` is not a folder or holds two files of one track.
    """
    if not root.is_dir():
        raise MdeError(f"{root}: audio folder not found")
    flat = _flat_audio(root)
    if not flat:
        return [root / track[2] / track[3] / track[4] / f"{track}.mp3" for track in track_ids]
    suffix = Counter(path.suffix for path in flat.values()).most_common(1)[0][0]
    return [flat.get(track, root / f"{track}{suffix}") for track in track_ids]


def _flat_audio(root: Path) -> dict[str, Path]:
    """Stem -> path of the audio files directly in ``root`` (hidden files skipped)."""
    found: dict[str, Path] = {}
    with os.scandir(root) as entries:
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith(".") or path.suffix.lower() not in AUDIO_EXTENSIONS or not entry.is_file():
                continue
            if path.stem in found:
                first, second = sorted((found[path.stem].name, path.name))
                raise MdeError(f"{root}: two audio files for track {path.stem}: {first}, {second}; keep one")
            found[path.stem] = path
    return found


# --- msd_amglabels_all.h5 -------------------------------------------------------------------------------


def read_amg_tags(path: Path, track_ids: Sequence[str]) -> list[tuple[str, ...]]:
    """The merged AMG tags of each of ``track_ids``, from the pandas fixed-format store ``path``.

    Raises MdeError for a missing or unreadable file, a missing group, dataset, attribute or tag column,
    a dataset of the wrong type or shape, a pickle that is not a plain numpy array, a cell that is not a
    list of strings or missing, and tracks that are not in the file (up to 3 named, with the count).
    """
    h5py = _h5py()
    if not path.is_file():
        raise MdeError(f"{path}: AMG tag file not found")
    try:
        with h5py.File(path, "r") as f:
            frame = f.get(FRAME_KEY)
            if not isinstance(frame, h5py.Group):
                raise MdeError(f"{path}: no group /{FRAME_KEY} (what pandas' to_hdf(path, {FRAME_KEY!r}) writes)")
            _require_fixed_frame(frame, path)
            index = _strings(frame, "axis1", path)
            columns = _tag_columns(frame, len(index), path)
    except OSError as e:
        raise MdeError(f"{path}: not a readable HDF5 file ({e})") from None
    row_of = {track: row for row, track in enumerate(index)}
    unknown = [track for track in track_ids if track not in row_of]
    if unknown:
        shown = ", ".join(unknown[:_SHOWN]) + (f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else "")
        raise MdeError(f"{path}: {len(unknown)} track(s) of {SPLITS_FILE} not in it: {shown}")
    return [_merged_tags(columns, row_of[track], track, path) for track in track_ids]


def _h5py() -> Any:
    """The h5py module (the 'train' extra)."""
    try:
        import h5py
    except ImportError:
        raise MissingExtraError("h5py", "train", "Reading the MSD AMG tag sets") from None
    return h5py


def _merged_tags(columns: dict[str, np.ndarray], row: int, track: str, path: Path) -> tuple[str, ...]:
    """One track's tags of every set, in TAG_SETS order, stripped, without empties and duplicates."""
    tags: dict[str, None] = {}
    for name in TAG_SETS:
        cell = columns[name][row]
        if cell is None or (isinstance(cell, float) and math.isnan(cell)):
            continue
        if not isinstance(cell, list | tuple | np.ndarray) or not all(isinstance(t, str) for t in cell):
            raise MdeError(f"{path}: track {track}, column {name}: {type(cell).__name__} {str(cell)[:40]!r}, "
                           "expected a list of tag strings or NaN")
        tags.update((str(t).strip(), None) for t in cell if str(t).strip())
    return tuple(tags)


def _tag_columns(frame: Any, n_rows: int, path: Path) -> dict[str, np.ndarray]:
    """The TAG_SETS columns of the stored frame, each a 1-D array of ``n_rows`` cells."""
    names = _strings(frame, "axis0", path)
    columns: dict[str, np.ndarray] = {}
    for block in range(_int_attr(frame, "nblocks", path)):
        items = _strings(frame, f"block{block}_items", path)
        wanted = [name for name in TAG_SETS if name in items]
        if wanted:
            values = _block_values(frame, f"block{block}_values", (n_rows, len(items)), path)
            columns.update({name: values[:, items.index(name)] for name in wanted})
    lacking = [name for name in TAG_SETS if name not in columns]
    if lacking:
        raise MdeError(f"{path}: /{FRAME_KEY} has no column(s) {', '.join(lacking)} (columns: {', '.join(names)})")
    return columns


def _block_values(frame: Any, name: str, shape: tuple[int, int], path: Path) -> np.ndarray:
    """A block's cells as (tracks, columns): unpickled from an object atom, or read from a float dataset."""
    dataset = _dataset(frame, name, path)
    where = f"{path}: /{FRAME_KEY}/{name}"
    if dataset.dtype.kind == "O" and dataset.shape == (1,):
        blob = dataset[0]
        if not isinstance(blob, np.ndarray) or blob.dtype != np.uint8:
            raise MdeError(f"{where} holds {type(blob).__name__}, expected pickled bytes (PyTables' object atom)")
        values = _unpickle_array(blob.tobytes(), where)
    elif dataset.dtype.kind == "f":
        values = dataset[()]
    else:
        raise MdeError(f"{where} is {dataset.dtype} {dataset.shape}, expected a pickled object array or floats")
    if not dataset.attrs.get("transposed", False):
        values = values.T
    if values.shape != shape:
        raise MdeError(f"{where} has shape {values.shape}, expected {shape} (tracks, columns)")
    return values


def _strings(frame: Any, name: str, path: Path) -> list[str]:
    """A 1-D dataset of fixed-length byte strings, decoded as UTF-8."""
    dataset = _dataset(frame, name, path)
    if dataset.dtype.kind != "S" or dataset.ndim != 1:
        raise MdeError(f"{path}: /{FRAME_KEY}/{name} is {dataset.dtype} {dataset.shape}, expected 1-D byte strings")
    try:
        return [value.decode("utf-8") for value in dataset[()]]
    except UnicodeDecodeError as e:
        raise MdeError(f"{path}: /{FRAME_KEY}/{name} is not UTF-8 ({e})") from None


def _dataset(frame: Any, name: str, path: Path) -> Any:
    """The dataset ``name`` of the frame group; MdeError when there is none."""
    dataset = frame.get(name)
    if dataset is None or not hasattr(dataset, "dtype"):
        raise MdeError(f"{path}: missing dataset /{FRAME_KEY}/{name}")
    return dataset


def _require_fixed_frame(frame: Any, path: Path) -> None:
    """MdeError unless the group's ``pandas_type`` is 'frame' (a DataFrame in pandas' fixed format)."""
    kind = frame.attrs.get("pandas_type")
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind != "frame":
        raise MdeError(f"{path}: /{FRAME_KEY} has pandas_type {kind!r}, expected 'frame' (pandas' fixed format)")


def _int_attr(frame: Any, name: str, path: Path) -> int:
    """An integer attribute of the frame group."""
    value = frame.attrs.get(name)
    if not isinstance(value, int | np.integer):
        raise MdeError(f"{path}: /{FRAME_KEY} lacks the integer attribute {name!r}")
    return int(value)


def _array_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """The globals a pickled numpy array names (numpy 1 and 2 module names, and the bytes constructor of
    pickle protocol 2), numpy's taken from its own reductions rather than imported from private modules."""
    reconstruct, from_buffer, scalar = (_reducer(value) for value in (np.empty(0, object), np.arange(1), np.float64(0)))
    table: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for module in ("numpy.core", "numpy._core"):
        table[(f"{module}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{module}.multiarray", "scalar")] = scalar
        table[(f"{module}.numeric", "_frombuffer")] = from_buffer
    return table


def _reducer(value: Any) -> Callable[..., Any]:
    """The function that pickle protocol 5 rebuilds ``value`` with."""
    return value.__reduce_ex__(5)[0]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays of plain Python values (lists, strings, floats) and refuses every other global."""

    allowed = _array_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self.allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return found


def _unpickle_array(blob: bytes, where: str) -> np.ndarray:
    """The 2-D numpy array pickled in ``blob``; MdeError (naming ``where``) for anything else."""
    try:
        values = _ArrayUnpickler(io.BytesIO(blob)).load()
    except Exception as e:  # a damaged or hostile pickle can raise nearly anything
        raise MdeError(f"{where} is not a pickled numpy array ({type(e).__name__}: {e})") from None
    if not isinstance(values, np.ndarray) or values.ndim != 2:
        raise MdeError(f"{where} holds {type(values).__name__}, expected a 2-D numpy array")
    return values
