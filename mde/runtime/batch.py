"""Embedding many files: output naming, skipping finished work, worker processes, failure reports.

``embed_files`` is the Python face of ``mde embed``. A failed file is reported and the batch goes on;
existing outputs are skipped unless ``overwrite``, so a killed batch resumes where it stopped.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from mde.errors import MdeError
from mde.runtime.backends.common import check_choice
from mde.runtime.extractor import ClipTooShort, Model
from mde.runtime.writers import FORMATS, write_result


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one input: status is 'done', 'skipped' (output exists), 'short' or 'failed'."""

    source: Path
    target: Path
    status: str
    message: str = ""
    frames: int = 0
    padded: bool = False


@dataclass
class BatchReport:
    """All outcomes of a batch, in input order."""

    outcomes: list[FileOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


@dataclass(frozen=True)
class EmbedSettings:
    """How each file is embedded and written (window and hop in seconds; None = the model's), and which
    inference backend and device run the model (see :func:`mde.runtime.backends.factory.make_backend`)."""

    fmt: str = "npz"
    hop: Optional[float] = None
    window: Optional[float] = None
    pad: bool = True
    layer: Optional[str] = None
    overwrite: bool = False
    backend: str = "ort"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise MdeError(f"unknown format {self.fmt!r}; choose from {', '.join(FORMATS)}")
        check_choice(self.backend, self.device)
        if self.hop is not None and not self.hop > 0:
            raise MdeError(f"hop must be positive, got {self.hop} s")
        if self.window is not None and not self.window > 0:
            raise MdeError(f"window must be positive, got {self.window} s")


def plan_outputs(sources: Iterable[Path], out_dir: Path, fmt: str) -> list[tuple[Path, Path]]:
    """Pair each input with ``out_dir/<stem>.<fmt>``; two inputs that would share an output are an error."""
    pairs: list[tuple[Path, Path]] = []
    claimed: dict[Path, Path] = {}
    for source in sources:
        target = out_dir / f"{source.stem}.{fmt}"
        if target in claimed:
            raise MdeError(
                f"{claimed[target]} and {source} would both write {target}; embed them into separate --out folders"
            )
        claimed[target] = source
        pairs.append((source, target))
    return pairs


def embed_one(model: Model, source: Path, target: Path, settings: EmbedSettings) -> FileOutcome:
    """Embed one file and write its output; user-caused failures become a 'failed' outcome."""
    if target.exists() and not settings.overwrite:
        return FileOutcome(source, target, "skipped", "output exists")
    try:
        result = model.embed(source, hop=settings.hop, pad=settings.pad, layer=settings.layer, window=settings.window)
        write_result(result, target, settings.fmt)
    except ClipTooShort as exc:
        return FileOutcome(source, target, "short", f"{exc}; skipped (--no-pad)")
    except MdeError as exc:
        return FileOutcome(source, target, "failed", str(exc))
    note = ""
    if result.padded:
        note = f"{result.duration:.2f} s is shorter than one window: zero-padded to one window"
    return FileOutcome(source, target, "done", note, frames=len(result.timestamps), padded=result.padded)


_worker_model: Optional[Model] = None


def _init_worker(model_path: str, threads: Optional[int], settings: EmbedSettings) -> None:
    global _worker_model
    _worker_model = _load(model_path, threads, settings)


def _load(model_path: str | Path, threads: Optional[int], settings: EmbedSettings) -> Model:
    return Model(model_path, threads=threads, backend=settings.backend, device=settings.device)


def _work(job: tuple[Path, Path, EmbedSettings]) -> FileOutcome:
    assert _worker_model is not None
    return embed_one(_worker_model, *job)


def iter_embed(
    model_path: Path,
    pairs: list[tuple[Path, Path]],
    settings: EmbedSettings,
    threads: Optional[int] = None,
    workers: int = 1,
) -> Iterator[FileOutcome]:
    """Outcomes as files finish (in input order), using ``workers`` processes when more than one."""
    if workers <= 1:
        model = _load(model_path, threads, settings)
        for source, target in pairs:
            yield embed_one(model, source, target, settings)
        return
    context = multiprocessing.get_context("spawn")
    jobs = [(source, target, settings) for source, target in pairs]
    with ProcessPoolExecutor(workers, context, _init_worker, (os.fspath(model_path), threads, settings)) as pool:
        yield from pool.map(_work, jobs)


def embed_files(
    model_path: Path,
    sources: Iterable[Path],
    out_dir: Path,
    settings: EmbedSettings = EmbedSettings(),
    threads: Optional[int] = None,
    workers: int = 1,
    on_outcome: Optional[Callable[[FileOutcome], None]] = None,
) -> BatchReport:
    """Embed every source into ``out_dir``; ``on_outcome`` is called as each file finishes."""
    pairs = plan_outputs(sources, out_dir, settings.fmt)
    report = BatchReport()
    for outcome in iter_embed(model_path, pairs, settings, threads, workers):
        report.outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)
    return report
