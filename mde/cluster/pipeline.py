"""The Ray Data pipeline behind ``--ray``: files -> prepare (CPU tasks) -> infer and sink (an actor pool).

1. **Prepare** (CPU tasks, one CPU each): decode, resample, pad, frame and the C front end, by
   :class:`~mde.runtime.extractor.ClipPreparer` built from the model's metadata; a file that fails here
   (bad audio, too short with ``pad`` off) carries its outcome on instead of a clip.
2. **Infer and sink** (``actors`` actors, each with one inference session and ``threads`` CPUs):
   :meth:`~mde.runtime.extractor.Model.infer`, then the command's :class:`Sink` stores the result where the
   local batch would (an output file, an index's staging area) and says how it went. The model file
   travels to the actors through the object store, so the nodes need not share it; audio inputs and the
   sink's folder must be at the same paths on every node (a shared filesystem) or the cluster must be
   this machine.

Jobs are put in a seeded random order (long and short files spread over the blocks), FILES_PER_BLOCK (4)
per block (a task or an actor call each: one file per block cost about 40 ms more per file on 2 cores).

Faults: a killed actor is restarted (up to ACTOR_RESTARTS times) and its call retried, a killed task's
worker likewise (TASK_RETRIES); a retried job is stored again by the sink (atomically, to the same place)
and a row that arrives twice is passed on once, so nothing is lost or duplicated. Past those limits the
pipeline stops: :func:`iter_on_ray` raises PipelineStopped, and the caller reports the jobs without a row.
"""

from __future__ import annotations

import functools
import hashlib
import math
import pickle
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from mde.cluster.session import first_line, ray_session
from mde.errors import MdeError
from mde.runtime.batch import EmbedSettings, short_message
from mde.runtime.extractor import ClipPreparer, ClipTooShort, EmbeddingResult, Model, PreparedClip
from mde.runtime.package import ModelInfo, read_model_info

ACTOR_RESTARTS = 3
"""Times a killed inference actor is restarted before the pipeline gives up."""
TASK_RETRIES = 3
"""Times a task (a prepare task, or an actor's call) whose process died is retried."""
SHUFFLE_SEED = 0
FILES_PER_BLOCK = 4
"""Files per Ray Data block (the unit of a task and of an actor call): fewer blocks, less per-block overhead."""
OUTCOME_FIELDS = ("status", "message", "frames", "padded")
"""What every outcome row holds beside the job's 'index': status, message, frames (int), padded (bool)."""
FAILED, SHORT = "failed", "short"


class Sink(Protocol):
    """Where the infer stage puts a file's result (picklable: it travels to the actors)."""

    def store(self, result: EmbeddingResult, job: dict[str, Any]) -> dict[str, Any]:
        """Store ``result`` of ``job`` (a row holding the job's fields) and return its OUTCOME_FIELDS."""
        ...


def outcome_fields(status: str, message: str = "", frames: int = 0, padded: bool = False) -> dict[str, Any]:
    return {"status": status, "message": message, "frames": frames, "padded": padded}


class PipelineStopped(MdeError):
    """The pipeline stopped past Ray's retries; ``reason`` says why (the jobs without a row are lost)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the Ray pipeline stopped ({reason})")
        self.reason = reason


def iter_on_ray(model_path: Path, jobs: list[dict[str, Any]], settings: EmbedSettings, sink: Sink, *,
                threads: int, actors: int, address: Optional[str], purpose: str) -> Iterator[dict[str, Any]]:
    """Run every job through the pipeline, on the cluster at ``address`` or a local instance, yielding each
    job's outcome row ('index' and OUTCOME_FIELDS) once, as jobs finish. A job is a dict with a unique int
    'index', the audio file's 'source' path and whatever the sink reads (under other names than
    OUTCOME_FIELDS and 'clip'). PipelineStopped after the last row when the pipeline stopped past Ray's
    retries (the jobs without a row are the caller's to report).

    MdeError before any work when ``actors`` < 1 or the cluster has no CPU left beside the actors.
    """
    if actors < 1:
        raise MdeError(f"--actors must be at least 1, got {actors}")
    if not jobs:
        return
    with ray_session(address, purpose) as ray:
        for row in _rows_once(ray, _dataset(ray, model_path, jobs, settings, sink, threads, actors), "index"):
            yield {"index": int(row["index"]), **{key: row[key] for key in OUTCOME_FIELDS}}


def _rows_once(ray: Any, dataset: Any, key: str) -> Iterator[dict[str, Any]]:
    """The dataset's rows as they come, each ``key`` once (a retried job's second row is the same job);
    PipelineStopped when Ray lost a worker or actor past its retries."""
    seen: set[int] = set()
    rows = iter(dataset.iter_rows())
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except ray.exceptions.RayError as exc:
            raise PipelineStopped(first_line(exc)) from None
        if int(row[key]) not in seen:
            seen.add(int(row[key]))
            yield row


def _dataset(ray: Any, model_path: Path, jobs: list[dict[str, Any]], settings: EmbedSettings, sink: Sink,
             threads: int, actors: int) -> Any:
    """The Ray Data dataset whose rows are the outcomes of ``jobs``."""
    info = read_model_info(model_path)
    check_capacity(ray, actors, threads)
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(jobs))
    items = [jobs[int(i)] for i in order]
    model_bytes = model_path.read_bytes()
    model_ref, key = ray.put(model_bytes), hashlib.sha256(model_bytes).hexdigest()
    gpu = {"num_gpus": 1} if settings.device == "cuda" else {}
    with warnings.catch_warnings():
        # Bounded retries need Ray's remote args, which Ray Data deprecates for 2.64 with nothing in their
        # place yet (its defaults retry forever: a file that kills its worker would hang the job); the
        # extra pins ray below 2.64.
        warnings.simplefilter("ignore", DeprecationWarning)
        return (
            ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / FILES_PER_BLOCK)))
            .map(_prepare, fn_kwargs={"info": info, "key": key, "settings": settings}, num_cpus=1,
                 max_retries=TASK_RETRIES)
            .map(_Infer, fn_constructor_args=([model_ref], info.name, threads, settings, sink),
                 compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads, max_restarts=ACTOR_RESTARTS,
                 max_task_retries=TASK_RETRIES, **gpu)
        )


def check_capacity(ray: Any, actors: int, threads: int) -> None:
    """MdeError unless the cluster has a CPU for the prepare tasks beside ``actors`` actors of ``threads``."""
    cpus = float(ray.cluster_resources().get("CPU", 0))
    if cpus < actors * threads + 1:
        raise MdeError(f"the Ray cluster has {cpus:g} CPUs: {actors} actor(s) of {threads} thread(s) leave none "
                       "for decoding; use fewer --actors or --threads")


_preparers: dict[str, ClipPreparer] = {}
"""The prepare tasks' ClipPreparer per model file (by its SHA-256), kept for the life of a Ray worker process."""


def _prepare(row: dict[str, Any], info: ModelInfo, key: str, settings: EmbedSettings) -> dict[str, Any]:
    """Prepare stage (a CPU task): a job row -> the row plus 'clip' (a pickled PreparedClip, every batch
    computed) and an empty 'status', or a 'failed' / 'short' outcome when the file cannot be embedded.
    ``key``: the model file's SHA-256, under which the worker process keeps its preparer."""
    preparer = _preparers.get(key) or _preparers.setdefault(key, ClipPreparer(info))
    s = settings
    try:
        clip = preparer.prepare(row["source"], hop=s.hop, pad=s.pad, layer=s.layer, window=s.window).materialized()
    except ClipTooShort as exc:
        return {**row, **outcome_fields(SHORT, short_message(exc)), "clip": b""}
    except MdeError as exc:
        return {**row, **outcome_fields(FAILED, str(exc)), "clip": b""}
    return {**row, **outcome_fields(""), "clip": pickle.dumps(clip, protocol=pickle.HIGHEST_PROTOCOL)}


class _Infer:
    """Infer-and-sink stage (one inference session per actor): a prepared row -> its outcome row."""

    def __init__(self, model: list[Any], name: str, threads: int, settings: EmbedSettings, sink: Sink) -> None:
        import ray

        self._folder = tempfile.TemporaryDirectory(prefix="mde-actor-")
        path = Path(self._folder.name) / f"{name}.onnx"
        path.write_bytes(ray.get(model[0]))  # (the model file's bytes, by reference: one copy per node)
        self.model = Model(path, threads=threads, backend=settings.backend, device=settings.device)
        self.sink = sink

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        keep = {"index": row["index"]}
        if row["status"]:
            return {**keep, **{key: row[key] for key in OUTCOME_FIELDS}}
        clip: PreparedClip = pickle.loads(row["clip"])
        try:
            result = self.model.infer(clip)
        except MdeError as exc:
            return {**keep, **outcome_fields(FAILED, str(exc))}
        job = {key: value for key, value in row.items() if key != "clip"}
        return {**keep, **self.sink.store(result, job)}



def map_on_ray(fn: Callable[[Any], Any], jobs: list[Any], address: Optional[str],
               purpose: str) -> Iterator[tuple[int, Any]]:
    """``(position, fn(job))`` for every job, as Ray Data CPU tasks (one CPU, TASK_RETRIES retries each) on
    the cluster at ``address`` or a local instance, in the order they finish, each once; PipelineStopped
    when a task is lost past its retries. ``fn`` and the jobs must be picklable."""
    if not jobs:
        return
    with ray_session(address, purpose) as ray:
        items = [{"position": i, "job": pickle.dumps(job)} for i, job in enumerate(jobs)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # (bounded retries: see _dataset)
            dataset = ray.data.from_items(items, override_num_blocks=len(items)).map(
                _apply, fn_kwargs={"fn": fn}, num_cpus=1, max_retries=TASK_RETRIES)
        for row in _rows_once(ray, dataset, "position"):
            yield int(row["position"]), pickle.loads(row["result"])


def _apply(row: dict[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    """A map_on_ray task: ``fn`` of the row's job, pickled."""
    return {"position": row["position"], "result": pickle.dumps(fn(pickle.loads(row["job"])))}


ChunkMap = Callable[[Callable[[Any], Any], list[Any]], Iterator[tuple[int, Any]]]


def ray_chunk_map(address: Optional[str] = None) -> ChunkMap:
    """:func:`map_on_ray` for ``mde prepare`` (a :data:`mde.trainer.data.cache.ChunkMap`)."""
    return functools.partial(map_on_ray, address=address, purpose="Preparing on Ray")
