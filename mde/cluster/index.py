"""``mde index --ray``: the files an index update embeds, embedded on the Ray pipeline of
:mod:`mde.cluster.pipeline` into the index's staging area (:mod:`mde.search.vectors`), which the driver
then commits as the local run does (:func:`mde.search.build.build_index` with ``embedder``). The staging
folder must be where the actors can write it (this machine, or a shared filesystem)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mde.cluster.pipeline import FAILED, PipelineStopped, iter_on_ray, outcome_fields
from mde.runtime.batch import EmbedSettings
from mde.runtime.extractor import EmbeddingResult
from mde.search.build import RESUMED, FileOutcome, IndexJob, JobEmbedder, stage_result
from mde.search.manifest import VectorSpace
from mde.search.vectors import load_staged


@dataclass(frozen=True)
class StagingSink:
    """The pipeline's sink for ``mde index``: each file's vectors into the staging area, as the local run."""

    staging: str
    made_with: str

    def store(self, result: EmbeddingResult, job: dict[str, Any]) -> dict[str, Any]:
        index_job = IndexJob(job["source"], int(job["size"]), int(job["mtime_ns"]), job["ends_as"])
        outcome = stage_result(result, index_job, Path(self.staging), self.made_with)
        return outcome_fields(outcome.status, outcome.message, len(result.timestamps), result.padded)


def ray_embedder(threads: Optional[int] = None, actors: Optional[int] = None,
                 address: Optional[str] = None) -> JobEmbedder:
    """A JobEmbedder running on Ray: ``actors`` inference actors (default: as many as the CPUs hold) of
    ``threads`` CPUs (default 1) each, on the cluster at ``address`` or a local instance; a job lost past
    Ray's retries is a failed outcome."""

    def embed(jobs: list[IndexJob], staging: Path, space: VectorSpace,
              made_with: str) -> Iterator[tuple[IndexJob, FileOutcome]]:
        rows = [{"index": i, "source": job.path, "size": job.size, "mtime_ns": job.mtime_ns, "ends_as": job.status}
                for i, job in enumerate(jobs)]
        settings = EmbedSettings(hop=space.hop, layer=space.layer)
        done: set[int] = set()
        try:
            for row in iter_on_ray(Path(space.model_path), rows, settings, StagingSink(str(staging), made_with),
                                   threads=threads or 1, actors=actors, address=address, purpose="Indexing on Ray"):
                done.add(row["index"])
                yield jobs[row["index"]], FileOutcome(jobs[row["index"]].path, row["status"], row["message"])
        except PipelineStopped as stop:  # lost, unless an actor staged it before the pipeline stopped
            for i, job in enumerate(jobs):
                if i not in done:
                    staged = load_staged(staging, job.path, job.size, job.mtime_ns, made_with) is not None
                    yield job, FileOutcome(job.path, job.status, RESUMED) if staged else FileOutcome(
                        job.path, FAILED, f"lost: {stop}")

    return embed
