"""Speed and tag agreement of mde's MTT_musicnn against the musicnn package's own TensorFlow pipeline.

Run from the repository root with the project's Python; the TensorFlow side runs in a separate benchmark
venv, never CI's (its install is in benchmarks/musicnn_tf_worker.py's docstring):
    PYTHONPATH=. python benchmarks/bench_vs_musicnn.py --tf-python /work/tfvenv/bin/python \
        [--clip PATH]... [--repeats 20] [--cli-repeats 5]

Clips (default): the MTAT clip (16 kHz mono) and the MSD clip (22.05 kHz stereo) from the shared test
data (MDE_TEST_DATA overrides the data folder). Both sides use one thread and decode the file on every
call; models are loaded once beforehand (load times are reported apart). Per file, interleaved round by
round, each timed in this process around the whole call (for the TF side that includes a pipe round
trip of well under a millisecond):
  * ours:  mde.load_model('MTT_musicnn', threads=1).embed(path): soundfile, C front end, ONNX Runtime;
  * the package's front end (librosa) and its loaded TF graph in a long-lived worker process, one patch
    per sess.run as its extractor does, and all patches in one sess.run;
  * musicnn.extractor.extractor(path, 'MTT_musicnn', extract_features=True) as is (it rebuilds the graph
    and restores the checkpoint on every call).
Cold start: whole-process wall time of `python -m mde tag CLIP -m MTT_musicnn --threads 1` against a
`python -c` one-liner calling musicnn.tagger.top_tags. Tag agreement: clip-mean tag probabilities, top 5,
per-patch taggram and penultimate layer. Writes musicnn_vs_tensorflow_cpu.json and .md.
"""

from __future__ import annotations

import os

SINGLE_THREAD = dict.fromkeys(
    ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
     "TF_NUM_INTEROP_THREADS"),
    "1",
)
os.environ.update(SINGLE_THREAD)  # before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mde.bench.report import Timing, time_interleaved, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "benchmarks" / "musicnn_tf_worker.py"
SHARED_DATA = Path(os.environ.get("MDE_TEST_DATA") or REPO.parent / "shared" / "data")
DEFAULT_CLIPS = (
    SHARED_DATA / "audio" / "joram-moments_of_clarity-08-solipsism-59-88.mp3",  # MTAT, 16 kHz mono
    SHARED_DATA / "audio" / "TRWJAZW128F42760DD_test.mp3",  # MSD, 22.05 kHz stereo
)
MODEL = "MTT_musicnn"
TOP_K = 5
GOAL = 20.0

OURS = "mde (ORT + C front end)"
TF_LOOP = "musicnn TF, 1 patch per sess.run (its extractor's loop)"
TF_BATCH = "musicnn TF, all patches in one sess.run"
TF_EXTRACTOR = "musicnn extractor() (graph build + restore per call)"
CLI_OURS = "mde tag --threads 1 (whole process)"
CLI_TF = "musicnn top_tags one-liner (whole process)"
TOP_TAGS_ONE_LINER = "from musicnn.tagger import top_tags; top_tags({path!r}, model={model!r}, topN={k})"


class TfWorker:
    """benchmarks/musicnn_tf_worker.py in the TF venv: loads the package's graph once, then answers
    JSON requests over its stdin / stdout (its stderr goes to a log file, shown if it fails)."""

    def __init__(self, tf_python: str, log: Path) -> None:
        self.log = log
        self.log_file = log.open("w")
        self.process = subprocess.Popen(
            [tf_python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log_file, text=True, env=tf_env(),
        )
        self.ready = self._reply()

    def request(self, **fields: object) -> dict:
        """One request's reply (seconds, and outputs when asked for)."""
        self.process.stdin.write(json.dumps(fields) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        """Close its stdin, wait for it to exit, close its log."""
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.log_file.close()

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            tail = "\n".join(self.log.read_text().splitlines()[-15:])
            raise RuntimeError(f"the TF worker exited:\n{tail}")
        return json.loads(line)


def tf_env() -> dict[str, str]:
    """Environment for TF-venv processes: one thread everywhere, quiet TF logs, no PYTHONPATH of ours."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return {**env, **SINGLE_THREAD, "TF_CPP_MIN_LOG_LEVEL": "2"}


def mde_env() -> dict[str, str]:
    """Environment for `python -m mde` processes: this checkout importable, one thread."""
    return {**os.environ, **SINGLE_THREAD, "PYTHONPATH": str(REPO)}


def import_model(home: Path) -> None:
    """Store MTT_musicnn in a fresh MDE_HOME (converted from the musicnn package installed here)."""
    os.environ["MDE_HOME"] = str(home)
    subprocess.run([sys.executable, "-m", "mde", "import", "musicnn", MODEL], check=True, env=mde_env(),
                   stdout=subprocess.DEVNULL)


def mde_version() -> str:
    """mde's version (the checkout may run from PYTHONPATH, uninstalled)."""
    import mde

    return mde.__version__


def load_ours() -> tuple[object, float]:
    """Our model with one thread, and its load time in seconds."""
    import mde

    started = time.perf_counter()
    model = mde.load_model(MODEL, threads=1)
    return model, time.perf_counter() - started


def per_file_methods(model, worker: TfWorker, clip: Path) -> dict[str, Callable[[], object]]:
    """No-argument calls that each process the whole file (decoding included) once."""
    path = str(clip)
    return {
        OURS: lambda: model.embed(path),
        TF_LOOP: lambda: worker.request(op="session", path=path, batch_size=1),
        TF_BATCH: lambda: worker.request(op="session", path=path, batch_size=0),
        TF_EXTRACTOR: lambda: worker.request(op="extractor", path=path),
    }


def cold_start_methods(clip: Path, tf_python: str) -> dict[str, Callable[[], object]]:
    """Whole-process runs that tag the file: our CLI and the package's top_tags, from a fresh Python."""
    ours = [sys.executable, "-m", "mde", "tag", str(clip), "-m", MODEL, "--threads", "1"]
    theirs = [tf_python, "-c", TOP_TAGS_ONE_LINER.format(path=str(clip), model=MODEL, k=TOP_K)]

    def run(command: list[str], env: dict[str, str]) -> None:
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return {CLI_OURS: lambda: run(ours, mde_env()), CLI_TF: lambda: run(theirs, tf_env())}


def outputs(model, worker: TfWorker, clip: Path) -> dict[str, dict]:
    """One run of each side with its outputs: taggram (patches x 50), penultimate (patches x 200), and
    wall / process-CPU seconds (CPU close to wall means one thread was used)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = model.embed(str(clip))
    ours = {"taggram": result.tags, "penultimate": result.embedding,
            "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    sides = {OURS: ours}
    for name, fields in ((TF_LOOP, {"op": "session", "batch_size": 1}), (TF_EXTRACTOR, {"op": "extractor"})):
        reply = worker.request(path=str(clip), outputs=True, **fields)
        sides[name] = {**reply, "taggram": np.asarray(reply["taggram"]),
                       "penultimate": np.asarray(reply["penultimate"])}
    return sides


def top_tags(mean: np.ndarray, tag_names: tuple[str, ...]) -> list[str]:
    """The TOP_K most probable tag names, most probable first."""
    return [tag_names[i] for i in np.argsort(-mean, kind="stable")[:TOP_K]]


def agreement(ours: dict, theirs: dict, tag_names: tuple[str, ...]) -> dict[str, object]:
    """How closely our tags and penultimate layer follow the package's (probabilities and their max |Δ|)."""
    if ours["taggram"].shape != theirs["taggram"].shape:
        raise RuntimeError(f"patch counts differ: {ours['taggram'].shape} vs {theirs['taggram'].shape}")
    ours_mean, theirs_mean = ours["taggram"].mean(axis=0), theirs["taggram"].mean(axis=0)
    ours_top, theirs_top = top_tags(ours_mean, tag_names), top_tags(theirs_mean, tag_names)
    return {
        "patches": int(ours["taggram"].shape[0]),
        "mean_tags_max_abs_diff": float(np.abs(ours_mean - theirs_mean).max()),
        "taggram_max_abs_diff": float(np.abs(ours["taggram"] - theirs["taggram"]).max()),
        "penultimate_max_abs_diff": float(np.abs(ours["penultimate"] - theirs["penultimate"]).max()),
        "top5_ours": [(name, round(float(ours_mean[tag_names.index(name)]), 4)) for name in ours_top],
        "top5_theirs": [(name, round(float(theirs_mean[tag_names.index(name)]), 4)) for name in theirs_top],
        "top5_same_set": set(ours_top) == set(theirs_top),
        "top5_same_order": ours_top == theirs_top,
    }


def clip_agreement(sides: dict[str, dict], tag_names: tuple[str, ...]) -> dict[str, object]:
    """Ours against the warm TF session; the session against the package's extractor() (same taggram
    means the session reproduces the package); each side's CPU / wall seconds.

    The extractor's penultimate layer is not compared with ours: musicnn 0.1.0's extractor, after the
    first patch, concatenates the first patch's ``penultimate_`` again instead of the new ``backend_``,
    so every row is patch 0's (``extractor_penultimate_repeats_patch_0`` checks this)."""
    session, package = sides[TF_LOOP], sides[TF_EXTRACTOR]
    return {
        "ours_vs_tf": agreement(sides[OURS], session, tag_names),
        "tf_session_vs_extractor_taggram_max_abs_diff": float(np.abs(session["taggram"] - package["taggram"]).max()),
        "extractor_penultimate_repeats_patch_0": bool((package["penultimate"] == package["penultimate"][0]).all()),
        "cpu_over_wall": {name: round(side["cpu_s"] / side["wall_s"], 3) for name, side in sides.items()},
    }


def rows(timings: list[Timing], reference: str) -> list[dict]:
    """Timings as dicts with ``ratio_to_ours``: each median over the ``reference`` row's median."""
    base = next(t.median_s for t in timings if t.name == reference)
    return [{**asdict(t), "ratio_to_ours": round(t.median_s / base, 3)} for t in timings]


def markdown_table(table: list[dict], reference: str) -> list[str]:
    """A Markdown table of timing rows in milliseconds, with times over the ``reference`` row."""
    lines = [f"| what | median (ms) | min (ms) | max (ms) | runs | time / {reference} |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['median_s'] * 1e3:.1f} | {r['min_s'] * 1e3:.1f} | {r['max_s'] * 1e3:.1f} "
              f"| {r['runs']} | {r['ratio_to_ours']:.2f}x |" for r in table]
    return lines


def agreement_lines(found: dict[str, object]) -> list[str]:
    """Markdown bullets of one clip's tag agreement."""
    a = found["ours_vs_tf"]
    order = "same order" if a["top5_same_order"] else ("same tags, other order" if a["top5_same_set"] else "differ")
    ours_top = ", ".join(f"{n} {p:.3f}" for n, p in a["top5_ours"])
    theirs_top = ", ".join(f"{n} {p:.3f}" for n, p in a["top5_theirs"])
    session_vs_package = found["tf_session_vs_extractor_taggram_max_abs_diff"]
    threads = ", ".join(f"{name} {ratio:.2f}" for name, ratio in found["cpu_over_wall"].items())
    return [
        f"- Top 5 ({order}): ours {ours_top}; musicnn {theirs_top}.",
        (f"- Max |Δ| over {a['patches']} patches: clip-mean tags {a['mean_tags_max_abs_diff']:.2e}, per-patch "
         f"taggram {a['taggram_max_abs_diff']:.2e}, penultimate layer {a['penultimate_max_abs_diff']:.2e} "
         f"(against the warm TF session, whose taggram differs from extractor()'s by {session_vs_package:.1e})."),
        (f"- extractor()'s 'penultimate' feature repeats patch 0 on every row: "
         f"{found['extractor_penultimate_repeats_patch_0']}."),
        (f"- CPU / wall seconds of one call (above 1 would mean extra threads; below 1, waiting for a busy "
         f"machine): {threads}."),
    ]


def clip_section(clip: str, record: dict) -> list[str]:
    """A clip's Markdown section: per-file table, cold-start table, tag agreement."""
    return [
        f"## {clip}", "", "Per file (model loaded):", "", *markdown_table(record["per_file"], OURS), "",
        "Cold start (whole process, model load and imports included):", "",
        *markdown_table(record["cold_start"], CLI_OURS), "", *agreement_lines(record["agreement"]), "",
    ]


def measure_clip(clip: Path, model, worker: TfWorker, args: argparse.Namespace) -> tuple[list[Timing], dict]:
    """Per-file timings, cold-start timings and tag agreement on one clip."""
    per_file = time_interleaved(per_file_methods(model, worker, clip), args.repeats, warmup=1)
    cold = time_interleaved(cold_start_methods(clip, args.tf_python), args.cli_repeats, warmup=1)
    found = clip_agreement(outputs(model, worker, clip), model.info.tag_names)
    record = {"path": str(clip), "per_file": rows(per_file, OURS), "cold_start": rows(cold, CLI_OURS),
              "agreement": found}
    return per_file, record


def verdict(records: dict[str, dict]) -> str:
    """One line per clip: how many times faster ours is than each TF row, against the goal."""
    lines = []
    for clip, record in records.items():
        ratios = [f"{row['ratio_to_ours']:.1f}x vs {row['name']}"
                  for table in (record["per_file"], record["cold_start"]) for row in table[1:]]
        lines.append(f"- {clip}: " + "; ".join(ratios) + ".")
    return "\n".join(lines)


def summary(load: dict[str, float], tf_versions: dict[str, str], records: dict[str, dict],
            load_average: dict[str, float]) -> str:
    """The Markdown below the main table: load times, versions, machine load, every clip's section."""
    lines = [
        (f"The main table is the first clip's per-file table. Goal: >= {GOAL:g}x faster than the package's "
         "extractor with the same tags. Ours is faster by:"), "",
        verdict(records), "",
        (f"Load (once, not in the per-file times): ours {load['ours_s'] * 1e3:.0f} ms; TF import "
         f"{load['tf_import_s']:.2f} s, graph build + checkpoint restore {load['tf_load_s']:.2f} s."),
        f"Ours: mde {mde_version()} (this checkout). TF side (benchmark venv): "
        + ", ".join(f"{k} {v}" for k, v in tf_versions.items()) + ".",
        (f"1-minute load average at start / end: {load_average['start']:.2f} / {load_average['end']:.2f} "
         "(other work on the machine slows both sides alike, calls being interleaved)."),
        ("Both front ends round the mel energies to float16 before log10(10000 x + 1) (the package's "
         "batch_data does too); the TF side uses librosa, ours soundfile + soxr HQ + the C front end."), "",
    ]
    for clip, record in records.items():
        lines += clip_section(clip, record)
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf-python", required=True, help="Python of the benchmark venv with TensorFlow")
    parser.add_argument("--clip", type=Path, action="append", help="audio file (repeatable; default: both)")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per file (one call per method)")
    parser.add_argument("--cli-repeats", type=int, default=5, help="timed whole-process rounds per file")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="output folder")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    clips = args.clip or list(DEFAULT_CLIPS)
    load_average = {"start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="mde-bench-") as tmp:
        import_model(Path(tmp))
        model, ours_load_s = load_ours()
        worker = TfWorker(args.tf_python, Path(tmp) / "tf_worker.log")
        try:
            measured = {clip.name: measure_clip(clip, model, worker, args) for clip in clips}
        finally:
            worker.close()
    load_average["end"] = os.getloadavg()[0]
    load = {"ours_s": ours_load_s, "tf_import_s": worker.ready["import_s"], "tf_load_s": worker.ready["load_s"]}
    records = {name: record for name, (_, record) in measured.items()}
    _, md = write_results(
        args.out / "musicnn_vs_tensorflow_cpu",
        f"{MODEL}: mde against the musicnn package's TensorFlow pipeline (one CPU thread, "
        f"{clips[0].name})",
        measured[clips[0].name][0], OURS,
        {"goal_ratio": GOAL, "load": load, "load_average_1min": load_average, "mde_version": mde_version(),
         "tf_side_versions": worker.ready["versions"], "clips": records},
        packages=("numpy", "onnxruntime", "soundfile", "soxr"),
        notes=summary(load, worker.ready["versions"], records, load_average),
    )
    print(md.read_text())


if __name__ == "__main__":
    main()
