"""``--ray`` on ``mde embed``, ``mde index`` and ``mde prepare``, against real Ray clusters on this machine.

Two clusters: the local instance a command starts in its own process (no ``--ray-address``), and a
two-node cluster on the loopback address (a head and a second node, each a ``ray start --block`` process
that this module starts, remembers and stops: their process groups, and nothing else). Every command runs
as a real ``mde`` process; its outputs are compared with the local batch's, byte for byte or array for
array. The fault tests SIGKILL the inference actor's process while the job runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import build_tiny_model
from test_cli import run_mde

pytest.importorskip("ray")

RATE = 8000
N_FILES = 12
ACTOR = "MapWorker(Map(_Infer))"
"""The title of an inference actor's process (Ray names it after the Ray Data operator)."""


def _write_corpus(folder: Path, n: int, seconds: float = 1.0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        samples = 0.1 * rng.standard_normal(int(RATE * seconds * (1 + i % 3))).astype(np.float32)
        paths.append(folder / f"clip{i:03d}.wav")
        sf.write(paths[-1], samples, RATE)
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """A tiny model, N_FILES real WAV files and a file that is not audio, and the local batch's outputs."""
    root = tmp_path_factory.mktemp("ray")
    (root / "tiny.onnx").write_bytes(build_tiny_model("tiny"))
    _write_corpus(root / "audio", N_FILES)
    (root / "audio" / "zz-broken.wav").write_bytes(b"this is not audio")
    local = run_mde("embed", root / "audio", "-m", root / "tiny.onnx", "-o", root / "local", cwd=root,
                    home=root / "home")
    assert local.returncode == 1 and "zz-broken.wav" in local.stderr  # the baseline fails the broken file too
    return {"root": root, "model": root / "tiny.onnx", "audio": root / "audio", "local": root / "local"}


def _assert_same_outputs(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.glob("*.npz"))
    assert names and names == sorted(p.name for p in b.glob("*.npz"))
    for name in names:
        left, right = np.load(a / name), np.load(b / name)
        assert left.files == right.files
        for key in left.files:
            assert np.array_equal(left[key], right[key]), (name, key)


def _assert_same_index(a: Path, b: Path) -> None:
    version = json.loads((b / "manifest.json").read_text())["data"]
    for part in sorted((a / version).iterdir()):
        assert part.read_bytes() == (b / version / part.name).read_bytes(), part.name


def _cache_manifest(corpus: dict[str, Path], path: Path) -> Path:
    """A manifest of the corpus's clips (the last four held out for valid and test) for ``mde prepare``."""
    files = sorted(corpus["audio"].glob("clip*.wav"))
    splits = ["train"] * (len(files) - 4) + ["valid"] * 2 + ["test"] * 2
    path.write_text("path,split,tags\n" + "".join(f"{f},{s},a|b\n" for f, s in zip(files, splits)))
    return path


def _assert_same_cache(a: Path, b: Path) -> None:
    for part in ("features.npy", "n_samples.npy", "done.npy", "index.json"):
        assert (a / part).read_bytes() == (b / part).read_bytes(), part


def _one_line_failure(stderr: str, name: str) -> None:
    lines = [line for line in stderr.splitlines() if name in line]
    assert len(lines) == 1 and lines[0].startswith("failed:"), stderr
    assert "Traceback" not in stderr


# --- a local Ray instance, started by the command ------------------------------------------------------------

def test_embed_on_a_local_instance_gives_the_local_outputs_and_resumes(corpus, tmp_path):
    out = tmp_path / "ray"
    ran = run_mde("embed", corpus["audio"], "-m", corpus["model"], "--ray", "-o", out, cwd=tmp_path, home=tmp_path)
    assert ran.returncode == 1, ran.stderr  # the broken file fails, as in the local batch, and only it
    _one_line_failure(ran.stderr, "zz-broken.wav")
    assert f"{N_FILES} embedded, 0 skipped (up to date), 0 too short, 1 failed" in ran.stderr
    _assert_same_outputs(corpus["local"], out)
    assert not list(out.glob("*.part*")) and not list(out.glob(".*"))  # nothing half-written
    again = run_mde("embed", corpus["audio"], "-m", corpus["model"], "--ray", "-o", out, cwd=tmp_path, home=tmp_path)
    assert f"0 embedded, {N_FILES} skipped (up to date)" in again.stderr, again.stderr
    assert _no_ray_processes_within(10), "the local instance outlived its command"


def test_index_on_ray_is_the_local_index(corpus, tmp_path):
    pytest.importorskip("faiss")
    local = run_mde("index", corpus["audio"], "-m", corpus["model"], "-o", tmp_path / "local", cwd=tmp_path,
                    home=tmp_path)
    ray = run_mde("index", corpus["audio"], "-m", corpus["model"], "-o", tmp_path / "ray", "--ray", cwd=tmp_path,
                  home=tmp_path)
    assert local.returncode == ray.returncode == 1
    assert f"{N_FILES} added, 0 updated, 0 removed, 0 unchanged, 1 failed" in ray.stderr, ray.stderr
    _one_line_failure(ray.stderr, "zz-broken.wav")
    _assert_same_index(tmp_path / "local", tmp_path / "ray")


def test_prepare_on_ray_is_the_local_cache(corpus, tmp_path):
    manifest = _cache_manifest(corpus, tmp_path / "m.csv")
    for name, extra in (("local", []), ("ray", ["--ray"])):
        ran = run_mde("prepare", "--dataset", "manifest", "--data", manifest, "--out", tmp_path / name,
                      "--seconds", "2", "--sample-rate", str(RATE), *extra, cwd=tmp_path, home=tmp_path)
        assert ran.returncode == 0, ran.stderr
    _assert_same_cache(tmp_path / "local", tmp_path / "ray")


def test_the_gpu_topology_prepares_in_cpu_tasks_and_gives_the_same_outputs(corpus, tmp_path, monkeypatch):
    """The topology of --device cuda (prepare as CPU tasks feeding the actors), chosen here on CPU: the
    driver decides it, so patching the choice in this process is enough."""
    from mde.cluster import pipeline
    from mde.cluster.embed import embed_files_on_ray

    monkeypatch.setattr(pipeline, "prepares_apart", lambda device: True)
    monkeypatch.chdir(tmp_path)  # (Ray puts the driver's working folder on its workers' import path)
    sources = sorted(corpus["audio"].iterdir())
    report = embed_files_on_ray(corpus["model"], sources, tmp_path / "out")
    assert [o.status for o in report.outcomes] == ["done"] * N_FILES + ["failed"]
    _assert_same_outputs(corpus["local"], tmp_path / "out")


def test_bad_ray_options_are_one_line(corpus, tmp_path):
    from test_cli import assert_one_line_error

    cases = [
        (["--ray", "--workers", "2"], "--workers is for the local batch; on Ray use --actors"),
        (["--actors", "2"], "--actors applies with --ray"),
        (["--ray", "--actors", "4"], "2 CPUs: 4 actor(s) of 1 thread(s) do not fit"),
        (["--ray-address", "127.0.0.1:1"], "cannot connect to the Ray cluster at 127.0.0.1:1"),
    ]
    for args, fragment in cases:
        ran = run_mde("embed", corpus["audio"], "-m", corpus["model"], "-o", tmp_path / "out", *args, cwd=tmp_path,
                      home=tmp_path)
        assert_one_line_error(ran, fragment)


# --- a two-node cluster on the loopback address ---------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackCluster:
    """A head and a second node started with ``ray start --block`` on 127.0.0.1 (token authentication with a
    fresh token); :meth:`stop` ends exactly their process groups."""

    def __init__(self, folder: Path, head_cpus: int = 1, node_cpus: int = 2) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
        self.cpus = head_cpus + node_cpus
        self.processes: list[subprocess.Popen] = []
        ray = str(Path(sys.executable).parent / "ray")
        common = ["--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1", "--object-store-memory=100000000"]
        self._start([ray, "start", "--head", f"--port={self.port}", f"--num-cpus={head_cpus}",
                     "--include-dashboard=false", *common], folder / "head.log")
        self._wait_for(head_cpus)
        self._start([ray, "start", f"--address={self.address}", f"--num-cpus={node_cpus}", *common],
                    folder / "node.log")
        self._wait_for(self.cpus)

    def _start(self, command: list[str], log: Path) -> None:
        with open(log, "w") as handle:  # (the child keeps its own copy of the descriptor)
            self.processes.append(subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=self.env,
                                                   start_new_session=True))

    def _wait_for(self, cpus: int, timeout: float = 90.0) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = subprocess.run([ray, "status", f"--address={self.address}"], capture_output=True, text=True,
                                    env=self.env, timeout=60)
            if f"/{cpus}.0 CPU" in status.stdout:
                return
            time.sleep(0.5)
        raise AssertionError(f"the loopback cluster did not reach {cpus} CPUs")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to each node's process group (``ray start --block`` stops its processes), and SIGKILL to
        what is left of those groups after ``grace`` seconds."""
        for process in reversed(self.processes):
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in reversed(self.processes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The loopback cluster for this module's tests; afterwards no Ray process born since it started is left
    (Ray's worker processes, in sessions of their own, exit within seconds of their node's raylet)."""
    before = {_pid(line) for line in _ray_processes()}
    started = LoopbackCluster(tmp_path_factory.mktemp("loopback-cluster"))
    yield started
    started.stop()
    deadline = time.monotonic() + 20
    while {_pid(line) for line in _ray_processes()} - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not {_pid(line) for line in _ray_processes()} - before, _ray_processes()


def _pid(ps_line: str) -> int:
    return int(ps_line.split()[0])


def _ray_processes() -> list[str]:
    """'pid pgid state args' of this machine's live Ray processes (zombies, which are only waiting for their
    parent to reap them, left out)."""
    listing = subprocess.run(["ps", "-eo", "pid,pgid,stat,args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines()
            if ("raylet" in line or "gcs_server" in line or "ray::" in line) and line.split()[2][0] != "Z"]


def _no_ray_processes_within(seconds: float) -> bool:
    """Whether every Ray process is gone within ``seconds`` (a stopped instance's workers exit as it shuts down)."""
    deadline = time.monotonic() + seconds
    while _ray_processes():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _mde_on(cluster: LoopbackCluster, *args, cwd: Path) -> subprocess.Popen:
    env = {**cluster.env, "MDE_HOME": str(cwd / "home"), "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "mde", *map(str, args)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def test_embed_on_a_two_node_cluster_gives_the_local_outputs(cluster, corpus, tmp_path):
    """Into a pyarrow filesystem URI (file://): the actors on both nodes write through pyarrow."""
    run = _mde_on(cluster, "embed", corpus["audio"], "-m", corpus["model"], "--ray-address", cluster.address,
                  "--actors", "2", "-o", (tmp_path / "out").as_uri(), cwd=tmp_path)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr
    _one_line_failure(stderr, "zz-broken.wav")
    _assert_same_outputs(corpus["local"], tmp_path / "out")
    assert not [p for p in (tmp_path / "out").iterdir() if p.suffix != ".npz"]  # no part upload left
    assert _ray_processes(), "the command stopped the cluster it was only connected to"


def test_index_and_prepare_on_a_two_node_cluster_are_the_local_ones(cluster, corpus, tmp_path):
    pytest.importorskip("faiss")
    local = run_mde("index", corpus["audio"], "-m", corpus["model"], "-o", tmp_path / "local", cwd=tmp_path,
                    home=tmp_path)
    run = _mde_on(cluster, "index", corpus["audio"], "-m", corpus["model"], "-o", tmp_path / "ray", "--ray-address",
                  cluster.address, "--actors", "2", cwd=tmp_path)
    _, stderr = run.communicate(timeout=300)
    assert local.returncode == run.returncode == 1, stderr
    _assert_same_index(tmp_path / "local", tmp_path / "ray")
    manifest = _cache_manifest(corpus, tmp_path / "m.csv")
    for name in ("local", "ray"):
        extra = ["--ray-address", cluster.address] if name == "ray" else []
        prepared = _mde_on(cluster, "prepare", "--dataset", "manifest", "--data", manifest, "--out",
                           tmp_path / f"cache-{name}", "--seconds", "2", "--sample-rate", str(RATE), *extra,
                           cwd=tmp_path)
        _, stderr = prepared.communicate(timeout=300)
        assert prepared.returncode == 0, stderr
    _assert_same_cache(tmp_path / "cache-local", tmp_path / "cache-ray")


def _actor_pids() -> list[int]:
    return [_pid(line) for line in _ray_processes() if ACTOR in line]


def _kill_actors(run: subprocess.Popen, out: Path, kills: int, poll: float = 0.02) -> list[int]:
    """SIGKILL an inference actor ``kills`` times while ``run`` runs, each time once it is writing outputs (an
    output more than at the last kill): mid-run, never while a restarted actor is still starting. The pids
    killed."""
    killed: list[int] = []
    written_at_kill = 0
    while run.poll() is None and len(killed) < kills:
        alive = [pid for pid in _actor_pids() if pid not in killed]
        written = len(list(out.glob("*.npz")))
        if alive and written > written_at_kill:
            os.kill(alive[0], signal.SIGKILL)
            killed.append(alive[0])
            written_at_kill = written
        time.sleep(poll)
    return killed


def _embed_killing_actors(cluster: LoopbackCluster, tmp_path: Path, kills: int, n_files: int = 150):
    """``mde embed`` of ``n_files`` files on the cluster while its inference actor is SIGKILLed ``kills`` times
    (see _kill_actors): (files, output folder, pids killed, the process's exit code, its stderr)."""
    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_tiny_model("tiny"))
    files = _write_corpus(tmp_path / "audio", n_files)
    out = tmp_path / "out"
    run = _mde_on(cluster, "embed", tmp_path / "audio", "-m", model, "--ray-address", cluster.address, "--actors", "1",
                  "-o", out, cwd=tmp_path)
    killed = _kill_actors(run, out, kills=kills)
    _, stderr = run.communicate(timeout=300)
    return files, out, killed, run.returncode, stderr


def test_a_killed_actor_loses_and_duplicates_nothing(cluster, tmp_path):
    files, out, killed, returncode, stderr = _embed_killing_actors(cluster, tmp_path, kills=1)
    assert killed, "the job ended before an actor could be killed mid-run"
    assert returncode == 0, stderr
    assert f"{len(files)} embedded, 0 skipped" in stderr
    assert sorted(p.stem for p in out.glob("*.npz")) == sorted(f.stem for f in files)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{f.stem}.npz" for f in files)  # no part files
    for path in files[:5]:
        assert len(np.load(out / f"{path.stem}.npz")["timestamp"]) > 0


def test_past_the_retry_limit_the_missing_files_are_named(cluster, tmp_path):
    """The only inference actor killed once more than its restarts: the job stops (Ray Data alone would wait
    for it forever; the watchdog notices), names every file it did not write, and leaves no part file."""
    from mde.cluster.pipeline import ACTOR_RESTARTS

    files, out, killed, returncode, stderr = _embed_killing_actors(cluster, tmp_path, kills=ACTOR_RESTARTS + 1)
    assert len(killed) == ACTOR_RESTARTS + 1, stderr
    assert returncode == 1
    written = {p.stem for p in out.glob("*.npz")}
    lost = [Path(line.split(":")[1].strip()).stem for line in stderr.splitlines()
            if line.startswith("failed:") and "lost: the Ray pipeline stopped" in line]
    assert lost, stderr
    assert len(written) + len(lost) == len(files)  # every file is written or named as lost, never both
    assert not set(lost) & written
    assert f"{len(written)} embedded, 0 skipped (up to date), 0 too short, {len(lost)} failed" in stderr
    assert not [p for p in out.iterdir() if p.suffix != ".npz"]  # no part file of a killed write


def test_bench_e2e_measures_ray_beside_the_local_batch(corpus, tmp_path, shared_data, monkeypatch):
    """``mde bench e2e --ray``: a Ray row against the local rows of the same model, with Ray's start-up, the
    per-file overhead and the inference actor's peak memory."""
    monkeypatch.setenv("MDE_TEST_DATA", str(shared_data))
    out = tmp_path / "results"
    ran = run_mde("bench", "e2e", "--quick", "--ray", "--models", corpus["model"], "--out", out, cwd=tmp_path,
                  home=tmp_path)
    assert ran.returncode == 0, ran.stderr
    rows = {row["name"]: row for row in json.loads((out / "bench_e2e_cpu.json").read_text())["results"]}
    ray = next(row for name, row in rows.items() if "on Ray" in name)
    local = rows[ray["reference"]]
    assert "on Ray" not in ray["reference"] and local["workers"] == ray["workers"] == 2  # the same layout, 2 x 1
    assert ray["ray_start_s"] > 0 and ray["worker_peak_rss_mb"] > 10
    assert ray["overhead_ms_per_file"] == pytest.approx(
        1000 * (ray["median_s"] - local["median_s"]) / len(json.loads((out / "bench_e2e_cpu.json").read_text())
                                                         ["files"]), abs=0.2)


# --- data-parallel training on Ray Train ------------------------------------------------------------------------

def _first_log_row(run: Path) -> dict[str, str]:
    import csv

    with open(run / "log.csv", newline="") as handle:
        return next(csv.DictReader(handle))


def test_two_workers_on_half_batches_step_as_one_on_the_whole(pretrained_fcn05, synth_corpus, tmp_path,
                                                               monkeypatch):
    """Two Ray Train workers with 4 windows each of every batch of 8 give the first epoch of one process
    with the whole batch: the same train loss, validation figures and weights (float tolerance). The
    backbone is frozen so that the step is a function of the batch alone (BatchNorm in training mode
    normalises each worker's half by its own statistics, and dropout draws per process)."""
    import torch

    from mde.cluster.train import train_on_ray
    from mde.trainer.config import TrainConfig
    from mde.trainer.loop import train

    def config(out: str) -> TrainConfig:
        return TrainConfig(model="fcn05", dataset="manifest", data=str(synth_corpus), out=str(tmp_path / out),
                           epochs=1, batch_size=8, crops_per_clip=1, lr=3e-3, device="cpu", eval_crops=4, seed=0,
                           init=str(pretrained_fcn05["trained"]), freeze_backbone=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config("one"))
    finally:
        torch.set_num_threads(threads)
    # Ray puts the driver's working folder on its workers' import path: not the checkout, whose mde lacks the
    # compiled front end when the package is installed (as in CI)
    monkeypatch.chdir(tmp_path)
    results = train_on_ray(config("two"), 2)
    one, two = _first_log_row(tmp_path / "one"), _first_log_row(tmp_path / "two")
    for key in ("train_loss", "valid_loss", "valid_score"):
        assert float(two[key]) == pytest.approx(float(one[key]), abs=1e-5), key
    heads = [torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=False)["model"]["head.weight"]
             for run in ("one", "two")]
    assert torch.allclose(heads[0], heads[1], atol=1e-6)
    assert results == json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert not (tmp_path / "two" / "checkpoints" / "best.pt.part").exists()


def test_the_command_trains_on_two_workers_learns_and_resumes(synth_corpus, tmp_path):
    args = ["train", "--model", "fcn05", "--dataset", "manifest", "--data", synth_corpus, "--out", "run",
            "--ray-workers", "2", "--batch-size", "8", "--crops-per-clip", "1", "--lr", "1e-2", "--device", "cpu",
            "--eval-crops", "4"]
    first = run_mde(*args, "--epochs", "4", cwd=tmp_path, home=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "training fcn05 on Ray: 2 worker(s) x 4 windows of each batch of 8" in first.stderr
    assert [line.split(":")[0] for line in first.stderr.splitlines() if line.startswith("epoch")] == [
        f"epoch {n}" for n in range(1, 5)]
    import csv

    with open(tmp_path / "run" / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(row["train_loss"]) for row in rows]
    assert losses[-1] < losses[0] - 0.05, losses  # it learns
    assert json.loads(first.stdout)["best_epoch"] >= 1
    resumed = run_mde(*args, "--epochs", "5", "--resume", cwd=tmp_path, home=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    with open(tmp_path / "run" / "log.csv", newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2", "3", "4", "5"]
    odd = run_mde("train", "--model", "fcn05", "--dataset", "manifest", "--data", synth_corpus, "--out", "odd",
                  "--ray-workers", "3", "--batch-size", "8", cwd=tmp_path, home=tmp_path)
    from test_cli import assert_one_line_error

    assert_one_line_error(odd, "a batch of 8 windows does not split over 3 workers")
