"""One timed end-to-end run in a fresh process, for ``mde bench e2e``: ``python -m mde.bench.e2e_run JOB``.

JOB is a JSON object: kind ('mde', 'ray': mde on a local Ray instance, 'seed', or 'floor': decoding,
resampling and the model timed alone, see :func:`run_floor`), model (an mde model file, or for 'seed' a
first-seed .ckpt), files (audio paths), out (a folder for the outputs), threads, workers, backend,
device, and optionally cpus (the process pins itself to that many of its CPUs first). The process
prints one JSON line: seconds (wall, from loading the model to the last output written, worker start
included; interpreter start and imports excluded; for 'ray' from the start of the batch, the local
instance started before: its start-up in ray_start_s), files, failed, and the peak resident set sizes in
MB of this process (VmHWM, else getrusage) and of its largest child (worker) process (getrusage
RUSAGE_CHILDREN ru_maxrss, which counts from the fork: at least the parent's size then; for 'ray' the
inference actor's VmHWM). A 'floor' job prints decode_s, resample_s and model_s instead.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from mde.bench.report import own_peak_mb


def run_mde(job: dict[str, Any]) -> int:
    """Embed the files with mde's batch path (as ``mde embed`` does); returns the number that failed."""
    from mde.runtime.batch import EmbedSettings, embed_files

    settings = EmbedSettings(overwrite=True, backend=job["backend"], device=job["device"])
    files = [Path(f) for f in job["files"]]
    report = embed_files(Path(job["model"]), files, Path(job["out"]), settings, job["threads"], job["workers"])
    return len(report.failed)


def run_floor(job: dict[str, Any]) -> dict[str, float]:
    """The floor of the files: seconds of decoding (soundfile), of mixdown + resampling (soxr) and of the
    model (one-thread ONNX Runtime on the prepared windows), each timed alone and summed over the files;
    the front end, framing and writing are left out."""
    import soundfile as sf

    from mde.audio import resample, to_mono
    from mde.runtime.extractor import Model

    model = Model(job["model"], threads=1)
    rate, stereo = model.info.sample_rate, model.info.channels > 1
    totals = {"decode_s": 0.0, "resample_s": 0.0, "model_s": 0.0}
    for name in job["files"]:
        started = time.perf_counter()
        samples, file_rate = sf.read(name, dtype="float32", always_2d=True)
        decoded = time.perf_counter()
        resampled = resample(samples if stereo else to_mono(samples), file_rate, rate)
        totals["decode_s"] += decoded - started
        totals["resample_s"] += time.perf_counter() - decoded
        clip = model.preparer.prepare(resampled, sr=rate).materialized()
        started = time.perf_counter()
        model.infer(clip)
        totals["model_s"] += time.perf_counter() - started
    return totals


ACTOR_SAMPLE_S = 0.1
"""How often (seconds) a Ray run reads its inference actor's peak memory."""


def run_ray(job: dict[str, Any]) -> tuple[int, float, float]:
    """Embed the files on a local Ray instance (as ``mde embed --ray`` does) started before the timer:
    (failed, seconds from the start of the batch to the last output, the inference actor's peak RSS in MB)."""
    from mde.cluster.embed import embed_files_on_ray
    from mde.runtime.batch import EmbedSettings

    settings = EmbedSettings(overwrite=True, backend=job["backend"], device=job["device"])
    files = [Path(f) for f in job["files"]]
    peaks: list[float] = []
    done = threading.Event()

    def sample() -> None:  # the actor exits with the batch: its high-water mark is read while it runs
        while not done.wait(ACTOR_SAMPLE_S):
            peaks.append(_actor_peak_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        report = embed_files_on_ray(Path(job["model"]), files, Path(job["out"]), settings, job["threads"],
                                    actors=job["workers"])
    finally:
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    return len(report.failed), seconds, max(peaks, default=0.0)


def _actor_peak_mb() -> float:
    """The largest VmHWM (MB) among this machine's inference actor processes (0 when none is found)."""
    import subprocess

    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    peaks = []
    for line in listing.splitlines():
        if "MapWorker(Map(_Infer))" in line:
            status = Path(f"/proc/{line.split()[0]}/status")
            for field in status.read_text().splitlines() if status.exists() else []:
                if field.startswith("VmHWM:"):
                    peaks.append(int(field.split()[1]) / 1024)
    return round(max(peaks, default=0.0), 1)


def run_seed(job: dict[str, Any]) -> int:
    """Embed the files with the first seed's torch pipeline, saving one .npy per file."""
    from mde.bench.e2e_suite import seed_pipeline

    embed = seed_pipeline(Path(job["model"]), threads=job["threads"], device=job["device"])
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    for name in job["files"]:
        np.save(out / f"{Path(name).stem}.npy", embed(Path(name)))
    return 0


def main(argv: list[str]) -> None:
    job = json.loads(argv[0])
    if job.get("cpus"):  # pinned before any thread starts (ONNX Runtime sizes its pools from the affinity)
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: job["cpus"]])
    import onnxruntime  # noqa: F401  (imports are not part of the timed work)
    import soundfile  # noqa: F401

    if job["kind"] == "seed":
        import torch  # noqa: F401
    extra: dict[str, float] = {}
    if job["kind"] == "ray":
        from mde.cluster.session import ray_session

        begun = time.perf_counter()
        with ray_session(None, "The Ray benchmark"):
            extra["ray_start_s"] = round(time.perf_counter() - begun, 2)
            failed, seconds, actor = run_ray(job)
    elif job["kind"] == "floor":
        print(json.dumps(run_floor(job)))
        return
    else:
        started = time.perf_counter()
        failed = run_seed(job) if job["kind"] == "seed" else run_mde(job)
        seconds = time.perf_counter() - started
    scale = 1024 if sys.platform != "darwin" else 1024 * 1024  # ru_maxrss: KiB on Linux, bytes on macOS
    own = own_peak_mb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    children = actor if job["kind"] == "ray" else resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / scale
    print(json.dumps({"seconds": seconds, "files": len(job["files"]), "failed": failed,
                      "peak_rss_mb": round(own, 1), "worker_peak_rss_mb": round(children, 1), **extra}))


if __name__ == "__main__":
    main(sys.argv[1:])
