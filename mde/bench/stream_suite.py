"""``mde bench stream``: latency of ``mde stream`` at every scale at once, on one CPU core, at real time.

A file is streamed at real-time pace (as a microphone delivers audio, in 20 ms blocks) through the
default scales (0.5, 3.7 and 29 s, each with its default hop) with the whole process pinned to one core.
Latency is the time from the arrival of a window's last sample to the frame's emission. Reported per
scale: median, min, max and p99 latency, frames and drops; plus CPU load (CPU seconds per wall second),
audio dropped and peak memory. A long run (``--seconds 600``) is the soak test: zero drops expected.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf

from mde.bench.report import Column, Timing, own_peak_mb, reset_peak_rss
from mde.bench.suites import BenchSettings, SuiteResult, finish, reference_clip

DEFAULT_SECONDS = 60.0
QUICK_SECONDS = 8.0
LATENCY_GOAL_MS = 20.0
"""Goal: p99 latency at the 0.5 s scale on one core."""


def run(settings: BenchSettings) -> SuiteResult:
    from mde.stream import DEFAULT_SCALES, FileSource, load_scales, stream

    seconds = settings.stream_seconds or (QUICK_SECONDS if settings.quick else DEFAULT_SECONDS)
    saved_affinity = _pin_to_one_core()
    try:
        with tempfile.TemporaryDirectory(prefix="mde-bench-stream-") as tmp:
            audio = _stream_input(reference_clip(settings), seconds, Path(tmp) / "stream.wav")
            settings.announce(f"streaming {seconds:g} s at real time on CPU {_cpu_label()}")
            peak_is_own = reset_peak_rss()
            backend = "torch" if settings.device == "cuda" else "ort"
            scales = load_scales(DEFAULT_SCALES, threads=1, backend=backend, device=settings.device,
                                 announce=settings.announce)
            summary = stream(FileSource(str(audio), realtime=True), scales)
    finally:
        if saved_affinity is not None:
            os.sched_setaffinity(0, saved_affinity)
    timings, metrics, skipped = [], {}, {}
    for s in summary.scales:
        name = f"{s.scale:g} s window, hop {s.hop_s:.3g} s"
        if s.frames == 0 or s.padded:  # a zero-padded frame is no window's latency
            skipped[name] = f"no {s.scale:g} s window fits in {summary.audio_seconds:g} s of audio"
            continue
        timings.append(Timing(name, s.latency_p50_ms / 1e3, s.latency_min_ms / 1e3, s.latency_max_ms / 1e3, s.frames))
        metrics[name] = {"p99_ms": s.latency_p99_ms, "frames": s.frames, "dropped": s.dropped, "model": s.model}
    peak_mb = own_peak_mb() if peak_is_own else None
    memory = f"peak memory {peak_mb:.0f} MB" if peak_mb is not None else "peak memory not measured (no /proc)"
    short = summary.scales[0]
    verdict = "met" if short.latency_p99_ms <= LATENCY_GOAL_MS else "MISSED"
    notes = (
        f"Latency from a window's last sample to its frame (median / min / max over frames; p99 column). "
        f"{summary.audio_seconds:.0f} s of audio streamed at real time, all scales at once, process pinned to "
        f"one core: CPU load {summary.cpu_load:.2f} of that core, audio dropped {summary.dropped_audio_seconds:.2f} s, "
        f"frames dropped {summary.dropped_frames}, {memory} (models and streaming, from the start of this suite). "
        f"Goal p99 <= {LATENCY_GOAL_MS:g} ms at the 0.5 s scale: {verdict} ({short.latency_p99_ms:.1f} ms)."
    )
    extra = {
        "audio_seconds": summary.audio_seconds, "cpu_load": summary.cpu_load,
        "dropped_audio_seconds": summary.dropped_audio_seconds, "dropped_frames": summary.dropped_frames,
        "peak_rss_mb": peak_mb, "latency_goal_ms": LATENCY_GOAL_MS,
    }
    return finish(
        settings, "stream", "mde stream latency, all scales at once on one core", timings,
        metrics=metrics, skipped=skipped, extra=extra, notes=notes, ratio_heading="-",
        packages=("numpy", "onnxruntime", "soxr", "soundfile", "sounddevice"),
        columns=[Column("p99_ms", "p99 (ms)", ".1f"), Column("frames", "frames", "d"),
                 Column("dropped", "dropped", "d")],
    )


def _pin_to_one_core() -> Optional[set[int]]:
    """Pin this process to the first core it may use; returns the previous set (None where unsupported)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})
    return saved


def _cpu_label() -> str:
    return ",".join(map(str, sorted(os.sched_getaffinity(0)))) if hasattr(os, "sched_getaffinity") else "any"


def _stream_input(clip: Optional[Path], seconds: float, target: Path) -> Path:
    """A WAV of ``seconds`` s: the real clip repeated, or (without one) a synthesized chord with noise."""
    if clip is not None:
        from mde.audio import load_audio

        samples, rate = load_audio(clip)
    else:
        rate = 22050
        t = np.arange(rate * 10) / rate
        chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 6
        samples = (chord + 0.02 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)
    n = int(seconds * rate)
    sf.write(target, np.resize(samples, n), rate, subtype="FLOAT")
    return target
