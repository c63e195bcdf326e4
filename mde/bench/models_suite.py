"""``mde bench models``: each model and window scale under each inference path, batch 1 and 32.

CPU rows: torch eager (the model file's graph run op by op by torch, fp32; mde.runtime.backends.torch_runner), ONNX
Runtime fp32 (mde's default path, the reference of every ratio), ORT int8 (static QDQ, calibrated on
the real audio) and ORT fp16, all on N threads (--threads; default all cores). GPU rows (--device
cuda): torch eager fp32, torch fp16 + CUDA graphs (the reference), ORT CUDA (onnxruntime-gpu) and
TensorRT where installed. The timed call is one backend.run on a batch of network inputs (log-mel
windows, or a waveform model's transformed windows) cut from the MTAT clip (front end not timed).
Models: the default model (MTT_musicnn, which takes any window length) at 0.5, 3.7 and 29 s, plus any
first-seed models in the store at their own window; --models to choose (waveform models too).

Per row: x real time (seconds of audio per second: batch x window / median) and achieved GFLOP/s (the
graph's Conv / MatMul / Gemm FLOPs at that input shape, mde.bench.flops, over the median) as a
percentage of the machine's peak (whose derivation the results state).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np

from mde.bench.flops import Peak, count_flops, cpu_peak, gpu_peak
from mde.bench.report import Column, Timing, time_interleaved
from mde.bench.suites import (
    BenchSettings,
    SuiteResult,
    audio_dir,
    finish,
    reference_clip,
)
from mde.errors import MdeError
from mde.runtime import store
from mde.runtime.backends.common import Backend
from mde.runtime.package import DISTILL_SOURCE_PREFIX, ModelInfo, read_model_info

SCALES = (0.5, 3.7, 29.0)
QUICK_SCALES = (0.5, 3.7)
BATCHES = (1, 32)
CUDA_BATCHES = (1, 32, 256)
"""On a GPU a large batch is where throughput is reached (a 29 s model at batch 32 still leaves it idle)."""
QUICK_BATCHES = (1, 2)
MAX_CALL_AUDIO_S = 120.0
"""On CPU the large batch is capped so one call holds at most this much audio (29 s windows: 4, not 32): a
batch of 32 x 29 s makes the torch path allocate beyond a small machine's memory, and takes minutes per row.
GPU batches are not capped."""
ROW_BUDGET_S = 1.5
"""Default timed rounds: as many as fit in this many seconds per row, at least MIN_ROUNDS."""
MIN_ROUNDS, MAX_ROUNDS, QUICK_ROUNDS = 3, 10, 2
CPU_REFERENCE = "ORT fp32"
CUDA_REFERENCE = "torch fp16 + CUDA graphs"
SEED_SOURCE_PREFIX = "first seed"
Method = Callable[[], object]


def default_models(announce: Callable[[str], None]) -> list[Path]:
    """The default model (imported on first use), every first-seed model and every distilled student in the
    store (the shipped MTT_fcn05 / MTT_fcn037 / MTT_fcn29 among them)."""
    from mde.runtime.defaults import default_model_path

    paths = [default_model_path(announce=announce)]
    for path, info in store.list_models():
        if isinstance(info, ModelInfo) and info.source.startswith((SEED_SOURCE_PREFIX, DISTILL_SOURCE_PREFIX)) \
                and path not in paths:
            paths.append(path)
    return paths


def cost_against(metrics: dict[str, dict], baseline: str, path: str) -> dict[str, dict]:
    """Each other model's cost per second of audio over ``baseline``'s (the baseline's x real time over the
    model's), for ``path`` rows (e.g. 'ORT fp32') at the same batch and the nearest of the baseline's
    windows (within 10 %): row group -> {'model', 'window_s', 'baseline_window_s', 'batch', 'cost_ratio'}.
    Below 1: cheaper than the baseline."""
    base = {(m["window_s"], m["batch"]): m for m in metrics.values() if m["model"] == baseline and m["path"] == path}
    costs = {}
    for m in metrics.values():
        if m["model"] == baseline or m["path"] != path:
            continue
        near = [key for key in base if key[1] == m["batch"] and abs(key[0] - m["window_s"]) <= 0.1 * m["window_s"]]
        if not near:
            continue
        match = base[min(near, key=lambda key: abs(key[0] - m["window_s"]))]
        costs[f"{m['model']} {m['window_s']:g} s x{m['batch']}"] = {
            "model": m["model"], "window_s": m["window_s"], "baseline_window_s": match["window_s"],
            "batch": m["batch"], "cost_ratio": round(match["x_real_time"] / m["x_real_time"], 3)}
    return costs


def cost_table(costs: dict[str, dict], baseline: str, path: str) -> str:
    """:func:`cost_against`'s figures as a Markdown paragraph and table ('' when there are none)."""
    if not costs:
        return ""
    lines = [f"Cost per second of audio against {baseline} ({path}, same batch, nearest window; below 1: "
             "cheaper):", "", f"| model | window s | {baseline} window s | batch | cost ratio |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {c['model']} | {c['window_s']:g} | {c['baseline_window_s']:g} | {c['batch']} | "
              f"{c['cost_ratio']:.3f} |" for c in costs.values()]
    return "\n".join(lines)


def model_paths(settings: BenchSettings) -> list[Path]:
    """The fp32 model files to measure: ``settings.models`` (names or paths) or the default set."""
    if not settings.models:
        return default_models(settings.announce)
    return [store.resolve(name) for name in settings.models]


def scales_of(info: ModelInfo, quick: bool) -> list[Optional[float]]:
    """Window lengths in seconds (None: the model's own window, for fixed-length models)."""
    if not info.variable_length:
        return [None]
    return list(QUICK_SCALES if quick else SCALES)


def calibration_hop(info: ModelInfo, folder: Path) -> float:
    """Seconds between int8 calibration windows so the audio in ``folder`` yields enough of them
    (the model's hop when it already does)."""
    import soundfile as sf

    from mde.audio import find_audio_files
    from mde.export.quantize import MIN_CALIBRATION_WINDOWS

    durations = [sf.info(str(path)).duration for path in find_audio_files([folder])]
    window = info.window_seconds
    wanted = MIN_CALIBRATION_WINDOWS
    for hop in (info.hop_seconds, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01):
        if sum(max(0, int((d - window) // hop) + 1) for d in durations) >= wanted:
            return hop
    raise MdeError(f"{folder}: too little audio for {wanted} calibration windows of {window:g} s")


def precision_files(fp32: Path, settings: BenchSettings, skipped: dict[str, str]) -> dict[str, Path]:
    """{'fp32': fp32, 'int8': ..., 'fp16': ...}: the precisions exported from ``fp32`` (cached in
    <MDE_HOME>/bench-cache by content hash); ones that cannot be made go into ``skipped``."""
    digest = hashlib.sha1(fp32.read_bytes()).hexdigest()[:12]
    cache = store.mde_home() / "bench-cache"
    files = {"fp32": fp32}
    calib = audio_dir(settings)
    info = read_model_info(fp32)
    for precision in ("int8", "fp16"):
        target = cache / f"{fp32.stem}-{digest}-{precision}.onnx"
        label = f"{info.name} ORT {precision}"
        if target.is_file():
            files[precision] = target
            continue
        if precision == "int8" and calib is None:
            skipped[label] = "no calibration audio (--audio)"
            continue
        settings.announce(f"models: exporting {info.name} {precision} (cached in {cache})")
        try:
            from mde.export.export import export_model

            kwargs = {"int8": True, "calib": calib, "calib_hop": calibration_hop(info, calib)} \
                if precision == "int8" and calib is not None else {"fp16": True}
            cache.mkdir(parents=True, exist_ok=True)
            files[precision] = export_model(fp32, target, **kwargs).path
        except (ImportError, MdeError) as exc:
            skipped[label] = f"export failed: {str(exc).splitlines()[0]}"
    return files


def capped_batch(batch: int, window_s: float, device: str = "cpu") -> int:
    """``batch``, or on CPU fewer windows so that a call holds at most MAX_CALL_AUDIO_S seconds of audio."""
    if device != "cpu":
        return batch
    return max(1, min(batch, int(MAX_CALL_AUDIO_S // window_s)))


def model_input(info: ModelInfo, window: Optional[float], batch: int, settings: BenchSettings) -> np.ndarray:
    """float32 (batch, n_mels, frames) for a log-mel model, (batch, [channels,] samples) for a waveform
    one: ``batch`` consecutive windows of ``window`` seconds, as the runtime cuts them, from the reference
    clip tiled to length (or a synthesized signal)."""
    from mde.audio import fit_channels, load_audio
    from mde.export.examples import example_signal
    from mde.runtime.chunker import frame_grid
    from mde.runtime.inputs import frame_inputs, input_stage

    grid = frame_grid(info, window=window)
    rate = info.sample_rate
    needed = grid.min_samples + int((batch + 1) * grid.window_seconds * rate)
    clip = reference_clip(settings)
    if clip is not None:
        samples = load_audio(clip, sr=rate, channels=info.channels)[0]
    else:
        samples = fit_channels(example_signal(needed, rate), info.channels, "the example signal")
    samples = np.ascontiguousarray(np.resize(samples, (needed, *samples.shape[1:])))
    _, batches = frame_inputs(samples, grid, input_stage(info, threads=settings.n_threads), batch)
    return next(batches)


def backend_call(path: Path, backend: str, device: str, threads: int, batch: np.ndarray,
                 **options: object) -> Method:
    """One inference call of ``batch`` through a backend (options go to the torch backend)."""
    runner: Backend
    if backend == "torch":
        from mde.runtime.backends.torch_runner import TorchBackend

        runner = TorchBackend(path, device=device, threads=threads if device == "cpu" else None, **options)  # type: ignore[arg-type]
    else:
        from mde.runtime.backends.factory import make_backend

        runner = make_backend(path, backend=backend, device=device, threads=threads)
    outputs = [runner.info.embedding_output]
    if runner.info.tags_output and runner.info.tags_output not in outputs:
        outputs.append(runner.info.tags_output)
    return lambda: runner.run(batch, outputs)


def variants(files: dict[str, Path], settings: BenchSettings) -> dict[str, tuple[Path, str, dict]]:
    """Row label -> (model file, backend, torch options) for the device."""
    fp32 = files["fp32"]
    if settings.device == "cuda":
        return {
            "torch eager fp32 (CUDA)": (fp32, "torch", {"fp16": False, "cuda_graphs": False}),
            CUDA_REFERENCE: (fp32, "torch", {"fp16": True, "cuda_graphs": True}),
            "ORT CUDA fp32": (fp32, "ort", {}),
            "TensorRT": (fp32, "tensorrt", {}),
        }
    found: dict[str, tuple[Path, str, dict]] = {"torch eager": (fp32, "torch", {}), CPU_REFERENCE: (fp32, "ort", {})}
    for precision in ("int8", "fp16"):
        if precision in files:
            found[f"ORT {precision}"] = (files[precision], "ort", {})
    return found


def build_calls(rows: dict[str, tuple[Path, str, dict]], batch: np.ndarray, settings: BenchSettings,
                skipped: dict[str, str], model: str) -> dict[str, Method]:
    """The calls that can be made here; the others go into ``skipped`` (e.g. 'not installed')."""
    calls = {}
    for label, (path, backend, options) in rows.items():
        try:
            calls[label] = backend_call(path, backend, settings.device, settings.n_threads, batch, **options)
        except MdeError as exc:
            reason = str(exc)
            if "needs the" in reason and "package" in reason:
                reason = "not installed: " + reason.split("'")[1]
            skipped[f"{model} {label}"] = reason
    return calls


def peaks(settings: BenchSettings) -> dict[bool, Peak]:
    """The machine's peak for float32 rows (False) and float16 rows (True)."""
    if settings.device == "cuda":
        import torch

        name = torch.cuda.get_device_name()
        return {False: gpu_peak(name, fp16=False), True: gpu_peak(name, fp16=True)}
    peak = cpu_peak(settings.n_threads)
    return {False: peak, True: peak}


def flops_of(path: Path, shape: tuple[int, ...], notes: dict[str, str]) -> Optional[int]:
    """The graph's FLOPs at ``shape``, or None (with the reason in ``notes``)."""
    try:
        return count_flops(path, shape)
    except (ImportError, ValueError) as exc:
        notes.setdefault("flops", f"FLOPs not counted: {exc}")
        return None


def rounds_for(calls: dict[str, Method], settings: BenchSettings) -> int:
    """Timed rounds after one untimed call of each (which also measures how slow they are)."""
    import time

    slowest = 0.0
    for call in calls.values():
        started = time.perf_counter()
        call()
        slowest = max(slowest, time.perf_counter() - started)
    if settings.rounds:
        return settings.rounds
    if settings.quick:
        return QUICK_ROUNDS
    return int(min(MAX_ROUNDS, max(MIN_ROUNDS, ROW_BUDGET_S // max(slowest, 1e-6))))


def run(settings: BenchSettings) -> SuiteResult:
    """Measure every model, scale, batch and inference path; write bench_models_<device>.*"""
    reference = CUDA_REFERENCE if settings.device == "cuda" else CPU_REFERENCE
    batches = QUICK_BATCHES if settings.quick else CUDA_BATCHES if settings.device == "cuda" else BATCHES
    peak = peaks(settings)
    timings: list[Timing] = []
    references, metrics, groups = {}, {}, []
    skipped: dict[str, str] = {}
    notes: dict[str, str] = {}
    for fp32 in model_paths(settings):
        info = read_model_info(fp32)
        files = precision_files(fp32, settings, skipped) if settings.device == "cpu" else {"fp32": fp32}
        rows = variants(files, settings)
        for window in scales_of(info, settings.quick):
            seconds = info.window_seconds if window is None else window
            for batch_size in sorted({capped_batch(b, seconds, settings.device) for b in batches}):
                group = f"{info.name} {seconds:g} s x{batch_size}"
                settings.announce(f"models: {group}")
                batch = model_input(info, window, batch_size, settings)
                calls = build_calls(rows, batch, settings, skipped, info.name)
                if not calls:
                    continue
                rounds = rounds_for(calls, settings)
                flops = flops_of(fp32, batch.shape, notes)
                for timing in time_interleaved(calls, rounds, warmup=0):
                    name = f"{group}: {timing.name}"
                    timings.append(Timing(name, timing.median_s, timing.min_s, timing.max_s, timing.runs))
                    references[name] = f"{group}: {reference}"
                    groups.append(group)
                    gflops = flops / timing.median_s / 1e9 if flops else None
                    row_peak = peak["fp16" in timing.name].gflops
                    metrics[name] = {
                        "model": info.name, "window_s": seconds, "batch": batch_size, "path": timing.name,
                        "x_real_time": round(batch_size * seconds / timing.median_s, 1),
                        "flops": flops, "gflop": round(flops / 1e9, 3) if flops else None,
                        "gflops_per_s": round(gflops, 1) if gflops else None,
                        "percent_of_peak": round(100 * gflops / row_peak, 1) if gflops and row_peak else None,
                    }
    baseline = read_model_info(model_paths(settings)[0]).name
    costs = cost_against(metrics, baseline, reference)
    peak_sources = {"fp32": peak[False].source, "fp16": peak[True].source}
    text = (
        f"Threads: {settings.n_threads} (ORT intra-op and torch). One backend.run of a batch of log-mel (or "
        "waveform) windows cut from the MTAT clip (front end and decoding not timed); calls interleaved per "
        "group; ratio = median / "
        f"{reference}'s median in the same group. x real time = batch x window seconds / median. GFLOP/s: "
        "Conv + MatMul + Gemm FLOPs of the fp32 graph at that input shape (ONNX shape inference) / median; int8 "
        "rows do the same arithmetic in 8 bits. "
        + (f"The large batch holds at most {MAX_CALL_AUDIO_S:g} s of audio (29 s windows: batch "
           f"{capped_batch(max(batches), 29.0)}). " if settings.device == "cpu" else "")
        + "Above 100% of "
        "peak: the clock runs above the nominal 'cpu MHz' (boost), and int8 rows use 8-bit dot products (VNNI), "
        "several per float32 lane. Peak: " + peak[False].source + "."
        + (f" Float16 peak: {peak[True].source}." if peak[True] is not peak[False] else "")
        + (" " + " ".join(notes.values()) if notes else "")
        + ("\n\n" + cost_table(costs, baseline, reference) if costs else "")
    )
    return finish(
        settings, "models", f"Model inference: torch eager vs ONNX Runtime fp32 / int8 / fp16 ({settings.device})",
        timings, references=references, metrics=metrics, groups=groups, skipped=skipped,
        columns=[Column("x_real_time", "x real time", ".0f"), Column("gflops_per_s", "GFLOP/s", ".1f"),
                 Column("percent_of_peak", "% of peak", ".0f")],
        ratio_heading=f"time / {reference} (same group)",
        extra={"peak_gflops": {"fp32": peak[False].gflops, "fp16": peak[True].gflops}, "peak_source": peak_sources,
               "threads_per_call": settings.n_threads, "reference": reference, "cost_against_first": costs},
        packages=("numpy", "onnxruntime", "onnx", "torch", "onnxconverter-common"), notes=text,
    )
