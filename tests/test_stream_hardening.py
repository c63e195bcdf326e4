"""``mde stream`` on bad paths: unwritable outputs, no capture device, a closed pipe, inputs
shorter than a window and absurd option values all end in one line (or quietly), never a traceback.

Every test here runs on the tiny model (an 8 kHz audio-window model with a fixed 0.5 s window) and a
synthesized tone, so none needs torch or the shared data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tmpfs, write_tone
from test_cli import assert_one_line_error, run_mde

TINY = ["--scales", "0.5", "--models", "tiny", "--no-view"]


def _mde(*args: object, home: Path, cwd: Path, env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "MDE_HOME": str(home), "COLUMNS": "200", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "mde", *map(str, args)], cwd=cwd, env=env, text=True, **kwargs)


@pytest.fixture
def read_only_mount(tmp_path):
    """A read-only tmpfs (root ignores permission bits, so chmod cannot make a folder unwritable)."""
    with tmpfs(tmp_path / "ro", "ro,size=1m") as mount:
        yield mount


def test_out_under_a_regular_file_fails_before_streaming_in_one_line(tiny_model, mde_home, tmp_path):
    tone = write_tone(tmp_path / "tone.wav", seconds=1.0)
    proc = run_mde("stream", "--file", tone, "--as-fast-as-possible", *TINY, "--out", tone / "frames.npz",
                   cwd=tmp_path, home=mde_home)
    assert_one_line_error(proc, "--out", "is not a folder")  # one line: nothing was streamed


def test_out_on_a_read_only_mount_fails_before_streaming_in_one_line(tiny_model, mde_home, tmp_path,
                                                                     read_only_mount):
    tone = write_tone(tmp_path / "tone.wav", seconds=1.0)
    for option, target in (("--out", "frames.npz"), ("--jsonl", "frames.jsonl")):
        proc = run_mde("stream", "--file", tone, "--as-fast-as-possible", *TINY, option, read_only_mount / target,
                       cwd=tmp_path, home=mde_home)
        assert_one_line_error(proc, option, "Read-only file system")


def test_a_write_that_fails_later_keeps_the_frames_in_the_temporary_folder(tmp_path, monkeypatch):
    import tempfile

    from mde.stream.engine import StreamFrame
    from mde.stream.outputs import ArraySink

    thread_errors: list = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    folder = tmp_path / "out"
    folder.mkdir()
    warnings: list[str] = []
    sink = ArraySink(folder / "frames.npz", flush_seconds=0.05, warn=warnings.append)
    for i in range(3):
        sink.add(StreamFrame(0.5 * i, 0.5, "m", 1.0, np.full(4, i, np.float32), None, ()))
    folder.rmdir()
    folder.write_text("now a file: every write below it fails")
    time.sleep(0.3)  # several periodic flushes fail meanwhile
    sink.close(summary=None)  # type: ignore[arg-type]
    assert thread_errors == []  # no "Exception in thread mde-stream-flush"
    assert isinstance(sink.write_error, OSError) and len(warnings) == 1 and "frames.npz" in warnings[0]
    assert sink.kept_in is not None and sink.kept_in.parent == tmp_path / "tmp" and sink.kept_in.suffix == ".npz"
    assert np.load(sink.kept_in)["0.5s/timestamp"].tolist() == [0.0, 0.5, 1.0]


def test_an_out_folder_turning_read_only_mid_stream_keeps_the_frames_and_says_where(tiny_model, mde_home, tmp_path):
    with tmpfs(tmp_path / "rw", "size=1m") as mount:
        tone = write_tone(tmp_path / "tone.wav", seconds=2.0)
        proc = _mde("stream", "--file", tone, *TINY, "--jsonl", "-", "--out", mount / "live.npz", "--flush-every",
                    "0.2", home=mde_home, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env_extra={"TMPDIR": str(tmp_path)})
        proc.stdout.readline()  # streaming: the folder was writable at the start
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        frames, stderr = proc.communicate(timeout=60)
    lines = stderr.splitlines()
    assert proc.returncode == 1 and "Traceback" not in stderr and "Exception in thread" not in stderr, stderr
    assert lines[-1].startswith(f"mde: error: cannot write {mount / 'live.npz'} (Read-only file system); "
                                f"the frames are kept in {tmp_path}/mde-stream-live-"), stderr
    kept = Path(lines[-1].rsplit(" ", 1)[1])
    assert len(np.load(kept)["0.5s/timestamp"]) == 4 == 1 + len(frames.splitlines())


def test_a_mic_without_any_capture_device_says_how_to_get_one(mde_home, tmp_path, monkeypatch):
    pytest.importorskip("sounddevice", exc_type=ImportError)
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-such-server")  # no PulseAudio; ALSA finds no card
    listed = run_mde("stream", "--list-devices", cwd=tmp_path, home=mde_home)
    if listed.returncode == 0 and listed.stdout.strip():
        pytest.skip("this machine has a capture device")
    assert_one_line_error(listed, "no audio capture device found", "PulseAudio null sink", "Headless capture")
    mic = run_mde("stream", "--mic", "--no-view", cwd=tmp_path, home=mde_home)
    assert_one_line_error(mic, "no audio capture device found", "README: Streaming > Headless capture")


def test_device_means_cpu_or_cuda_and_the_microphone_is_the_input_device(tmp_path, mde_home):
    proc = run_mde("stream", "--stdin", "--rate", "16000", "--device", "mic1", cwd=tmp_path, home=mde_home)
    assert_one_line_error(proc, "'mic1'", "cpu, cuda")
    proc = run_mde("stream", "--file", "x.wav", "--input-device", "1", cwd=tmp_path, home=mde_home)
    assert_one_line_error(proc, "--input-device", "--mic only")
    help_text = run_mde("stream", "--help", cwd=tmp_path, home=mde_home).stdout
    assert "--input-device" in help_text and "--compute" not in help_text


def test_a_reader_closing_the_pipe_ends_the_stream_quietly(tiny_model, mde_home, tmp_path):
    tone = write_tone(tmp_path / "tone.wav", seconds=20.0)  # 2000 frames: far more than a pipe buffers
    proc = _mde("stream", "--file", tone, "--as-fast-as-possible", *TINY, "--hop", "0.01", "--jsonl", "-",
                home=mde_home, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-n", "1"], stdin=proc.stdout, stdout=subprocess.PIPE, text=True)
    proc.stdout.close()  # head alone reads the pipe
    shown, _ = head.communicate(timeout=60)
    stderr = proc.communicate(timeout=60)[1]
    assert json.loads(shown)["timestamp"] == 0.0
    assert proc.returncode == 0, stderr
    assert "Broken pipe" not in stderr and "Traceback" not in stderr and "Exception" not in stderr
    assert "audio dropped 0.00 s" in stderr  # stopping is not dropping


def test_an_input_shorter_than_a_window_is_zero_padded_to_one_as_embed_does(tiny_model, mde_home, tmp_path):
    from mde.runtime.extractor import load_model

    short = write_tone(tmp_path / "short.wav", seconds=0.3)
    proc = run_mde("stream", "--file", short, "--as-fast-as-possible", *TINY, "--jsonl", "-", cwd=tmp_path,
                   home=mde_home)
    assert proc.returncode == 0, proc.stderr
    assert ("note: 0.5s: the input ended after 0.30 s, shorter than one 0.5 s window: zero-padded to one window"
            in proc.stderr)
    assert "0.5 s (tiny, hop 0.5 s): 1 frame, 0 dropped, latency p50" in proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    expected = load_model(tiny_model).embed(short)
    assert expected.padded and [r["timestamp"] for r in rows] == expected.timestamps.tolist() == [0.0]
    np.testing.assert_allclose([r["embedding"] for r in rows], expected.embedding, rtol=0, atol=1e-5)


def test_an_empty_input_reports_no_frames_rather_than_a_zero_latency(tiny_model, mde_home, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mde", "stream", "--stdin", "--rate", "8000", *TINY],
                          input=b"", capture_output=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "MDE_HOME": str(mde_home), "COLUMNS": "200"})
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "note: 0.5s: the input ended after 0.00 s, shorter than one 0.5 s window: no frames" in stderr
    assert "0.5 s (tiny, hop 0.5 s): no frames, 0 dropped" in stderr and "latency p50" not in stderr


@pytest.mark.parametrize("args, fragments", [
    (["--stdin", "--rate", "1e12"], ["--rate", "8000 to 384000", "1e+12"]),
    (["--stdin", "--rate", "nan"], ["--rate", "nan"]),
    (["--mic", "--capture-rate", "inf"], ["--capture-rate", "inf"]),
    (["--stdin", "--rate", "16000", "--channels", "100000"], ["--channels", "1 to 64", "100000"]),
    (["--stdin", "--rate", "16000", "--scales", "1e9"], ["--scales", "at most 600 s"]),
    (["--stdin", "--rate", "16000", "--scales", "inf"], ["--scales"]),
    (["--stdin", "--rate", "16000", "--hop", "inf"], ["--hop", "finite"]),
    (["--stdin", "--rate", "16000", "--hop", "0.5:1e400"], ["--hop", "finite"]),
    (["--stdin", "--rate", "16000", "--flush-every", "1e300"], ["--flush-every", "0.1 to 3600"]),
    (["--stdin", "--rate", "16000", "--flush-every", "nan"], ["--flush-every"]),
    (["--stdin", "--rate", "16000", "--duration", "inf"], ["--duration", "finite"]),
    (["--stdin", "--rate", "16000", "--duration", "nan"], ["--duration"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("--") else None)
def test_absurd_option_values_fail_in_one_line(args, fragments, tmp_path, mde_home):
    assert_one_line_error(run_mde("stream", *args, "--no-view", cwd=tmp_path, home=mde_home), *fragments)


def test_every_output_names_the_time_column_timestamp(tiny_model, mde_home, tmp_path):
    import pyarrow.parquet as pq

    tone = write_tone(tmp_path / "tone.wav", seconds=1.5)
    for out in ("f.npz", "f.parquet"):
        proc = run_mde("stream", "--file", tone, "--as-fast-as-possible", *TINY, "--jsonl", "f.jsonl",
                       "--out", out, cwd=tmp_path, home=mde_home)
        assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert [r["timestamp"] for r in rows] == [0.0, 0.5, 1.0] and all("t" not in r for r in rows)
    assert np.load(tmp_path / "f.npz")["0.5s/timestamp"].tolist() == [0.0, 0.5, 1.0]
    assert pq.read_table(tmp_path / "f.parquet").column("timestamp").to_pylist() == [0.0, 0.5, 1.0]
