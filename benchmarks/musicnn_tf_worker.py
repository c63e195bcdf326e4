"""The musicnn package's own TensorFlow pipeline, loaded once, answering timing requests over pipes.

Run by benchmarks/bench_vs_musicnn.py with the Python of a separate benchmark venv (never CI's):
    python3 -m venv /work/tfvenv
    /work/tfvenv/bin/pip install tensorflow-cpu==2.15.1 'numpy<2' librosa
    /work/tfvenv/bin/pip install --no-deps musicnn==0.1.0   # its own pins (numpy<1.17) cannot install

No shim is needed: musicnn 0.1.0 from PyPI already calls ``tf.compat.v1`` throughout and disables eager
execution itself. One thread: TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS / OMP_NUM_THREADS are set
to 1 here before TensorFlow is imported (the package's extractor opens its sessions without a config, so
they take these), and the worker's own session is also configured with one intra-op and one inter-op thread.

Protocol: one JSON line on stdout when ready ({"import_s", "load_s", "versions"}), then one JSON request
per stdin line, one JSON reply per request:
  {"op": "session", "path": P, "batch_size": B, "outputs": bool}
      the package's front end (musicnn.extractor.batch_data: librosa load at 16 kHz, mel, float16,
      log10(10000 x + 1)) and the loaded graph run B patches per sess.run (1 is the package's
      BATCH_SIZE; 0 means all patches in one run), fetching tags and the penultimate layer;
  {"op": "extractor", "path": P, "outputs": bool}
      musicnn.extractor.extractor(P, 'MTT_musicnn', 3, False, extract_features=True) as it is: it
      builds the graph and restores the checkpoint on every call.
Replies: {"wall_s", "cpu_s"} (seconds of wall and process CPU time), plus "taggram" (patches x 50) and
"penultimate" (patches x 200) when outputs were asked for. A failing request ends the worker with its
traceback on stderr.
"""

from __future__ import annotations

import os

for _var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / TensorFlow are imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

MODEL = "MTT_musicnn"
INPUT_LENGTH_S = 3


class Pipeline:
    """The package's MTT_musicnn graph, built and restored once, with its placeholders and outputs."""

    def __init__(self) -> None:
        import librosa
        import musicnn
        import tensorflow as tf
        from musicnn import configuration, extractor, models  # noqa: F401  (extractor disables eager mode)

        self.n_frames = librosa.time_to_frames(
            INPUT_LENGTH_S, sr=configuration.SR, n_fft=configuration.FFT_SIZE, hop_length=configuration.FFT_HOP
        ) + 1
        self.graph = tf.Graph()
        with self.graph.as_default(), tf.name_scope("model"):
            self.x = tf.compat.v1.placeholder(tf.float32, [None, self.n_frames, configuration.N_MELS])
            self.is_training = tf.compat.v1.placeholder(tf.bool)
            logits, *_, penultimate = models.define_model(
                self.x, self.is_training, MODEL, len(configuration.MTT_LABELS)
            )
            self.fetches = [tf.nn.sigmoid(logits), penultimate]
            saver = tf.compat.v1.train.Saver()
        threads = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
        self.sess = tf.compat.v1.Session(graph=self.graph, config=threads)
        saver.restore(self.sess, str(Path(musicnn.__file__).parent / MODEL) + "/")  # raises if it fails

    def embed(self, path: str, batch_size: int) -> dict[str, list]:
        """Tags (patches x 50) and penultimate layer (patches x 200) of a file, ``batch_size`` patches
        per sess.run (0: all at once), through the package's own librosa front end."""
        from musicnn.extractor import batch_data

        patches, _ = batch_data(path, self.n_frames, self.n_frames)
        step = batch_size or len(patches)
        runs = [
            self.run_batch(patches[first:first + step]) for first in range(0, len(patches), step)
        ]
        return {"taggram": np.concatenate([r[0] for r in runs]).tolist(),
                "penultimate": np.concatenate([r[1] for r in runs]).tolist()}

    def run_batch(self, patches: np.ndarray) -> list[np.ndarray]:
        """[tags, penultimate] of one batch of (patches, frames, 96) log-mel patches."""
        return self.sess.run(self.fetches, feed_dict={self.x: patches, self.is_training: False})


def extractor(path: str) -> dict[str, list]:
    """The package's extractor as a user calls it: tags and penultimate layer of a file."""
    from musicnn.extractor import extractor as package_extractor

    taggram, _, features = package_extractor(
        path, model=MODEL, input_length=INPUT_LENGTH_S, input_overlap=False, extract_features=True
    )
    return {"taggram": taggram.tolist(), "penultimate": features["penultimate"].tolist()}


def answer(pipeline: Pipeline, request: dict) -> dict:
    """Run one request and time it (wall and process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    if request["op"] == "session":
        outputs = pipeline.embed(request["path"], int(request["batch_size"]))
    elif request["op"] == "extractor":
        outputs = extractor(request["path"])
    else:
        raise ValueError(f"unknown op {request['op']!r}")
    reply = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    return {**reply, **outputs} if request.get("outputs") else reply


def main() -> None:
    """Load once, say so on stdout, then answer requests until stdin closes (or one fails)."""
    replies = sys.stdout
    sys.stdout = sys.stderr  # the package prints progress; keep the reply channel clean
    started = time.perf_counter()
    import tensorflow  # noqa: F401  (timed apart from the graph build)

    imported = time.perf_counter()
    pipeline = Pipeline()
    versions = {name: metadata.version(name) for name in ("tensorflow-cpu", "musicnn", "librosa", "numpy")}
    ready = {"import_s": imported - started, "load_s": time.perf_counter() - imported, "versions": versions}
    print(json.dumps(ready), file=replies, flush=True)
    for line in sys.stdin:
        print(json.dumps(answer(pipeline, json.loads(line))), file=replies, flush=True)


if __name__ == "__main__":
    main()
