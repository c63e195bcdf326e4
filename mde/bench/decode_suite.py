"""``mde bench decode``: the audio decoders a user could have, per format, for speed and for agreement with
mde's decoder (libsndfile through soundfile).

Inputs: each MP3 of the audio folder, and the same audio written as WAV (PCM 16), FLAC (16 bit) and Ogg
Vorbis by libsndfile and, when PyAV is installed, as M4A/AAC by FFmpeg (``--quick``: the first 5 s of
those).
Decoders, each to float32 at the file's own rate and channels:

- soundfile (libsndfile: mpg123 for MP3, libvorbis, libFLAC): what :func:`mde.audio.load_audio` uses;
- PyAV (FFmpeg's decoders; the ``decoders`` extra), which also reads M4A/AAC and the other FFmpeg formats;
- miniaudio (dr_mp3, dr_flac, stb_vorbis, dr_wav; the ``decoders`` extra).

Per row: the decode time (median over interleaved rounds) and its ratio to soundfile on the same file, and
the agreement with soundfile's samples (for a format libsndfile does not read, M4A, PyAV's): the lag
(samples) that aligns them best within +-LAG_SEARCH (MP3 decoders differ in how much of the encoder's
delay they drop), the length difference, and over the aligned overlap the largest absolute difference
and the SNR in dB (soundfile's samples as the signal).
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mde.bench.report import Column, Timing, time_interleaved
from mde.bench.suites import BenchSettings, SuiteResult, audio_dir, finish

Decode = Callable[[Path], np.ndarray]
"""A decoder: a file -> float32 samples, shape (frames, channels), at the file's own rate."""
LAG_SEARCH = 4096
"""Samples either way searched for the lag that aligns a decoder's output with soundfile's."""
QUICK_SECONDS = 5.0
ROUNDS, QUICK_ROUNDS = 5, 2
REFERENCE = "soundfile"


def run(settings: BenchSettings) -> SuiteResult:
    skipped: dict[str, str] = {}
    decoders = available_decoders(skipped)
    rounds = settings.rounds or (QUICK_ROUNDS if settings.quick else ROUNDS)
    timings: list[Timing] = []
    metrics: dict[str, dict[str, Any]] = {}
    references: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="mde-bench-decode-") as work:
        files = format_files(mp3_sources(settings), Path(work), settings.quick, "pyav" in decoders, skipped)
        for (fmt, source), path in files.items():
            methods: dict[str, Callable[[], object]] = {}
            reference: tuple[str, np.ndarray] | None = None  # soundfile's, or the first decoder's that reads it
            for name, decode in decoders.items():
                label = f"{source} {fmt}: {name}"
                try:
                    decoded = decode(path)
                except Exception as exc:  # a decoder that cannot read the format is a finding, not a failure
                    skipped[label] = f"cannot decode: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                    continue
                reference = reference or (label, decoded)
                methods[label] = functools.partial(decode, path)
                references[label] = reference[0]
                metrics[label] = {"format": fmt, "decoder": name, "file": source,
                                  "seconds": len(reference[1]) / _rate(path), **agreement(reference[1], decoded)}
            settings.announce(f"decode: {source} {fmt}, {len(methods)} decoders x {rounds} rounds")
            timings += time_interleaved(methods, rounds)
    for timing in timings:
        metrics[timing.name]["x_real_time"] = round(metrics[timing.name]["seconds"] / timing.median_s, 1)
    return finish(
        settings, "decode", "Decoding audio files: decoders per format", timings, references=references,
        metrics=metrics, groups=[references[t.name] for t in timings], skipped=skipped,
        columns=[Column("x_real_time", "x real time", ".0f"), Column("lag_samples", "lag", "d"),
                 Column("length_diff", "length diff", "d"), Column("max_abs_diff", "max abs diff", ".2e"),
                 Column("snr_db", "SNR dB", ".1f")],
        packages=("soundfile", "av", "miniaudio"), ratio_heading="time / soundfile (same file; M4A: PyAV)",
        notes=_notes(rounds, settings.quick),
    )


def available_decoders(skipped: dict[str, str]) -> dict[str, Decode]:
    """soundfile, and PyAV and miniaudio where installed (else named in ``skipped`` with the reason)."""
    decoders: dict[str, Decode] = {REFERENCE: decode_soundfile}
    for name, module, decode in (("pyav", "av", decode_pyav), ("miniaudio", "miniaudio", decode_miniaudio)):
        if importlib.util.find_spec(module) is None:
            skipped[name] = f"{module} is not installed (pip install 'mde[decoders]')"
        else:
            decoders[name] = decode
    return decoders


def decode_soundfile(path: Path) -> np.ndarray:
    import soundfile as sf

    samples, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return np.asarray(samples)


def decode_pyav(path: Path) -> np.ndarray:
    """FFmpeg's decoder (see :func:`mde.audio_ffmpeg.decode_ffmpeg`)."""
    from mde.audio_ffmpeg import decode_ffmpeg

    return decode_ffmpeg(path)[0]


def decode_miniaudio(path: Path) -> np.ndarray:
    import miniaudio

    info = miniaudio.get_file_info(str(path))
    sound = miniaudio.decode_file(str(path), output_format=miniaudio.SampleFormat.FLOAT32,
                                  nchannels=info.nchannels, sample_rate=info.sample_rate)
    return np.frombuffer(sound.samples, dtype=np.float32).reshape(-1, info.nchannels)


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    """How ``other`` matches ``reference`` (both (frames, channels)): lag, length difference, max |diff|
    and SNR (dB) over the aligned overlap."""
    if other.shape[1] != reference.shape[1]:
        return {"lag_samples": 0, "length_diff": len(other) - len(reference), "max_abs_diff": float("inf"),
                "snr_db": float("-inf")}
    lag = best_lag(reference.mean(axis=1), other.mean(axis=1))
    a, b = (reference[lag:], other) if lag >= 0 else (reference, other[-lag:])
    n = min(len(a), len(b))
    diff = a[:n].astype(np.float64) - b[:n]
    signal, noise = float(np.sum(a[:n].astype(np.float64) ** 2)), float(np.sum(diff ** 2))
    snr = float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)
    return {"lag_samples": int(lag), "length_diff": int(len(other) - len(reference)),
            "max_abs_diff": float(np.max(np.abs(diff))) if n else 0.0, "snr_db": round(snr, 1)}


def best_lag(reference: np.ndarray, other: np.ndarray) -> int:
    """The shift (samples) of ``other`` against ``reference`` within +-LAG_SEARCH that correlates best over
    their first seconds (positive: ``other`` starts later in the signal, missing ``lag`` leading samples)."""
    span = min(len(reference), len(other), 8 * LAG_SEARCH)
    if span <= 2 * LAG_SEARCH:
        return 0
    core = other[LAG_SEARCH:span - LAG_SEARCH].astype(np.float64)
    scores = np.correlate(reference[:span].astype(np.float64), core, mode="valid")
    return int(np.argmax(scores)) - LAG_SEARCH


def mp3_sources(settings: BenchSettings) -> list[Path]:
    folder = audio_dir(settings)
    return sorted(folder.glob("*.mp3")) if folder is not None else []


def format_files(sources: list[Path], work: Path, quick: bool, with_aac: bool,
                 skipped: dict[str, str]) -> dict[tuple[str, str], Path]:
    """(format, source stem) -> a file of that format holding the source's audio (quick: its first 5 s)."""
    import soundfile as sf

    made: dict[tuple[str, str], Path] = {}
    for mp3 in sources:
        stem = mp3.stem[:24]
        samples, rate = sf.read(str(mp3), dtype="float32", always_2d=True)
        made["mp3", stem] = shutil.copyfile(mp3, work / f"{stem}.mp3")
        if quick:
            samples = samples[: int(QUICK_SECONDS * rate)]
        for fmt, subtype in (("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS")):
            path = work / f"{stem}.{fmt}"
            sf.write(str(path), samples, rate, subtype=subtype)
            made[fmt, stem] = path
        if with_aac:
            made["m4a", stem] = write_aac(samples, rate, work / f"{stem}.m4a")
    if not with_aac:
        skipped["m4a"] = "no AAC encoder without PyAV"
    return made


def write_aac(samples: np.ndarray, rate: int, path: Path) -> Path:
    """``samples`` (frames, channels) encoded as AAC in an M4A file by FFmpeg (through PyAV)."""
    import av

    layout = "mono" if samples.shape[1] == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T), format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _rate(path: Path) -> int:
    import soundfile as sf

    try:
        return int(sf.info(str(path)).samplerate)
    except sf.LibsndfileError:  # a format libsndfile does not read (M4A): ask FFmpeg
        import av

        with av.open(str(path)) as container:
            return int(container.streams.audio[0].rate)


def _notes(rounds: int, quick: bool) -> str:
    return (
        f"Each file decoded to float32 at its own rate and channels; {rounds} interleaved round(s) per file after "
        "one warm-up" + (f"; beside each MP3, the first {QUICK_SECONDS:g} s of it (--quick)" if quick else "") + ". "
        "WAV, FLAC and Ogg Vorbis are written by libsndfile from soundfile's decode of the MP3, M4A/AAC by "
        "FFmpeg's AAC encoder. Agreement is with soundfile on the same file (M4A, which libsndfile does not read: "
        "with PyAV): lag (samples; positive: the "
        "decoder drops that many more leading samples), length difference, and max |difference| / SNR over "
        "the aligned overlap."
    )
