"""The Ray Data pipeline behind ``--ray``: files -> prepare -> infer and sink.

- **Prepare**: decode, resample, pad, frame and the C front end, by
  :class:`~mde.runtime.extractor.ClipPreparer` built from the model's metadata; a file that fails here
  (bad audio, too short with ``pad`` off) carries its outcome on instead of a clip.
- **Infer and sink** (``actors`` actors, each with one inference session and ``threads`` CPUs):
  :meth:`~mde.runtime.extractor.Model.infer`, then the command's :class:`Sink` stores the result where the
  local batch would (an output file, an index's staging area) and says how it went.

Two topologies, by device:

- **cpu**: each actor prepares its own files (one stage). Split into CPU tasks, the two halves ran at
  their own speeds on their own CPUs (FCN29: 18 ms to prepare, 38 ms to infer a 29 s file on one core),
  so one side idled: 1.28x the local batch's time on 2 cores, against about parity fused; the fused stage
  also sends no log-mel through the object store. The default pool fills the cluster's CPUs.
- **cuda**: prepare runs as CPU tasks (one CPU each) feeding GPU actors (one GPU each), the CPUs
  decoding while the GPUs infer. The cluster must keep a CPU free for them.

The model file travels to the actors through the object store, so the nodes need not share it; audio
inputs and the sink's folder must be at the same paths on every node (a shared filesystem), or the sink
a pyarrow filesystem URI, or the cluster this machine.

Jobs are put in a seeded random order (long and short files spread over the blocks), FILES_PER_BLOCK (4)
per block (a task or an actor call each: one file per block cost about 40 ms more per file on 2 cores).

Faults: a killed actor is restarted (up to ACTOR_RESTARTS times) and its call retried, a killed task's
worker likewise (TASK_RETRIES); a retried job is stored again by the sink (atomically, to the same place)
and a row that arrives twice is passed on once, so nothing is lost or duplicated. Past those limits the
pipeline stops (a watchdog also notices when every inference actor is dead, which Ray Data itself
would wait on forever): :func:`iter_on_ray` raises PipelineStopped, and the caller reports the jobs without a row.
"""

from __future__ import annotations

import functools
import hashlib
import math
import pickle
import queue
import tempfile
import threading
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
                threads: int, actors: Optional[int], address: Optional[str], purpose: str) -> Iterator[dict[str, Any]]:
    """Run every job through the pipeline, on the cluster at ``address`` or a local instance, yielding each
    job's outcome row ('index' and OUTCOME_FIELDS) once, as jobs finish. A job is a dict with a unique int
    'index', the audio file's 'source' path and whatever the sink reads (under other names than
    OUTCOME_FIELDS and 'clip'). PipelineStopped after the last row when the pipeline stopped past Ray's
    retries (the jobs without a row are the caller's to report).

    ``actors``: the pool's size; None for :func:`pool_size`'s default. MdeError before any work when it is
    below 1 or the cluster lacks the CPUs it needs (see :func:`check_capacity`).
    """
    if actors is not None and actors < 1:
        raise MdeError(f"--actors must be at least 1, got {actors}")
    if not jobs:
        return
    with ray_session(address, purpose) as ray:
        dataset = _dataset(ray, model_path, jobs, settings, sink, threads, actors)
        for row in _rows_once(ray, dataset, "index", actor_class=_Infer.__name__):
            yield {"index": int(row["index"]), **{key: row[key] for key in OUTCOME_FIELDS}}


def _rows_once(ray: Any, dataset: Any, key: str, actor_class: Optional[str] = None) -> Iterator[dict[str, Any]]:
    """The dataset's rows as they come, each ``key`` once (a retried job's second row is the same job);
    PipelineStopped when Ray lost a worker or actor past its retries. With ``actor_class`` (the class of the
    dataset's actor pool) a watchdog also stops it when every actor of that pool is dead past its restarts:
    Ray Data would then wait forever for an actor that will never come back."""
    rows = _rows_in_thread(dataset)
    seen: set[int] = set()
    lost_checks = 0
    while True:
        try:
            kind, item = rows.get(timeout=WATCH_INTERVAL_S)
        except queue.Empty:
            lost_checks = lost_checks + 1 if actor_class and _pool_lost(ray, actor_class) else 0
            if lost_checks >= LOST_CHECKS:
                raise PipelineStopped("every inference actor died past its restarts") from None
            continue
        if kind == "end":
            return
        if kind == "error":
            if isinstance(item, ray.exceptions.RayError):
                raise PipelineStopped(first_line(item)) from None
            raise item
        if int(item[key]) not in seen:
            seen.add(int(item[key]))
            yield item


WATCH_INTERVAL_S = 2.0
"""Seconds without a row after which the watchdog looks at the inference actors."""
LOST_CHECKS = 2
"""Consecutive looks that must find the pool dead past its restarts before the pipeline is stopped (at the
normal end Ray Data kills its actors too, just after the last row)."""
_LIVE_ACTOR_STATES = frozenset({"DEPENDENCIES_UNREADY", "PENDING_CREATION", "ALIVE", "RESTARTING"})


def _rows_in_thread(dataset: Any) -> queue.Queue[tuple[str, Any]]:
    """The dataset's rows, read by a daemon thread into a queue as ('row', row), then ('end', None) or
    ('error', exception): the reader may block forever in Ray Data, the caller's loop does not."""
    rows: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=256)

    def read() -> None:
        try:
            for row in dataset.iter_rows():
                rows.put(("row", row))
        except BaseException as exc:  # handed to the caller's thread, which raises it
            rows.put(("error", exc))
        else:
            rows.put(("end", None))

    threading.Thread(target=read, name="mde-ray-rows", daemon=True).start()
    return rows


def _pool_lost(ray: Any, actor_class: str) -> bool:
    """Whether this job started actors of ``actor_class`` (Ray Data names them 'MapWorker(...Map(CLASS))')
    and every one is dead, at least one after ACTOR_RESTARTS restarts. Reads the cluster's actor table from
    its control store (Ray's state API would need the dashboard, which the extra does not install)."""
    from ray._private import state

    job = ray.get_runtime_context().get_job_id()
    pool = [actor for actor in state.actors().values()
            if actor.get("JobID") == job and str(actor.get("ActorClassName", "")).endswith(f"Map({actor_class}))")]
    return bool(pool) and all(actor.get("State") not in _LIVE_ACTOR_STATES for actor in pool) and any(
        int(actor.get("NumRestarts", 0)) >= ACTOR_RESTARTS for actor in pool)


def _dataset(ray: Any, model_path: Path, jobs: list[dict[str, Any]], settings: EmbedSettings, sink: Sink,
             threads: int, actors: Optional[int]) -> Any:
    """The Ray Data dataset whose rows are the outcomes of ``jobs`` (the topology of ``settings.device``)."""
    info = read_model_info(model_path)
    split = prepares_apart(settings.device)
    actors = actors or pool_size(ray, threads, settings.device)
    check_capacity(ray, actors, threads, settings.device)
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
        dataset = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / FILES_PER_BLOCK)))
        if split:
            dataset = dataset.map(_prepare, fn_kwargs={"info": info, "key": key, "settings": settings}, num_cpus=1,
                                  max_retries=TASK_RETRIES)
        return dataset.map(_Infer, fn_constructor_args=([model_ref], info, threads, settings, sink, not split),
                           compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads,
                           max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES, **gpu)


def prepares_apart(device: str) -> bool:
    """Whether files are prepared by CPU tasks apart from the inference actors (cuda) or by the actors (cpu)."""
    return device == "cuda"


def pool_size(ray: Any, threads: int, device: str) -> int:
    """The default number of inference actors: on cpu as many as the cluster's CPUs hold (``threads`` each),
    on cuda one (a GPU each; more with --actors)."""
    if prepares_apart(device):
        return 1
    return max(1, int(float(ray.cluster_resources().get("CPU", 0)) // threads))


def check_capacity(ray: Any, actors: int, threads: int, device: str = "cpu") -> None:
    """MdeError unless the cluster has the CPUs for ``actors`` actors of ``threads`` (and, on cuda, one more
    for the prepare tasks)."""
    cpus = float(ray.cluster_resources().get("CPU", 0))
    spare = 1 if prepares_apart(device) else 0
    if cpus < actors * threads + spare:
        raise MdeError(f"the Ray cluster has {cpus:g} CPUs: {actors} actor(s) of {threads} thread(s)"
                       + (" leave none for decoding" if spare else " do not fit") + "; use fewer --actors or --threads")


_preparers: dict[str, ClipPreparer] = {}
"""The prepare tasks' ClipPreparer per model file (by its SHA-256), kept for the life of a Ray worker process."""


def _prepare(row: dict[str, Any], info: ModelInfo, key: str, settings: EmbedSettings) -> dict[str, Any]:
    """Prepare stage as a CPU task (cuda): a job row -> the row plus 'clip' (a pickled PreparedClip, every
    batch computed) and an empty 'status', or a 'failed' / 'short' outcome when the file cannot be embedded.
    ``key``: the model file's SHA-256, under which the worker process keeps its preparer."""
    preparer = _preparers.get(key) or _preparers.setdefault(key, ClipPreparer(info))
    clip, outcome = _prepared(preparer, row, settings)
    return {**row, **outcome, "clip": b"" if clip is None else pickle.dumps(clip, protocol=pickle.HIGHEST_PROTOCOL)}


def _prepared(preparer: ClipPreparer, row: dict[str, Any], settings: EmbedSettings) -> tuple[Optional[PreparedClip],
                                                                                             dict[str, Any]]:
    """(the job's prepared clip, an empty outcome), or (None, its 'failed' / 'short' outcome)."""
    s = settings
    try:
        clip = preparer.prepare(row["source"], hop=s.hop, pad=s.pad, layer=s.layer, window=s.window,
                                offset=s.offset, duration=s.duration).materialized()
    except ClipTooShort as exc:
        return None, outcome_fields(SHORT, short_message(exc))
    except MdeError as exc:
        return None, outcome_fields(FAILED, str(exc))
    return clip, outcome_fields("")


class _Infer:
    """Infer-and-sink stage (one inference session per actor): a job row (``prepares``: the actor prepares
    it) or a prepared row -> its outcome row."""

    def __init__(self, model: list[Any], info: ModelInfo, threads: int, settings: EmbedSettings, sink: Sink,
                 prepares: bool) -> None:
        import ray

        self._folder = tempfile.TemporaryDirectory(prefix="mde-actor-")
        path = Path(self._folder.name) / f"{info.name}.onnx"
        path.write_bytes(ray.get(model[0]))  # (the model file's bytes, by reference: one copy per node)
        self.model = Model(path, threads=threads, backend=settings.backend, device=settings.device)
        self.preparer = ClipPreparer(info) if prepares else None
        self.settings, self.sink = settings, sink

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        keep = {"index": row["index"]}
        if self.preparer is not None:
            clip, outcome = _prepared(self.preparer, row, self.settings)
        else:
            clip = pickle.loads(row["clip"]) if not row["status"] else None
            outcome = {key: row[key] for key in OUTCOME_FIELDS}
        if clip is None:
            return {**keep, **outcome}
        try:
            result = self.model.infer(clip)
        except MdeError as exc:
            return {**keep, **outcome_fields(FAILED, str(exc))}
        job = {key: value for key, value in row.items() if key not in ("clip", *OUTCOME_FIELDS)}
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
