"""Building and updating an index: which files to embed, embedding them into staging, committing a version.

A run is given PATHS (files, and folders searched recursively as ``mde embed`` searches them) and makes the
index's entries *under those paths* match what is there now:

- a file found that the index lacks is embedded and added;
- an indexed file found with another size or mtime is embedded again (if that now fails, its entry goes);
- an indexed file under one of the PATHS that is no longer found there is removed;
- entries outside the PATHS are left as they are, even when their files are missing: a disk that is not
  mounted does not empty an index; a run on their folder refreshes them.

An index holds vectors of one model file (by SHA-256), one layer and one hop: a run with another is
refused in one line. A run without a model, layer or hop takes the index's (or, for a new index, the
default model, its embedding layer and its hop). Files are embedded by ``workers`` processes into the
staging area (:mod:`mde.search.vectors`), so a killed run loses no finished file; the new version (kept
rows, then the new ones in path order) is then written and committed atomically (:mod:`mde.search.storage`).
A file that cannot be embedded is reported and left out; the others are committed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mde.audio import decoded_bytes, find_audio_files
from mde.errors import MdeError
from mde.runtime import store
from mde.runtime.batch import (
    DECODED_BUDGET_BYTES,
    EmbedSettings,
    check_destination,
    files_at_once,
    output_settings,
    padding_note,
    usable_cpus,
)
from mde.runtime.defaults import default_model_path
from mde.runtime.extractor import EmbeddingResult, Model
from mde.runtime.package import read_model_info
from mde.runtime.workers import ordered_map, process_map
from mde.search import faiss_kinds, storage
from mde.search.manifest import Manifest, VectorSpace, read_manifest
from mde.search.storage import IndexArrays
from mde.search.vectors import FileVectors, file_vectors, load_staged, save_staged

ADDED, UPDATED, UNCHANGED, REMOVED, FAILED = "added", "updated", "unchanged", "removed", "failed"
RESUMED = "embedded by an interrupted run"
"""The message of an outcome whose vectors came from the staging area instead of being embedded again."""


@dataclass(frozen=True)
class FileOutcome:
    """What a run did with one file: status is one of 'added', 'updated' (embedded again), 'unchanged',
    'removed' or 'failed' (message says why)."""

    path: str
    status: str
    message: str = ""


@dataclass
class BuildReport:
    """The outcome of every file a run looked at, and the manifest of the index afterwards."""

    folder: Path
    manifest: Manifest
    outcomes: list[FileOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == FAILED]


@dataclass(frozen=True)
class IndexJob:
    """A file to embed: its path (absolute, resolved), size (bytes), mtime (ns), and the status it ends with if
    embedded: 'added', or 'updated' when it replaces an entry."""

    path: str
    size: int
    mtime_ns: int
    status: str


JobEmbedder = Callable[[list[IndexJob], Path, VectorSpace, str], Iterator[tuple[IndexJob, FileOutcome]]]
"""``(jobs, staging, space, made_with) -> (job, outcome)`` as files finish: embeds each job's file into the
staging area (:func:`mde.search.vectors.save_staged` under ``made_with``), e.g. on Ray
(:func:`mde.cluster.index.ray_embedder`); the default is this module's worker processes."""


@dataclass(frozen=True)
class _Plan:
    jobs: list[IndexJob]
    keep: np.ndarray  # bool (n_files,) over the current rows
    done: list[FileOutcome]  # unchanged, removed and unreadable files


def build_index(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    model: Optional[str] = None,
    layer: Optional[str] = None,
    hop: Optional[float] = None,
    workers: int = 1,
    threads: Optional[int] = None,
    exact: Optional[bool] = None,
    exact_limit: int = faiss_kinds.EXACT_LIMIT,
    on_start: Optional[Callable[[int], None]] = None,
    on_outcome: Optional[Callable[[FileOutcome], None]] = None,
    announce: Callable[[str], None] = lambda message: None,
    embedder: Optional[JobEmbedder] = None,
) -> BuildReport:
    """Create the index ``out`` from the audio under ``paths``, or update it (see the module docstring).

    model: a store name or .onnx path (None: the index's model, or the default model for a new index).
    layer: the model output to index (None: the index's, or the model's embedding layer).
    hop: seconds between frame starts (None: the index's, or the model's hop).
    workers: embedding processes; threads: inference threads in each (None: ONNX Runtime's choice).
    exact: search exactly at any size (None: as the index was built; False for a new index).
    exact_limit: the most vectors searched exactly when ``exact`` is off (beyond: IVF-Flat).
    on_start(n): called once with the number of files to embed; on_outcome: called as each file is done.
    announce: receives one-line progress messages (index building).
    embedder: embeds the files to add (None: ``workers`` local processes); see JobEmbedder.

    Raises MdeError (one line) for a folder that is not an index, a model, layer or hop other than the
    index's, no audio files for a new index, or an update already running on ``out``.
    """
    folder = Path(out)
    faiss_kinds.load_faiss()  # before any work, when the extra is missing
    storage.check_index_folder(folder)
    check_destination(folder)
    found = find_audio_files(paths)
    previous = read_manifest(folder)  # read again under the lock; the refusals come before anything is written
    if previous is None and not found:
        raise MdeError("no audio files found in the given paths")
    space, made_with = _vector_space(model, layer, hop, previous, announce)
    if previous is not None:
        previous.space.refuse_mixing(space, folder)
    with storage.writer_lock(folder):
        if read_manifest(folder) != previous:
            raise MdeError(f"{folder} was updated by another run meanwhile; run this one again")
        storage.remove_leftovers(folder, previous)
        current = _current(folder, previous, space)
        plan = _plan(found, paths, current)
        outcomes = list(plan.done)
        for outcome in plan.done:
            if outcome.status == FAILED and on_outcome:
                on_outcome(outcome)
        if on_start:
            on_start(len(plan.jobs))
        staging = folder / storage.STAGING
        staging.mkdir(exist_ok=True)
        embedded: list[IndexJob] = []
        for job, outcome in _embed(plan.jobs, staging, space, made_with, workers, threads, embedder):
            outcomes.append(outcome)
            if outcome.status != FAILED:
                embedded.append(job)
            if on_outcome:
                on_outcome(outcome)
        manifest = previous
        if manifest is None or embedded or not plan.keep.all():
            kept = {job.path for job in embedded}  # (in the plan's path order, however they finished)
            added = [_staged(staging, job, made_with) for job in plan.jobs if job.path in kept]
            sticky = exact if exact is not None else bool(previous and previous.exact)
            manifest = _commit(folder, space, current.kept(plan.keep).extended(added), previous, sticky, exact_limit,
                               announce)
        shutil.rmtree(staging)
    return BuildReport(folder, manifest, outcomes)


def _current(folder: Path, previous: Optional[Manifest], space: VectorSpace) -> IndexArrays:
    """The rows of the current version (none for a new index)."""
    if previous is None:
        return IndexArrays.empty(space.dim, len(space.tag_names) if space.tag_names else None)
    try:
        return storage.read_arrays(folder, previous)
    except FileNotFoundError as exc:
        raise MdeError(f"{folder}: {exc.filename or previous.data}, named by its manifest, is missing: the index is "
                       "damaged; build it again into a new folder") from None


def _vector_space(model: Optional[str], layer: Optional[str], hop: Optional[float], previous: Optional[Manifest],
                  announce: Callable[[str], None]) -> tuple[VectorSpace, str]:
    """The vectors a run makes, and the key its staging entries record."""
    if model is not None:
        model_path = store.resolve(model)
    elif previous is not None:
        model_path = previous.space.model_file()
    else:
        model_path = default_model_path(announce=announce)
    if previous is not None:
        layer = layer or previous.space.layer
        hop = hop if hop is not None else previous.space.hop
    made = output_settings(model_path, EmbedSettings(layer=layer, hop=hop))
    info = read_model_info(model_path)
    space = VectorSpace(
        model=info.name, model_sha256=made.model_sha256, model_path=str(model_path.resolve()), layer=made.layer,
        window=made.window, hop=made.hop, sample_rate=made.sample_rate, dim=info.outputs[made.layer],
        tag_names=info.tag_names if info.tags_output else (),
    )
    return space, json.dumps([space.model_sha256, space.layer, space.window, space.hop])


def _plan(found: list[Path], roots: Iterable[str | os.PathLike[str]], current: IndexArrays) -> _Plan:
    """What to embed, keep and remove (see the module docstring)."""
    rows = {path: i for i, path in enumerate(current.paths)}
    resolved_roots = [Path(root).resolve() for root in roots]
    keep = np.array([not _under(path, resolved_roots) for path in current.paths], dtype=bool)
    jobs, done = [], []
    for file in found:
        path = str(file.resolve())
        try:
            stat = os.stat(path)
        except OSError as exc:
            done.append(FileOutcome(str(file), FAILED, f"cannot read it: {exc.strerror or exc}"))
            continue
        row = rows.get(path)
        if row is None:
            jobs.append(IndexJob(path, stat.st_size, stat.st_mtime_ns, ADDED))
        elif (current.sizes[row], current.mtimes_ns[row]) == (stat.st_size, stat.st_mtime_ns):
            keep[row] = True
            done.append(FileOutcome(path, UNCHANGED))
        else:
            keep[row] = False  # replaced by the new vectors (also when a link leads out of the PATHS)
            jobs.append(IndexJob(path, stat.st_size, stat.st_mtime_ns, UPDATED))
    claimed = {job.path for job in jobs}
    done += [FileOutcome(path, REMOVED) for path, k in zip(current.paths, keep) if not k and path not in claimed]
    return _Plan(jobs, keep, done)


def _under(path: str, roots: list[Path]) -> bool:
    """Whether ``path`` is one of ``roots`` or inside one of them."""
    return any(Path(path) == root or Path(path).is_relative_to(root) for root in roots)


def _embed(jobs: list[IndexJob], staging: Path, space: VectorSpace, made_with: str, workers: int,
           threads: Optional[int], embedder: Optional[JobEmbedder]) -> Iterator[tuple[IndexJob, FileOutcome]]:
    """Each job with its outcome, as files finish (staged ones first, without embedding them again)."""
    todo = []
    for job in jobs:
        if load_staged(staging, job.path, job.size, job.mtime_ns, made_with) is not None:
            yield job, FileOutcome(job.path, job.status, RESUMED)
        else:
            todo.append(job)
    if not todo:
        return
    if embedder is not None:
        yield from embedder(todo, staging, space, made_with)
        return
    setup = (space.model_path, threads, space.layer, space.hop, str(staging), made_with)
    if workers > 1:
        yield from zip(todo, process_map(_embed_job, todo, workers, _init_worker, setup))
        return
    total = threads or usable_cpus()
    at_once = files_at_once(total, len(todo))  # several files at a time, as the batch of mde embed
    _init_worker(space.model_path, max(1, total // at_once), *setup[2:])
    outcomes = ordered_map(_embed_job, todo, at_once, weigh=lambda job: decoded_bytes(job.path),
                           budget=DECODED_BUDGET_BYTES)
    try:
        yield from zip(todo, outcomes)
    finally:
        outcomes.close()  # (the running files finish before the model goes)
        _worker.clear()


_worker: dict[str, Any] = {}
"""In an embedding process: the model and the settings, set once by :func:`_init_worker`."""


def _init_worker(model_path: str, threads: Optional[int], layer: str, hop: float, staging: str,
                 made_with: str) -> None:
    _worker.update(model=Model(model_path, threads=threads), layer=layer, hop=hop, staging=Path(staging),
                   made_with=made_with)


def _embed_job(job: IndexJob) -> FileOutcome:
    """Embed one file into the staging area; a user-caused failure becomes a 'failed' outcome."""
    try:
        result = _worker["model"].embed(job.path, hop=_worker["hop"], layer=_worker["layer"])
    except MdeError as exc:
        return FileOutcome(job.path, FAILED, str(exc))
    return stage_result(result, job, _worker["staging"], _worker["made_with"])


def stage_result(result: EmbeddingResult, job: IndexJob, staging: Path, made_with: str) -> FileOutcome:
    """Save the vectors of ``job``'s embedded file into the staging area and say how it went: the job's
    status (with a padding note), or 'failed' when the staging area cannot be written."""
    try:
        save_staged(staging, file_vectors(result, job.path, job.size, job.mtime_ns), made_with)
    except OSError as exc:
        return FileOutcome(job.path, FAILED, f"cannot write {staging}: {exc.strerror or exc}")
    return FileOutcome(job.path, job.status, padding_note(result) if result.padded else "")


def _staged(staging: Path, job: IndexJob, made_with: str) -> FileVectors:
    vectors = load_staged(staging, job.path, job.size, job.mtime_ns, made_with)
    if vectors is None:
        raise MdeError(f"{staging}: the staged vectors of {job.path} vanished during the run")
    return vectors


def _commit(folder: Path, space: VectorSpace, arrays: IndexArrays, previous: Optional[Manifest], exact: bool,
            exact_limit: int, announce: Callable[[str], None]) -> Manifest:
    """Build both faiss indexes over ``arrays`` and write them as the index's next version."""
    faiss = faiss_kinds.load_faiss()
    built = {}
    for name, vectors in ((storage.CLIP_INDEX, arrays.clips), (storage.FRAME_INDEX, arrays.frames)):
        if not exact and len(vectors) > exact_limit:
            announce(f"building the IVF index of {len(vectors):,} {name.split('.')[0]} vectors")
        built[name] = faiss_kinds.build(np.asarray(vectors), exact=exact, exact_limit=exact_limit)
    manifest = Manifest(
        space=space, generation=previous.generation + 1 if previous else 1, n_files=len(arrays.paths),
        n_frames=len(arrays.frames), exact=exact, exact_limit=exact_limit, clip_index=built[storage.CLIP_INDEX][1],
        frame_index=built[storage.FRAME_INDEX][1], faiss_version=faiss.__version__,
    )
    indexes = {name: index for name, (index, _) in built.items()}
    return storage.write_version(folder, manifest, arrays, indexes, previous)
