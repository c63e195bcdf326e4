"""A synthesized tagged corpus that needs no download: random scores rendered to WAV, with a manifest.

Each clip ``i`` draws its score (:mod:`mde.trainer.data.synth_score`, which lists the tags and how each
arises) and its noise from a generator seeded with ``(seed, i)``, so a corpus depends only on
``seed``, ``n``, the sample rate, the length and the engine, not on the number of workers. The rendered
mix is scaled to the score's RMS level, passed through tanh (a soft limiter: it changes samples below
0.3 by under 3 %, and rounds off the peaks of loud clips) and written as 16-bit PCM.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from mde.audio import MIN_SAMPLE_RATE
from mde.errors import MdeError
from mde.trainer.data import synth_fluidsynth, synth_numpy
from mde.trainer.data.dataset import SPLITS
from mde.trainer.data.manifest import ManifestRow, write_manifest
from mde.trainer.data.synth_score import Score, compose
from mde.trainer.data.synth_text import clip_description

ENGINES = ("auto", "numpy", "fluidsynth")
MANIFEST_NAME = "manifest.csv"
CLIP_FOLDER = "clips"
_MAX_SAMPLE_RATE = 96000
"""The highest rate in Hz FluidSynth renders at; the numpy engine keeps to the same range."""


@dataclass(frozen=True)
class ClipJob:
    """What a worker needs to make one clip: where it is written, the key of its random generator, what
    composes its score (``compose(rng, seconds)``, picklable), and the rendering settings (rate in Hz,
    length in seconds, ``fluidsynth`` as (command, SoundFont) or None for numpy)."""

    path: Path
    rng_key: tuple[int, ...]
    compose: Callable[[np.random.Generator, float], Score]
    sample_rate: int
    seconds: float
    fluidsynth: tuple[str, Path] | None


def synthesize_corpus(
    out_dir: Path,
    n: int,
    *,
    seed: int = 0,
    sample_rate: int = 16000,
    seconds: float = 4.0,
    engine: str = "auto",
    workers: int = 1,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
    announce: Callable[[str], None] | None = None,
    on_clip: Callable[[int], None] | None = None,
) -> Path:
    """Write ``n`` clips of ``seconds`` s at ``sample_rate`` Hz to ``out_dir/clips/NNNNN.wav`` and
    their manifest to ``out_dir/manifest.csv`` (tags, and a one-sentence English or German description of
    each clip in its ``text`` column: :mod:`mde.trainer.data.synth_text`); return the manifest's path.

    ``engine``: 'numpy' (always available), 'fluidsynth' (needs the command and a General MIDI
    SoundFont) or 'auto' (fluidsynth when both are found, else numpy). ``workers``: processes
    rendering clips in parallel (1 renders in this process). ``splits``: train/valid/test fractions;
    valid and test get round(n * fraction) clips, drawn by a permutation seeded with ``seed``.
    Worker processes are spawned, so a script calling this with ``workers > 1`` needs the usual
    ``if __name__ == "__main__":`` guard. Clips already in ``out_dir/clips`` are overwritten.
    ``announce``: called once, after the checks, with the engine's name (:func:`describe_engine`);
    ``on_clip``: called with the number of clips written so far after each one.
    Raises MdeError for bad arguments and when 'fluidsynth' is asked for but not installed.
    """
    check_render_arguments(n, sample_rate, seconds, workers)
    if len(splits) != len(SPLITS) or min(splits) < 0 or not math.isclose(sum(splits), 1.0):
        raise MdeError(f"splits must be three non-negative fractions (train, valid, test) summing to 1, got {splits}")
    fluidsynth = resolve_engine(engine)
    if announce:
        announce(describe_engine(fluidsynth))
    (out_dir / CLIP_FOLDER).mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(n - 1)))
    jobs = [ClipJob(out_dir / CLIP_FOLDER / f"{i:0{width}d}.wav", (seed, i), compose, sample_rate, seconds, fluidsynth)
            for i in range(n)]
    made = make_clips(jobs, workers, on_clip)
    split_of = _assign_splits(n, seed, splits)
    rows = [ManifestRow(path, split_of[i], tags, clip_description(tags, seed, i))
            for i, (path, tags) in enumerate(made)]
    return write_manifest(rows, out_dir / MANIFEST_NAME)


def resolve_engine(engine: str) -> tuple[str, Path] | None:
    """The fluidsynth (command, SoundFont) that ``engine`` renders with, or None for numpy.

    Raises MdeError for an unknown engine, and for 'fluidsynth' when it is not installed.
    """
    if engine not in ENGINES:
        raise MdeError(f"unknown synthesis engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "numpy":
        return None
    found = synth_fluidsynth.find_fluidsynth()
    if engine == "fluidsynth" and found is None:
        raise MdeError(
            f"the fluidsynth engine needs the fluidsynth command and a General MIDI SoundFont: "
            f"{synth_fluidsynth.INSTALL_HINT}"
        )
    return found


def describe_engine(fluidsynth: tuple[str, Path] | None) -> str:
    """How :func:`resolve_engine`'s answer is named to the user: 'FluidSynth (<SoundFont file>)' or 'numpy'."""
    return "numpy" if fluidsynth is None else f"FluidSynth ({fluidsynth[1].name})"


def _collect(clips: Iterator[tuple[Path, tuple[str, ...]]],
             on_clip: Callable[[int], None] | None) -> list[tuple[Path, tuple[str, ...]]]:
    """The clips as they are made, reporting the count after each to ``on_clip``."""
    made = []
    for clip in clips:
        made.append(clip)
        if on_clip:
            on_clip(len(made))
    return made


def _render_clip(score: Score, sample_rate: int, rng: np.random.Generator,
                 fluidsynth: tuple[str, Path] | None) -> np.ndarray:
    """Render ``score`` with the chosen engine and set its level; float32 samples in [-1, 1]."""
    if fluidsynth is None:
        mix = synth_numpy.render(score, sample_rate, rng)
    else:
        mix = synth_fluidsynth.render(score, sample_rate, *fluidsynth)
    rms = np.sqrt(np.mean(mix**2))
    if rms == 0:
        raise MdeError(f"the {'fluidsynth' if fluidsynth else 'numpy'} engine rendered silence")
    return np.tanh(mix * (10 ** (score.level_dbfs / 20) / rms)).astype(np.float32)


def _make_clip(job: ClipJob) -> tuple[Path, tuple[str, ...]]:
    """Compose, render and write the clip of ``job``; return its path and tags."""
    rng = np.random.default_rng(job.rng_key)
    score = job.compose(rng, job.seconds)
    audio = _render_clip(score, job.sample_rate, rng, job.fluidsynth)
    sf.write(job.path, audio, job.sample_rate, subtype="PCM_16")
    return job.path, score.tags


def make_clips(jobs: list[ClipJob], workers: int,
               on_clip: Callable[[int], None] | None = None) -> list[tuple[Path, tuple[str, ...]]]:
    """Make every job's clip (their folders must exist), with ``workers`` spawned processes (1: in this
    one); returns (path, tags) per job, in order. ``on_clip``: called with the count made after each."""
    if workers == 1:
        return _collect(map(_make_clip, jobs), on_clip)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return _collect(pool.map(_make_clip, jobs, chunksize=max(1, len(jobs) // (8 * workers))), on_clip)


def _assign_splits(n: int, seed: int, fractions: tuple[float, float, float]) -> list[str]:
    """The split of each clip: round(n * fraction) for valid and test, the rest train."""
    n_valid = round(n * fractions[1])
    n_test = min(round(n * fractions[2]), n - n_valid)
    names = ["valid"] * n_valid + ["test"] * n_test + ["train"] * (n - n_valid - n_test)
    order = np.random.default_rng(seed).permutation(n)
    return [names[i] for i in order]


def check_render_arguments(n: int, sample_rate: int, seconds: float, workers: int) -> None:
    """MdeError (one line) unless ``n`` clips of ``seconds`` s at ``sample_rate`` Hz with ``workers`` can be made."""
    if n < 1:
        raise MdeError(f"the corpus needs at least one clip, got n={n}")
    if not MIN_SAMPLE_RATE <= sample_rate <= _MAX_SAMPLE_RATE:
        raise MdeError(f"sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE}-{_MAX_SAMPLE_RATE} Hz")
    if not seconds > 0:
        raise MdeError(f"clip length must be positive, got {seconds} s")
    if workers < 1:
        raise MdeError(f"workers must be at least 1, got {workers}")
