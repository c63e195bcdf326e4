"""Ray's marginal cost per file against the local batch, in one process and run (start-up separated out).

    python benchmarks/bench_ray_marginal.py MODEL.onnx AUDIO_DIR [--small 16] [--out results.json]

Embeds the first ``small`` files and then all files of AUDIO_DIR (sorted) with the local batch (as many
1-thread worker processes as this process's CPUs) and with ``embed_files_on_ray`` on one local Ray
instance (the default pool: one 1-thread actor per CPU), each run timed from the call to its return. The
marginal cost per file is the slope between the two sizes; the fixed cost is what is left at the small
size (for Ray: the actors' start and the first blocks; the instance's own start is reported apart).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    from mde.cluster.embed import embed_files_on_ray
    from mde.cluster.session import local_cpus, ray_session
    from mde.runtime.batch import EmbedSettings, embed_files

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("audio", type=Path)
    parser.add_argument("--small", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    files = sorted(p for p in args.audio.iterdir() if p.suffix.lower() in (".mp3", ".ogg", ".wav", ".flac"))
    sizes = (args.small, len(files))
    settings = EmbedSettings(overwrite=True)
    cpus = local_cpus()
    seconds: dict[str, dict[int, float]] = {"local": {}, "ray": {}}
    with tempfile.TemporaryDirectory() as work:
        for n in sizes:
            begun = time.perf_counter()
            embed_files(args.model, files[:n], Path(work) / "local", settings, threads=1, workers=cpus)
            seconds["local"][n] = time.perf_counter() - begun
        begun = time.perf_counter()
        with ray_session(None, "The Ray benchmark"):
            ray_start = time.perf_counter() - begun
            for n in sizes:
                begun = time.perf_counter()
                embed_files_on_ray(args.model, files[:n], Path(work) / "ray", settings, threads=1)
                seconds["ray"][n] = time.perf_counter() - begun
    rows = {}
    for kind, timed in seconds.items():
        slope = (timed[sizes[1]] - timed[sizes[0]]) / (sizes[1] - sizes[0])
        rows[kind] = {"seconds": {str(n): round(s, 3) for n, s in timed.items()},
                      "marginal_ms_per_file": round(1000 * slope, 2),
                      "fixed_s": round(timed[sizes[0]] - sizes[0] * slope, 2)}
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {cpus} CPUs ({os.cpu_count()} online)",
        "model": str(args.model), "files": len(files), "sizes": list(sizes),
        "ray_instance_start_s": round(ray_start, 2),
        "layout": f"{cpus} x 1 thread (local: worker processes; Ray: actors)", **rows,
        "marginal_ratio_ray_over_local": round(rows["ray"]["marginal_ms_per_file"]
                                               / rows["local"]["marginal_ms_per_file"], 3),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
