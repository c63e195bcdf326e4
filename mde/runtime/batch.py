"""Embedding many files: output naming, checking the destination, skipping finished work, failure reports.

``embed_files`` is the Python face of ``mde embed``. A destination that cannot work (a file, a folder
that cannot be written) stops the batch before any model is loaded. Then a failed file (bad audio, a
write error such as a full disk) is reported and the batch goes on. An existing output is skipped
only when it is complete and was made with the same model file and settings (see
:mod:`mde.runtime.writers`); otherwise it is recomputed with a note, so a killed batch resumes where it
stopped and a rerun with other settings never keeps stale outputs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mde.audio import check_span, decoded_bytes
from mde.errors import MdeError
from mde.runtime.backends.common import check_choice
from mde.runtime.chunker import frame_grid
from mde.runtime.extractor import ClipTooShort, EmbeddingResult, Model, check_request
from mde.runtime.package import check_seconds, read_model_info
from mde.runtime.remote import OutputPath, RemotePath, check_remote_folder, on_local_file, remove_partial_outputs
from mde.runtime.workers import ordered_map, process_map
from mde.runtime.writers import FORMATS, OutputSettings, reuse_problem, write_result

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one input: status is 'done', 'skipped' (an up-to-date output
    exists), 'short' or 'failed'."""

    source: Path
    target: OutputPath
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
    """How each file is embedded and written (window and hop in seconds; None = the model's), the span of
    each file embedded (from ``offset`` seconds for ``duration`` seconds; None = to the end), and which
    inference backend and device run the model (see :func:`mde.runtime.backends.factory.make_backend`)."""

    fmt: str = "npz"
    hop: Optional[float] = None
    window: Optional[float] = None
    pad: bool = True
    layer: Optional[str] = None
    overwrite: bool = False
    backend: str = "ort"
    device: str = "cpu"
    offset: float = 0.0
    duration: Optional[float] = None

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise MdeError(f"unknown format {self.fmt!r}; choose from {', '.join(FORMATS)}")
        check_choice(self.backend, self.device)
        check_seconds(self.window, self.hop)
        check_span(self.offset, self.duration)


def plan_outputs(sources: Iterable[Path], out_dir: OutputPath, fmt: str) -> list[tuple[Path, OutputPath]]:
    """Pair each input with ``out_dir/<stem>.<fmt>``; two inputs that would share an output are an error."""
    pairs: list[tuple[Path, OutputPath]] = []
    claimed: dict[OutputPath, Path] = {}
    for source in sources:
        target = out_dir / f"{source.stem}.{fmt}"
        if target in claimed:
            raise MdeError(
                f"{claimed[target]} and {source} would both write {target}; embed them into separate --out folders"
            )
        claimed[target] = source
        pairs.append((source, target))
    return pairs


def check_destination(out_dir: OutputPath) -> None:
    """MdeError unless files can be created in ``out_dir``, or in its nearest existing ancestor when it
    does not exist yet (it is created by the first write). Checked by creating and removing a file:
    permission bits alone do not tell (root ignores them; a read-only mount does not show in them).
    A folder on a pyarrow filesystem is created and checked likewise (see :mod:`mde.runtime.remote`)."""
    if isinstance(out_dir, RemotePath):
        check_remote_folder(out_dir)
        return
    existing = out_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        what = "it" if existing == out_dir else str(existing)
        raise MdeError(f"cannot write outputs to {out_dir}: {what} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise MdeError(f"cannot write outputs to {out_dir}: {exc.strerror or exc}") from None


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def output_settings(model_path: Path, settings: EmbedSettings) -> OutputSettings:
    """What the outputs of this batch record: the model file's digest and the resolved layer, window and
    hop (seconds). Reads the model's metadata only (no inference session); MdeError if the model does
    not accept the layer, window or hop."""
    info = read_model_info(model_path)
    check_request(info, settings.layer, settings.window, settings.hop)
    grid = frame_grid(info, window=settings.window, hop=settings.hop)
    return OutputSettings(
        model_sha256=file_sha256(model_path), layer=settings.layer or info.embedding_output,
        window=grid.window_seconds, hop=grid.step * grid.unit_seconds, pad=settings.pad,
        sample_rate=info.sample_rate, offset=settings.offset, max_duration=settings.duration or 0.0,
    )


def embed_one(
    model: Model, source: Path, target: OutputPath, settings: EmbedSettings, made_with: OutputSettings
) -> FileOutcome:
    """Embed one file and write its output made with ``made_with``, unless an up-to-date one exists.
    User-caused failures, write errors included, become a 'failed' outcome."""
    settled, notes = check_target(source, target, settings, made_with)
    if settled is not None:
        return settled
    try:
        result = model.embed(source, hop=settings.hop, pad=settings.pad, layer=settings.layer, window=settings.window,
                             offset=settings.offset, duration=settings.duration)
    except ClipTooShort as exc:
        return FileOutcome(source, target, "short", short_message(exc))
    except MdeError as exc:
        return FileOutcome(source, target, "failed", str(exc))
    return store_result(result, source, target, settings, made_with, notes)


def check_target(
    source: Path, target: OutputPath, settings: EmbedSettings, made_with: OutputSettings
) -> tuple[Optional[FileOutcome], list[str]]:
    """What is settled before any work on ``source``: (its outcome, []) when its output is up to date
    ('skipped') or cannot be written ('failed': the target is a folder), else (None, notes about the
    output it replaces)."""
    if target.is_dir():
        return FileOutcome(source, target, "failed", f"{target} is a folder; remove it or choose another output "
                                                     "folder"), []
    notes = []
    if target.exists() and not settings.overwrite:
        problem = on_local_file(target, lambda path: reuse_problem(path, settings.fmt, made_with))
        if problem is None:
            return FileOutcome(source, target, "skipped", "up to date"), []
        notes.append(f"the existing {target} {problem}: recomputed")
    return None, notes


def padding_note(result: EmbeddingResult) -> str:
    """The note of a clip that was zero-padded to one window."""
    return f"{result.duration:.2f} s is shorter than one window: zero-padded to one window"


def short_message(exc: ClipTooShort) -> str:
    """The message of a clip shorter than one window with padding off (status 'short')."""
    return f"{exc}; skipped (--no-pad)"


def store_result(result: EmbeddingResult, source: Path, target: OutputPath, settings: EmbedSettings,
                 made_with: OutputSettings, notes: list[str]) -> FileOutcome:
    """Write ``result`` (atomically) and say how it went: 'done' with ``notes`` (and a padding note), or
    'failed' when the file cannot be written."""
    try:
        write_result(result, target, settings.fmt, made_with)
    except OSError as exc:
        return FileOutcome(source, target, "failed", f"cannot write {target}: {exc.strerror or exc}")
    if result.padded:
        notes = [*notes, padding_note(result)]
    return FileOutcome(source, target, "done", "; ".join(notes), frames=len(result.timestamps), padded=result.padded)


_worker_model: Optional[Model] = None


def _init_worker(model_path: str, threads: Optional[int], settings: EmbedSettings) -> None:
    global _worker_model
    _worker_model = _load(model_path, threads, settings)


DECODED_BUDGET_BYTES = 1 << 30
"""The most decoded audio (bytes, float32 at the files' rates, estimated from their headers) that the
files one process embeds at a time may hold: a file longer than that (a 2-hour 44.1 kHz stereo file is
2.5 GB) is embedded alone, as with one thread."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: ``taskset``, a container's cpuset)."""
    return len(os.sched_getaffinity(0))


def files_at_once(threads: int, files: int) -> int:
    """How many files a batch of ``files`` embeds at a time with ``threads`` threads: one per thread (one
    file at a time scales worse: 1.45x on 2 cores against 1.9x for FCN29), never more than there are."""
    return max(1, min(threads, files))


def _load(model_path: str | Path, threads: Optional[int], settings: EmbedSettings) -> Model:
    return Model(model_path, threads=threads, backend=settings.backend, device=settings.device)


def _work(job: tuple[Path, OutputPath, EmbedSettings, OutputSettings]) -> FileOutcome:
    assert _worker_model is not None
    return embed_one(_worker_model, *job)


def iter_embed(
    model_path: Path,
    pairs: list[tuple[Path, OutputPath]],
    settings: EmbedSettings,
    made_with: OutputSettings,
    threads: Optional[int] = None,
    workers: int = 1,
) -> Generator[FileOutcome, None, None]:
    """Outcomes as files finish (in input order), using ``workers`` processes when more than one
    (see :mod:`mde.runtime.workers`: they stop with the batch and die with this process), each with
    ``threads`` threads. In one process the threads (default: the CPUs this process may run on) embed
    :func:`files_at_once` files at a time with one shared model, each inference call with the threads left
    per file: decoding, the front end and ONNX Runtime release the GIL, so the cores overlap one file's
    decoding with another's inference."""
    if workers <= 1:
        total = threads or usable_cpus()
        at_once = files_at_once(total, len(pairs))
        model = _load(model_path, max(1, total // at_once), settings)

        def one(pair: tuple[Path, OutputPath]) -> FileOutcome:
            return embed_one(model, pair[0], pair[1], settings, made_with)

        yield from ordered_map(one, pairs, at_once, weigh=lambda pair: decoded_bytes(pair[0]),
                               budget=DECODED_BUDGET_BYTES)
        return
    jobs = [(source, target, settings, made_with) for source, target in pairs]
    yield from process_map(_work, jobs, workers, _init_worker, (os.fspath(model_path), threads, settings))


def embed_files(
    model_path: Path,
    sources: Iterable[Path],
    out_dir: OutputPath,
    settings: EmbedSettings = EmbedSettings(),
    threads: Optional[int] = None,
    workers: int = 1,
    on_outcome: Optional[Callable[[FileOutcome], None]] = None,
) -> BatchReport:
    """Embed every source into ``out_dir`` (a local folder, or a folder on a pyarrow filesystem: see
    :func:`mde.runtime.remote.output_path`); ``on_outcome`` is called as each file finishes.

    Before any model is loaded: MdeError if two sources would share an output, if ``out_dir`` cannot
    be written, or if the model does not accept the settings. Temporary files that a killed earlier
    batch left beside these outputs are removed (run one batch per output folder at a time).
    """
    pairs = plan_outputs(sources, out_dir, settings.fmt)
    check_destination(out_dir)
    made_with = output_settings(model_path, settings)
    remove_partial_outputs(target for _, target in pairs)
    report = BatchReport()
    outcomes = iter_embed(model_path, pairs, settings, made_with, threads, workers)
    try:
        for outcome in outcomes:
            report.outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
    except BaseException:
        # Ctrl-C can land between a temporary file's creation and the cleanup that removes it; once the
        # workers (processes or threads) are gone, every part of these outputs is this batch's to remove.
        outcomes.close()
        remove_partial_outputs(target for _, target in pairs)
        raise
    return report
