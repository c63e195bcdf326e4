"""ONNX Runtime on CPU, one thread: fp32 against fp16 and int8 model files of FCN29 and MTT_musicnn.

Run from the repository root (after `pip install '.[export]'`; needs ../shared/data or MDE_TEST_DATA, and
the musicnn package for MTT_musicnn):
    python benchmarks/bench_precision.py [--rounds 10] [--out benchmarks/results]

Each model is exported with mde.export.export_model: fp32 (FCN29 from the seed checkpoint, MTT_musicnn
imported from the musicnn package), then fp16 and int8 from that fp32 file, int8 calibrated on the two
shared clips (FCN29: 29 s windows every 0.01 s, ~110 windows; musicnn: 3 s patches every 0.5 s). The
timed call is one InferenceSession.run on a batch of 1 or 8 log-mel windows of the MTAT clip
(intra_op_num_threads=1, inter_op_num_threads=1, sequential execution); the front end is not timed.
Writes precision_cpu.json and precision_cpu.md; ratio = median time / median of that model's fp32 at the
same batch (below 1: faster than fp32).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / torch are imported

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mde.bench.report import Timing, time_interleaved, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MDE_TEST_DATA") or REPO.parent / "shared" / "data")
FCN29_CKPT = SHARED_DATA / "checkpoints" / "FCN29-roc_auc=0.9025-pr_auc=0.4342.ckpt"
AUDIO = SHARED_DATA / "audio"
MTAT_CLIP = AUDIO / "joram-moments_of_clarity-08-solipsism-59-88.mp3"
BATCHES = (1, 8)
CALIB_HOPS = {"FCN29": 0.01, "MTT_musicnn": 0.5}


def export_precisions(name: str, source: Path, folder: Path) -> dict[str, tuple[Path, object]]:
    """{precision: (file, agreement with fp32 or None)} of one model."""
    from mde.export.export import export_model

    fp32 = export_model(source, folder / f"{name}-fp32.onnx", calib=AUDIO)
    files = {"fp32": (fp32.path, None)}
    for precision in ("fp16", "int8"):
        result = export_model(fp32.path, folder / f"{name}-{precision}.onnx", calib=AUDIO,
                              calib_hop=CALIB_HOPS[name], **{precision: True})
        files[precision] = (result.path, result.agreement)
    return files


def sources(folder: Path) -> dict[str, Path]:
    """The fp32 sources to benchmark: FCN29's checkpoint, MTT_musicnn imported into a private store."""
    found = {"FCN29": FCN29_CKPT} if FCN29_CKPT.is_file() else {}
    if importlib.util.find_spec("musicnn") is not None:
        from mde.export.importers.musicnn import import_musicnn

        os.environ["MDE_HOME"] = str(folder / "home")
        found["MTT_musicnn"] = import_musicnn("MTT_musicnn")[0]
    return found


def session_call(path: Path, batch: np.ndarray) -> Callable[[], object]:
    """One-thread ONNX Runtime inference of ``batch`` as a no-argument call."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"logmel": batch})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    from mde.export.calibration import audio_windows
    from mde.runtime.package import read_model_info

    timings: list[Timing] = []
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="mde-bench-precision-") as tmp:
        for name, source in sources(Path(tmp)).items():
            files = export_precisions(name, source, Path(tmp))
            windows = audio_windows(MTAT_CLIP, read_model_info(files["fp32"][0]), hop=0.5)
            for batch_size in BATCHES:
                batch = np.ascontiguousarray(np.resize(windows, (batch_size, *windows.shape[1:])))
                calls = {f"{name} {precision} batch {batch_size}": session_call(path, batch)
                         for precision, (path, _) in files.items()}
                measured = time_interleaved(calls, args.rounds)
                reference = measured[0].median_s
                timings += measured
                for timing in measured:
                    figures[timing.name] = round(timing.median_s / reference, 3)
            figures[f"{name} agreement"] = {p: a.describe() for p, (_, a) in files.items() if a is not None}
    notes = "Ratios to the same model's fp32 at the same batch (median / median; below 1 is faster):\n\n" + "\n".join(
        f"- {key}: {value}" for key, value in figures.items())
    write_results(args.out / "precision_cpu", "ONNX Runtime CPU, one thread: fp32 vs fp16 vs int8", timings,
                  None, {"ratio_to_fp32": figures}, packages=("onnxruntime", "onnx", "onnxconverter-common", "numpy"),
                  notes=notes)


if __name__ == "__main__":
    main()
