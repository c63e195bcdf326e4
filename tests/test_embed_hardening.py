"""`mde embed` on bad destinations, write errors, stale outputs, interrupted and killed batches.

Real files, real subprocesses and real signals; read-only and full file systems are small tmpfs mounts
when the tests run as root (root ignores permission bits), else a chmod 555 folder, else skipped.
"""

import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import build_tiny_model, tmpfs, write_tone

from mde import atomic
from mde.errors import MdeError
from mde.runtime import store
from mde.runtime.batch import EmbedSettings, embed_files

ENV_COLUMNS = "40"  # a narrow terminal: messages must still come out one line each


def run_mde(*args, cwd, home, preexec_fn=None):
    env = {**os.environ, "MDE_HOME": str(home), "COLUMNS": ENV_COLUMNS}
    return subprocess.run(
        [sys.executable, "-m", "mde", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=300, preexec_fn=preexec_fn,
    )


def stderr_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("embedding ")]


def parts_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.part"))


@contextmanager
def read_only_folder(path: Path):
    """A folder in which no file can be created, whoever runs the test."""
    if os.geteuid() != 0:
        path.mkdir()
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    with tmpfs(path, "ro,size=64k") as mounted:
        yield mounted


@pytest.fixture
def tiny_path(tiny_model) -> Path:
    return store.resolve(tiny_model)


# 1. one atomic-write helper ----------------------------------------------------------------------


def test_files_respect_the_umask_and_interrupted_writes_leave_nothing(tiny_path, mde_home, tmp_path):
    source = write_tone(tmp_path / "a.wav", 1.0)
    previous = os.umask(0o027)
    try:
        embed_files(tiny_path, [source], tmp_path / "out")
        store.save(build_tiny_model("other"), "other")
    finally:
        os.umask(previous)
    assert (tmp_path / "out" / "a.npz").stat().st_mode & 0o777 == 0o640  # mkstemp made 0600
    assert store.model_path("other").stat().st_mode & 0o777 == 0o640

    target = tmp_path / "kept.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    with pytest.raises(IsADirectoryError):
        atomic.write_bytes_atomic(tmp_path / "out", b"x")  # a folder in the way: the rename fails
    assert target.read_bytes() == b"old" and parts_in(tmp_path) == []


def test_engine_files_use_the_one_atomic_writer():
    from mde.runtime.backends import tensorrt_engine

    assert tensorrt_engine.write_bytes_atomic is atomic.write_bytes_atomic  # no fixed '.tmp' of its own


# 2. a destination that cannot work stops before any work -------------------------------------------


def test_an_output_path_that_is_a_file_or_under_one_is_one_line_before_the_model(tiny_model, mde_home, tmp_path):
    write_tone(tmp_path / "a.wav", 1.0)
    (tmp_path / "taken").write_text("a file")
    proc = run_mde("embed", "a.wav", "-m", "no-such-model", "-o", "taken", cwd=tmp_path, home=mde_home)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert stderr_lines(proc) == ["mde: error: cannot write outputs to taken: it is a file, not a folder"]
    proc = run_mde("embed", "a.wav", "-m", tiny_model, "-o", "taken/sub", cwd=tmp_path, home=mde_home)
    assert stderr_lines(proc) == ["mde: error: cannot write outputs to taken/sub: taken is a file, not a folder"]
    with pytest.raises(MdeError, match="it is a file"):  # the Python API checks before loading the model
        embed_files(tmp_path / "missing.onnx", [tmp_path / "a.wav"], tmp_path / "taken")


def test_a_read_only_output_folder_is_one_line_before_the_model(tiny_model, mde_home, tmp_path):
    write_tone(tmp_path / "a.wav", 1.0)
    with read_only_folder(tmp_path / "ro") as folder:
        proc = run_mde("embed", "a.wav", "-m", tiny_model, "-o", folder / "out", cwd=tmp_path, home=mde_home)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        [line] = stderr_lines(proc)
        assert line.startswith(f"mde: error: cannot write outputs to {folder / 'out'}: ")
        assert line.endswith(("Read-only file system", "Permission denied"))
        with pytest.raises(MdeError, match="cannot write outputs"):
            embed_files(tmp_path / "missing.onnx", [tmp_path / "a.wav"], folder)


# 3. a write error fails one file; the batch goes on -------------------------------------------------


@pytest.mark.parametrize("limit", ["file size (ulimit -f)", "full disk (tmpfs)"])
def test_a_write_error_fails_that_file_and_the_batch_goes_on(limit, tiny_model, mde_home, tmp_path):
    (tmp_path / "in").mkdir()
    write_tone(tmp_path / "in" / "a_big.wav", 30.0)  # ~230 KB of output at --hop 0.01
    write_tone(tmp_path / "in" / "b_small.wav", 0.5)  # ~3 KB
    cap = 64 * 1024

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as Python does itself: write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    def run(out):
        return run_mde("embed", "in", "-m", tiny_model, "--hop", "0.01", "-o", out, cwd=tmp_path, home=mde_home,
                       preexec_fn=limit_file_size if limit.startswith("file size") else None)

    if limit.startswith("file size"):
        out, proc, reason = tmp_path / "out", None, "File too large"
        proc = run(out)
    else:
        with tmpfs(tmp_path / "small-disk", f"size={cap}") as disk:
            out, reason = disk / "out", "No space left on device"
            proc = run(out)
            written = sorted(p.name for p in out.iterdir())
            assert written == ["b_small.npz"] and parts_in(disk) == []
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = stderr_lines(proc)
    assert f"failed: in/a_big.wav: cannot write {out / 'a_big.npz'}: {reason}" in lines
    assert lines[-1].startswith("1 embedded, 0 skipped (up to date), 0 too short, 1 failed in ")
    if limit.startswith("file size"):
        assert sorted(p.name for p in out.iterdir()) == ["b_small.npz"]


def test_a_folder_where_an_output_should_go_fails_that_file(tiny_path, tmp_path):
    sources = [write_tone(tmp_path / f"{n}.wav", 1.0) for n in ("a", "b")]
    (tmp_path / "out" / "a.npz").mkdir(parents=True)
    report = embed_files(tiny_path, sources, tmp_path / "out")
    assert [o.status for o in report.outcomes] == ["failed", "done"]
    blocked = tmp_path / "out" / "a.npz"
    assert report.outcomes[0].message == f"{blocked} is a folder; remove it or choose another output folder"
    assert (tmp_path / "out" / "a.npz").is_dir()


# 4. a failure names the file once, on one line -----------------------------------------------------


def test_each_failure_is_one_unwrapped_line_and_the_summary_counts(tiny_model, mde_home, tmp_path):
    folder = tmp_path / "in" / ("a-folder-with-a-rather-long-name-" * 3)
    folder.mkdir(parents=True)
    write_tone(folder / "good.wav", 1.0)
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    (tmp_path / "out" / "blocked.npz").mkdir(parents=True)
    blocked = write_tone(folder / "blocked.wav", 1.0)
    proc = run_mde("embed", "in", "-m", tiny_model, "-o", "out", cwd=tmp_path, home=mde_home)
    assert proc.returncode == 1
    rel = lambda p: p.relative_to(tmp_path)  # noqa: E731
    assert stderr_lines(proc) == [
        f"failed: {rel(blocked)}: out/blocked.npz is a folder; remove it or choose another output folder",
        f"failed: {rel(empty)}: the file is empty (0 bytes)",
        stderr_lines(proc)[-1],
    ]
    assert proc.stderr.count("empty.wav") == 1
    assert stderr_lines(proc)[-1].startswith("1 embedded, 0 skipped (up to date), 0 too short, 2 failed in ")

    tagged = run_mde("tag", rel(empty), rel(folder / "good.wav"), "-m", tiny_model, cwd=tmp_path, home=mde_home)
    assert tagged.returncode == 1
    assert stderr_lines(tagged) == [f"failed: {rel(empty)}: the file is empty (0 bytes)"]


# 5. outputs record their settings; a resumed batch reuses only up-to-date ones -----------------------


@pytest.mark.parametrize("fmt", ["npz", "parquet", "jsonl"])
def test_every_output_records_its_settings_and_time_is_timestamp(fmt, tiny_path, tmp_path):
    source = write_tone(tmp_path / "a.wav", 1.2)
    embed_files(tiny_path, [source], tmp_path, EmbedSettings(fmt=fmt, hop=0.25))
    target = tmp_path / f"a.{fmt}"
    expected = {"model_sha256": hashlib.sha256(tiny_path.read_bytes()).hexdigest(), "layer": "embedding",
                "window": 0.5, "hop": 0.25, "pad": True, "sample_rate": 8000, "format_version": 2}
    if fmt == "npz":
        data = np.load(target)
        stored = {key: data[key].item() for key in expected}
        times = list(data["timestamp"])
    elif fmt == "parquet":
        table = pq.read_table(target)
        stored = {key: json.loads(table.schema.metadata[f"mde.{key}".encode()]) for key in expected}
        times = table["timestamp"].to_pylist()
    else:
        header, *rows = map(json.loads, target.read_text().splitlines())
        stored = {key: header["mde"][key] for key in expected}
        times = [row["timestamp"] for row in rows]
    assert stored == expected
    assert times == [0.0, 0.25, 0.5]


@pytest.mark.parametrize("fmt", ["npz", "jsonl"])
def test_resume_skips_only_up_to_date_outputs(fmt, tiny_path, mde_home, tmp_path):
    source = write_tone(tmp_path / "a.wav", 1.0)
    out, target = tmp_path / "out", tmp_path / "out" / f"a.{fmt}"

    def run(**changes):
        model = changes.pop("model", tiny_path)
        [outcome] = embed_files(model, [source], out, EmbedSettings(fmt=fmt, **changes)).outcomes
        return outcome.status, outcome.message

    assert run() == ("done", "")
    first = target.read_bytes()
    assert run() == ("skipped", "up to date")
    other_hop = f"the existing {target} was made with other settings (hop 0.5 s, now 0.25 s): recomputed"
    assert run(hop=0.25) == ("done", other_hop)
    status, note = run(hop=0.25, layer="tags")
    assert status == "done" and "(layer embedding, now tags)" in note
    store.save(build_tiny_model("tiny2"), "tiny2")
    status, note = run(hop=0.25, layer="tags", model=store.resolve("tiny2"))
    assert status == "done" and "model_sha256 " in note
    target.write_bytes(b"")
    assert run() == ("done", f"the existing {target} is empty (0 bytes): recomputed")
    assert target.read_bytes() == first
    target.write_bytes(first[: len(first) // 2])
    status, note = run()
    assert status == "done" and note.startswith(f"the existing {target} is unreadable (")
    if fmt == "npz":
        np.savez(target, embedding=np.zeros((2, 16)), timestamps=np.zeros(2))  # an output of mde before settings
        assert run() == ("done", f"the existing {target} was made by another version of mde: recomputed")
    assert target.read_bytes() == first and run() == ("skipped", "up to date")


# 6. stale parts of a killed write are removed by the next run ---------------------------------------


def test_a_rerun_removes_stale_parts_of_its_outputs(tiny_path, tmp_path):
    source = write_tone(tmp_path / "a.wav", 1.0)
    out = tmp_path / "out"
    out.mkdir()
    stale = [".a.npz.3f9a01bc.part", ".a.npz.k2j_x9qz.part"]  # ours, and one named by tempfile.mkstemp
    for name in [*stale, ".other.npz.3f9a01bc.part"]:
        (out / name).write_bytes(b"half an output")
    embed_files(tiny_path, [source], out)
    assert sorted(p.name for p in out.iterdir()) == [".other.npz.3f9a01bc.part", "a.npz"]


# 7, 8. killed and interrupted batches ---------------------------------------------------------------


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize("signum, workers, threads", [
    (signal.SIGINT, 1, 1), (signal.SIGINT, 1, 2), (signal.SIGTERM, 2, 1), (signal.SIGKILL, 2, 1),
])
def test_a_stopped_batch_leaves_no_process_and_says_how_to_resume(signum, workers, threads, tiny_model, mde_home,
                                                                  tmp_path):
    """Ctrl-C, SIGTERM or SIGKILL mid-batch: one process on one thread, one process embedding two files at a
    time on two threads, or two worker processes."""
    (tmp_path / "in").mkdir()
    total = 12
    for i in range(total):
        write_tone(tmp_path / "in" / f"f{i:02d}.wav", 10.0)  # ~0.15 s each at --hop 0.01
    env = {**os.environ, "MDE_HOME": str(mde_home), "COLUMNS": "200"}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr_file:  # a file, not a pipe: orphaned workers would hold a pipe open
        proc = subprocess.Popen(
            [sys.executable, "-m", "mde", "embed", "in", "-m", tiny_model, "--hop", "0.01", "--workers", str(workers),
             "--threads", str(threads), "-o", "out"],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr_file,
        )
    out = tmp_path / "out"
    deadline = time.monotonic() + 120
    while not (out.is_dir() and len(list(out.glob("*.npz"))) >= 2):  # one file wholly reported, in order
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)
    children = children_of(proc.pid)
    assert len(children) >= (workers + 1 if workers > 1 else 0)  # the workers and the resource tracker
    proc.send_signal(signum)
    proc.wait(timeout=60)
    stderr = log.read_text()
    assert len(list(out.glob("*.npz"))) < total, "the batch ended before the signal: make it longer"
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in children), "a worker or the resource tracker outlived the batch"
    if signum == signal.SIGKILL:
        return
    assert proc.returncode == 128 + signum and "Traceback" not in stderr, stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    match = re.fullmatch(r"interrupted: (\d+) embedded, (\d+) left; re-run the same command to resume", last)
    assert match, stderr
    done, left = map(int, match.groups())
    # outcomes are reported in input order, so with several files in flight (workers, or threads) a finished
    # file may be unreported when the signal comes; one at a time, the second file exists only after the
    # first was counted
    one_at_a_time = workers == 1 and threads == 1
    assert done + left == total and (1 if one_at_a_time else 0) <= done <= len(list(out.glob("*.npz")))
    assert parts_in(out) == []
