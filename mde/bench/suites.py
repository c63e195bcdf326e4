"""What every ``mde bench`` suite shares: its settings, writing its JSON + Markdown + PNG, and the list
that ``mde bench all`` runs.

A suite is a function ``run(settings: BenchSettings) -> SuiteResult`` in a module of this package; it
imports torch, librosa and the like only inside, and records a baseline it cannot run as skipped with
the reason instead of failing.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mde.bench.report import Column, Timing, write_results
from mde.errors import MdeError

DEVICES = ("cpu", "cuda")
SUITES: dict[str, str] = {
    "frontend": "mde.bench.frontend_suite:run",
    "models": "mde.bench.models_suite:run",
    "decode": "mde.bench.decode_suite:run",
    "e2e": "mde.bench.e2e_suite:run",
    "stream": "mde.bench.stream_suite:run",
    "search": "mde.bench.search_suite:run",
}
"""Suite name -> 'module:function'; imported only when the suite runs."""
ALL_SUITES: list[str] = ["frontend", "models", "decode", "e2e", "stream", "search"]
"""What ``mde bench all`` runs, in order."""
MTAT_CLIP = "joram-moments_of_clarity-08-solipsism-59-88.mp3"
"""The 29.1 s, 16 kHz mono MagnaTagATune clip of the shared test data, the suites' preferred input."""


@dataclass(frozen=True)
class BenchSettings:
    """What a suite measures and where it writes.

    out: folder for bench_<suite>_<device>.json / .md / .png.
    device: 'cpu' or 'cuda' (cuda adds the GPU rows; it needs a CUDA device).
    threads: the "N threads" setting: CPU threads for multi-thread rows and for inference (None: all
      cores, os.cpu_count()).
    quick: few rounds, short clips, small batches (for tests and smoke runs).
    rounds: timed rounds per row (None: the suite's default, fewer for slow rows).
    models: models for the models suite (store names or .onnx paths; empty: the default set).
    audio: folder of real audio: the clips, the int8 calibration set and the end-to-end files (None:
      $MDE_TEST_DATA/audio or ../shared/data/audio beside a source checkout, when present).
    seed_checkpoint: a first-seed FCN29 .ckpt for the end-to-end comparison with the seed's pipeline
      (None: checkpoints/FCN29-*.ckpt beside the default audio folder, when present).
    stream_seconds: seconds of audio the stream suite streams at real time (None: 60, quick: 8).
    ray: the e2e suite also runs each model on a local Ray instance (``mde embed --ray``; the ray extra).
    announce: receives one-line progress messages.
    """

    out: Path = Path("bench-results")
    device: str = "cpu"
    threads: Optional[int] = None
    quick: bool = False
    rounds: Optional[int] = None
    models: tuple[str, ...] = ()
    audio: Optional[Path] = None
    seed_checkpoint: Optional[Path] = None
    stream_seconds: Optional[float] = None
    ray: bool = False
    announce: Callable[[str], None] = field(default=print, compare=False)

    @property
    def n_threads(self) -> int:
        """The N of "1 and N threads": ``threads`` or every core."""
        return self.threads or os.cpu_count() or 1


@dataclass(frozen=True)
class SuiteResult:
    """Files a suite wrote (png None when no plot could be drawn) and its Markdown text."""

    json: Path
    md: Path
    png: Optional[Path]
    markdown: str


def check_settings(settings: BenchSettings) -> None:
    """One-line MdeError for a bad device, thread count, round count, missing folder or unknown model;
    for 'cuda', unless torch sees a CUDA device."""
    if settings.device not in DEVICES:
        raise MdeError(f"unknown device {settings.device!r}; choose from {', '.join(DEVICES)}")
    if settings.threads is not None and settings.threads < 1:
        raise MdeError(f"--threads must be at least 1, got {settings.threads}")
    if settings.rounds is not None and settings.rounds < 1:
        raise MdeError(f"--rounds must be at least 1, got {settings.rounds}")
    if settings.audio is not None and not settings.audio.is_dir():
        raise MdeError(f"--audio {settings.audio}: no such folder")
    if settings.seed_checkpoint is not None and not settings.seed_checkpoint.is_file():
        raise MdeError(f"--seed-checkpoint {settings.seed_checkpoint}: no such file")
    if settings.models:
        from mde.runtime import store

        for name in settings.models:
            store.resolve(name)  # ModelNotFound (one line) before any suite starts
    if settings.device == "cuda" and not cuda_available():
        raise MdeError("no CUDA device (torch is not installed or torch.cuda.is_available() is False)")


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def data_root() -> Optional[Path]:
    """The shared test data folder ($MDE_TEST_DATA, or ../shared/data beside a source checkout), if any."""
    candidates = [os.environ.get("MDE_TEST_DATA"), Path(__file__).resolve().parents[3] / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "audio").is_dir():
            return Path(candidate)
    return None


def audio_dir(settings: BenchSettings) -> Optional[Path]:
    """The folder of real audio to use (``settings.audio`` or the shared test data's), if any."""
    if settings.audio is not None:
        return settings.audio
    root = data_root()
    return root / "audio" if root else None


def reference_clip(settings: BenchSettings) -> Optional[Path]:
    """The clip the suites cut their inputs from: the MTAT clip when present, else the first audio file."""
    from mde.audio import find_audio_files

    folder = audio_dir(settings)
    if folder is None:
        return None
    if (folder / MTAT_CLIP).is_file():
        return folder / MTAT_CLIP
    files = find_audio_files([folder])
    return files[0] if files else None


def result_stem(settings: BenchSettings, suite: str) -> Path:
    """``<out>/bench_<suite>_<device>`` (the files add .json, .md and .png)."""
    return settings.out / f"bench_{suite}_{settings.device}"


def finish(
    settings: BenchSettings,
    suite: str,
    title: str,
    timings: list[Timing],
    *,
    ours: Optional[str] = None,
    references: Optional[Mapping[str, str]] = None,
    metrics: Optional[Mapping[str, Mapping[str, object]]] = None,
    columns: Sequence[Column] = (),
    groups: Optional[Sequence[str]] = None,
    skipped: Optional[Mapping[str, str]] = None,
    extra: Optional[Mapping[str, object]] = None,
    packages: Sequence[str] = (),
    notes: str = "",
    ratio_heading: Optional[str] = None,
) -> SuiteResult:
    """Plot the rows (PNG), then write JSON + Markdown naming the machine, versions and command, the
    skipped baselines with their reasons, and whether a PNG was drawn."""
    from mde.bench.plot import plot_timings

    stem = result_stem(settings, suite)
    png = stem.with_suffix(".png")
    subtitle = f"{settings.device}, {settings.n_threads} threads max" + (", quick" if settings.quick else "")
    png_problem = plot_timings(png, title, timings, subtitle, groups) if timings else "no rows measured: no PNG"
    skipped = dict(skipped or {})
    lines = [notes] if notes else []
    if skipped:
        lines.append("Not measured: " + "; ".join(f"{name} ({reason})" for name, reason in skipped.items()) + ".")
    lines.append(f"Plot: {png.name}." if png_problem is None else f"Plot: none ({png_problem}).")
    record = {
        "suite": suite, "device": settings.device, "threads": settings.n_threads, "quick": settings.quick,
        "skipped": skipped, "png": png.name if png_problem is None else None, **(extra or {}),
    }
    json_path, md_path = write_results(
        stem, title, timings, ours, record, packages=packages, notes="\n\n".join(lines),
        references=references, metrics=metrics, columns=columns, ratio_heading=ratio_heading,
    )
    return SuiteResult(json_path, md_path, None if png_problem else png, md_path.read_text())


def suite_function(name: str) -> Callable[[BenchSettings], SuiteResult]:
    """The run function of suite ``name`` (imported now)."""
    if name not in SUITES:
        raise MdeError(f"unknown benchmark suite {name!r}; choose from {', '.join(SUITES)}")
    module, function = SUITES[name].split(":")
    return getattr(importlib.import_module(module), function)


def run_suite(name: str, settings: BenchSettings) -> SuiteResult:
    """Check the settings, then run one suite."""
    check_settings(settings)
    return suite_function(name)(settings)


def run_all(settings: BenchSettings, names: Optional[Sequence[str]] = None) -> list[SuiteResult]:
    """Run the suites ``names`` (default: ALL_SUITES) in order with the same settings."""
    check_settings(settings)
    results = []
    names = list(names or ALL_SUITES)
    for name in names:
        if len(names) > 1:
            settings.announce(f"suite {name}")
        results.append(suite_function(name)(settings))
    return results
