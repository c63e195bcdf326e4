"""``mde embed --ray``: the batch of :func:`mde.runtime.batch.embed_files` on the Ray pipeline of
:mod:`mde.cluster.pipeline`.

The driver plans the outputs, checks the destination and settles what needs no work, as the local batch
does (an up-to-date output is skipped, a folder in an output's place fails); the other files go through
the pipeline, whose actors write each output with the local batch's writer (atomically, to the same
path). A file the pipeline lost (past Ray's retries) is reported as failed, unless its output is complete
(an actor wrote it and died before it could say so); the outputs written stay, the part files of killed
writes are removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mde.cluster.pipeline import PipelineStopped, iter_on_ray, outcome_fields
from mde.runtime.batch import (
    BatchReport,
    EmbedSettings,
    FileOutcome,
    check_destination,
    check_target,
    output_settings,
    plan_outputs,
    store_result,
)
from mde.runtime.extractor import EmbeddingResult
from mde.runtime.remote import OutputPath, output_path, remove_partial_outputs
from mde.runtime.writers import OutputSettings

WRITTEN = "written before the Ray pipeline stopped"
"""The note of a file whose outcome the pipeline lost after its output was complete."""


@dataclass(frozen=True)
class OutputSink:
    """The pipeline's sink for ``mde embed``: each result to its job's 'target' file, as the local batch."""

    settings: EmbedSettings
    made_with: OutputSettings

    def store(self, result: EmbeddingResult, job: dict[str, Any]) -> dict[str, Any]:
        notes = [job["notes"]] if job["notes"] else []
        outcome = store_result(result, Path(job["source"]), output_path(job["target"]), self.settings, self.made_with,
                               notes)
        return outcome_fields(outcome.status, outcome.message, outcome.frames, outcome.padded)


def embed_files_on_ray(
    model_path: Path,
    sources: Iterable[Path],
    out_dir: OutputPath,
    settings: Optional[EmbedSettings] = None,
    threads: Optional[int] = None,
    actors: Optional[int] = None,
    address: Optional[str] = None,
    on_outcome: Optional[Callable[[FileOutcome], None]] = None,
) -> BatchReport:
    """Embed every source into ``out_dir`` on Ray: the same outputs, outcomes and errors as
    :func:`mde.runtime.batch.embed_files` (``on_outcome`` called as files finish, in any order; the report
    in input order), with ``actors`` actors (default: as many as the cluster's CPUs hold; see
    :func:`mde.cluster.pipeline.pool_size`) of ``threads`` CPUs (default 1) each, on the cluster at
    ``address`` or a local instance (see :func:`mde.cluster.session.ray_session`).

    MdeError before any work for what the local batch refuses, and when the cluster lacks the CPUs for the
    actors (see :func:`mde.cluster.pipeline.check_capacity`).
    """
    settings = settings or EmbedSettings()
    pairs = plan_outputs(sources, out_dir, settings.fmt)
    check_destination(out_dir)
    made_with = output_settings(model_path, settings)
    remove_partial_outputs(target for _, target in pairs)
    outcomes: dict[int, FileOutcome] = {}

    def settle(index: int, outcome: FileOutcome) -> None:
        outcomes[index] = outcome
        if on_outcome:
            on_outcome(outcome)

    jobs = []
    for index, (source, target) in enumerate(pairs):
        settled, notes = check_target(source, target, settings, made_with)
        if settled is not None:
            settle(index, settled)
        else:
            jobs.append({"index": index, "source": str(source), "target": str(target),
                         "notes": "; ".join(notes)})

    lost = ""
    try:
        for row in iter_on_ray(model_path, jobs, settings, OutputSink(settings, made_with), threads=threads or 1,
                               actors=actors, address=address, purpose="Embedding on Ray"):
            source, target = pairs[row["index"]]
            settle(row["index"], FileOutcome(source, target, row["status"], row["message"], int(row["frames"]),
                                             bool(row["padded"])))
    except PipelineStopped as stop:
        lost = f"lost: {stop}"
    finally:
        # Every writer is done now. An actor killed mid-write (Ray retried its files under new temporary
        # names) or a stopped batch leaves parts that no one will finish: removed, as the local batch does.
        remove_partial_outputs(target for _, target in pairs)
    for index, (source, target) in enumerate(pairs):
        if index not in outcomes:  # lost, unless an actor wrote it before the pipeline stopped
            settled, _ = check_target(source, target, settings, made_with)
            written = settled is not None and settled.status == "skipped"
            settle(index, FileOutcome(source, target, "done", WRITTEN) if written
                   else FileOutcome(source, target, "failed", lost))
    return BatchReport([outcomes[index] for index in range(len(pairs))])
