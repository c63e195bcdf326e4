"""End to end, one thread: embedding a clip with the seed's FCN29 (and FCN05), decoding included, with mde
against the seed's own pipeline (the torch model with its torch front end), same file, same run.

Run from the repository root (after `pip install '.[test]'`; needs ../shared/data or MDE_TEST_DATA):
    python benchmarks/bench_e2e_seed.py [--rounds 20] [--out benchmarks/results]

  * mde:  mde.load_model(imported checkpoint, threads=1).embed(path): soundfile decode, C front end per
          window, ONNX Runtime.
  * seed: mde.bench.e2e_suite.seed_pipeline (also used by `mde bench e2e`), the seed extractor's
          steps (decode, mono mean, non-overlapping windows, batches of 16 through the torch network
          with its torch front end), torch.set_num_threads(1). The seed decodes with
          torchaudio.load, which is not installable beside torch 2.13 here, so both sides decode with
          soundfile (the same decoder torchaudio's soundfile backend uses).
Models are loaded once, outside the timings. Writes e2e_seed_cpu.json and e2e_seed_cpu.md.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / torch are imported

import argparse  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mde.bench.e2e_suite import seed_pipeline  # noqa: E402
from mde.bench.report import time_interleaved, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MDE_TEST_DATA") or REPO.parent / "shared" / "data")
CLIP = SHARED_DATA / "audio" / "joram-moments_of_clarity-08-solipsism-59-88.mp3"
CHECKPOINTS = {
    "FCN29": SHARED_DATA / "checkpoints" / "FCN29-roc_auc=0.9025-pr_auc=0.4342.ckpt",
    "FCN05": SHARED_DATA / "checkpoints" / "FCN05-roc_auc=0.8552-pr_auc=0.3344.ckpt",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (one call per method each)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="output folder")
    args = parser.parse_args()
    if not CLIP.is_file():
        raise SystemExit(f"needs the shared test data at {SHARED_DATA} (set MDE_TEST_DATA)")

    import torch

    torch.set_num_threads(1)
    os.environ["MDE_HOME"] = tempfile.mkdtemp(prefix="mde-bench-")
    from mde.export.importers.seed import import_seed
    from mde.runtime.extractor import load_model

    methods: dict[str, Callable[[], object]] = {}
    agreement = {}
    for label, checkpoint in CHECKPOINTS.items():
        model = load_model(import_seed(checkpoint)[0], threads=1)
        seed = seed_pipeline(checkpoint)
        methods[f"mde {label}"] = lambda model=model: model.embed(CLIP)
        methods[f"seed pipeline {label}"] = lambda seed=seed: seed(CLIP)
        agreement[label] = float(np.abs(model.embed(CLIP).embedding - seed(CLIP)).max())
    timings = time_interleaved(methods, args.rounds, warmup=2)
    by_name = {t.name: t for t in timings}
    speedups = {label: by_name[f"seed pipeline {label}"].median_s / by_name[f"mde {label}"].median_s
                for label in CHECKPOINTS}
    notes = (
        f"Clip: {CLIP.name} (29.1 s, 16 kHz mono MP3), decoding included, one thread, {args.rounds} interleaved "
        "rounds. mde is faster than the seed pipeline by "
        + ", ".join(f"{speedups[k]:.1f}x ({k})" for k in CHECKPOINTS)
        + " (goal for FCN29: >= 4x). Max |embedding difference| mde vs seed pipeline: "
        + ", ".join(f"{v:.1e} ({k})" for k, v in agreement.items()) + "."
    )
    _, md = write_results(
        args.out / "e2e_seed_cpu", "Embedding a clip end to end: mde vs the seed's torch pipeline (one CPU thread)",
        timings, "mde FCN29", {"clip": CLIP.name, "speedup": speedups, "max_abs_embedding_diff": agreement},
        packages=("numpy", "torch", "onnxruntime", "soundfile"), notes=notes,
    )
    print(md.read_text())


if __name__ == "__main__":
    main()
