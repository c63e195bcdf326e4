"""``mde stream``: buffers, exact framing against the offline extractor, sources, outputs and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
from conftest import MSD_CLIP, MTAT_CLIP, store_at
from test_cli import assert_one_line_error, run_mde

from mde.errors import MdeError
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import MUSICNN, SEED_FCN
from mde.stream.buffers import BlockRing, UnitBuffer
from mde.stream.feeds import MelFeed
from mde.stream.scales import parse_per_scale, parse_scales


def test_block_ring_keeps_order_and_counts_what_it_drops():
    ring = BlockRing(slots=3, block_frames=4, channels=2)
    blocks = [np.full((4, 2), i, np.float32) for i in range(5)]
    pushed = [ring.push(b, float(i)) for i, b in enumerate(blocks)]
    assert pushed == [True, True, True, False, False]
    assert (ring.dropped_blocks, ring.dropped_frames) == (2, 8)
    got = [ring.pop() for _ in range(4)]
    assert [g[1] for g in got[:3]] == [0.0, 1.0, 2.0] and got[3] is None
    assert all(np.all(g[0] == i) for i, g in enumerate(got[:3]))
    assert ring.push(np.ones((2, 2), np.float32), 9.0)  # a short last block keeps its length
    assert ring.pop()[0].shape == (2, 2)


def test_unit_buffer_addresses_units_by_absolute_index_across_growth_and_discards():
    signal = np.arange(10_000, dtype=np.float32)
    buffer = UnitBuffer(capacity=64)
    fed = 0
    for n in (7, 100, 3, 900, 1, 5000, 3989):
        buffer.append(signal[fed : fed + n])
        fed += n
        buffer.discard_before(fed - 150)
        assert np.array_equal(buffer.view(max(0, fed - 150), fed), signal[max(0, fed - 150) : fed])
    with pytest.raises(IndexError):
        buffer.view(0, 10)
    mels = UnitBuffer(rows=3, capacity=2)
    mels.append(np.ones((3, 5), np.float32))
    mels.append(2 * np.ones((3, 4), np.float32))
    assert mels.view(3, 7).tolist() == [[1, 1, 2, 2]] * 3


@pytest.mark.parametrize("config", [
    MUSICNN,
    replace(SEED_FCN, pad_mode="constant"),
    replace(MUSICNN, center=False),
    replace(SEED_FCN, n_fft=1024, hop_length=160),
], ids=["musicnn", "constant-pad", "no-centre", "hop-160"])
@pytest.mark.parametrize("block", [1, 255, 320, 4096])
def test_mel_feed_gives_the_frames_of_one_call_over_the_whole_signal(config, block):
    rng = np.random.default_rng(block)
    x = (rng.standard_normal(16000 * 2 + 77) * 0.1).astype(np.float32)
    whole = MelSpectrogram.from_config(config)(x)
    feed, samples = MelFeed(config), UnitBuffer()
    for first in range(0, len(x), block):
        samples.append(x[first : first + block])
        feed.update(samples, final=False)
        assert feed.frames.end <= whole.shape[1]
    feed.update(samples, final=True)
    assert np.array_equal(feed.frames.view(0, feed.frames.end), whole)


def test_scale_and_hop_options_parse_or_fail_in_one_line():
    assert parse_scales("0.5, 3.7,29") == [0.5, 3.7, 29.0]
    assert parse_per_scale("0.5:0.25,3.7:1", "--hop", numeric=True) == {0.5: 0.25, 3.7: 1.0}
    assert parse_per_scale("2", "--hop", numeric=True) == 2.0
    assert parse_per_scale("0.5:fcn05", "--models", numeric=False) == {0.5: "fcn05"}
    for bad in ("", "a,b", "0.5,0.5", "-1"):
        with pytest.raises(MdeError):
            parse_scales(bad)
    for bad in ("0.5:", "x:1", "0.5:-2", "0.5:abc"):
        with pytest.raises(MdeError):
            parse_per_scale(bad, "--hop", numeric=True)


def test_streaming_a_file_as_fast_as_possible_gives_the_frames_of_embed(musicnn_home, shared_data):
    from mde.runtime.extractor import load_model
    from mde.stream import load_scales, stream_file

    clip = shared_data / MSD_CLIP
    hops = {0.5: 0.25, 3.7: 1.0, 29.0: 0.5}
    with store_at(musicnn_home):
        scales = load_scales([0.5, 3.7, 29.0], models="MTT_musicnn", hops=hops)
        arrays, summary = stream_file(clip, scales)
        model = load_model("MTT_musicnn", threads=1)
    assert summary.dropped_frames == 0 and summary.dropped_audio_seconds == 0
    for window, hop in hops.items():
        expected = model.embed(clip, window=window, hop=hop)
        got = arrays[window]
        assert np.array_equal(got.timestamps, expected.timestamps)  # same starts, bit for bit
        np.testing.assert_allclose(got.embedding, expected.embedding, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.tags, expected.tags, rtol=0, atol=1e-5)
        assert got.tag_names == expected.tag_names


def test_a_clip_shorter_than_a_window_streams_the_padded_frame_of_embed(musicnn_home, tmp_path):
    from conftest import write_tone

    from mde.runtime.extractor import load_model
    from mde.stream import load_scales, stream_file

    clip = write_tone(tmp_path / "short.wav", seconds=2.0, rate=16000)  # shorter than 3.7 s, longer than 0.5 s
    with store_at(musicnn_home):
        scales = load_scales([0.5, 3.7], models="MTT_musicnn", hops={0.5: 0.5, 3.7: 1.0})
        arrays, summary = stream_file(clip, scales)
        model = load_model("MTT_musicnn", threads=1)
    assert [s.padded for s in summary.scales] == [False, True]
    for window, hop in ((0.5, 0.5), (3.7, 1.0)):
        expected = model.embed(clip, window=window, hop=hop)
        assert expected.padded == (window == 3.7)
        assert np.array_equal(arrays[window].timestamps, expected.timestamps)
        np.testing.assert_allclose(arrays[window].embedding, expected.embedding, rtol=0, atol=1e-5)


def test_streaming_an_audio_window_model_gives_the_frames_of_embed(seed_models, shared_data):
    from mde.runtime.extractor import load_model
    from mde.stream import load_scales, stream_file

    clip = shared_data / MTAT_CLIP
    scales = load_scales([0.5], models=str(seed_models["fcn05"]), hops=0.3)
    arrays, _ = stream_file(clip, scales)
    expected = load_model(seed_models["fcn05"], threads=1).embed(clip, hop=0.3)
    assert np.array_equal(arrays[0.5].timestamps, expected.timestamps)
    np.testing.assert_allclose(arrays[0.5].embedding, expected.embedding, rtol=0, atol=1e-5)
    with pytest.raises(MdeError, match=r"fixed 0\.5 s window"):
        load_scales([29.0], models=str(seed_models["fcn05"]))


def test_stream_command_writes_jsonl_npz_and_parquet_that_agree(musicnn_home, shared_data, tmp_path):
    clip = shared_data / MTAT_CLIP
    args = ["stream", "--file", clip, "--as-fast-as-possible", "--scales", "0.5,3.7", "--hop", "0.5:0.5,3.7:2",
            "--jsonl", tmp_path / "f.jsonl", "--top-k", "3", "--no-view"]
    proc = run_mde(*args, "--out", tmp_path / "f.npz", cwd=tmp_path, home=musicnn_home)
    assert proc.returncode == 0, proc.stderr
    assert "0 dropped" in proc.stderr and "latency p50" in proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert {tuple(sorted(r)) for r in rows} == {("embedding", "latency_ms", "model", "scale", "timestamp", "top_tags")}
    assert all(len(r["top_tags"]) == 3 and r["model"] == "MTT_musicnn" for r in rows)
    saved = np.load(tmp_path / "f.npz")
    for scale, label in ((0.5, "0.5s"), (3.7, "3.7s")):
        mine = sorted((r for r in rows if r["scale"] == scale), key=lambda r: r["timestamp"])
        assert np.allclose(saved[f"{label}/timestamp"], [r["timestamp"] for r in mine])
        assert np.allclose(saved[f"{label}/embedding"], [r["embedding"] for r in mine], atol=1e-6)
        top = saved[f"{label}/tag_names"][np.argmax(saved[f"{label}/tags"], axis=1)]
        assert list(top) == [r["top_tags"][0][0] for r in mine]
    assert len(saved["3.7s/timestamp"]) == int((29.1 - 3.7) // 2) + 1  # a 29.1 s clip, 3.7 s windows every 2 s

    proc = run_mde(*args, "--out", tmp_path / "f.parquet", cwd=tmp_path, home=musicnn_home)
    assert proc.returncode == 0, proc.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "f.parquet")
    assert table.num_rows == len(rows)
    assert set(table.column("scale").to_pylist()) == {0.5, 3.7}
    assert "MTT_musicnn" in json.loads(table.schema.metadata[b"mde.tag_names"])


def test_a_file_paced_at_real_time_takes_real_time_and_reports_latency(musicnn_home, tmp_path):
    from conftest import write_tone

    from mde.stream import FileSource, load_scales, stream
    from mde.stream.outputs import FrameCollector

    tone = write_tone(tmp_path / "tone.wav", seconds=2.0, rate=16000)
    with store_at(musicnn_home):
        scales = load_scales([0.5], models="MTT_musicnn")
    collector = FrameCollector()
    started = time.monotonic()
    summary = stream(FileSource(str(tone), realtime=True), scales, [collector])
    elapsed = time.monotonic() - started
    assert elapsed >= 1.9  # delivered at the pace it would have been captured
    assert summary.scales[0].frames == 4 and summary.dropped_frames == 0
    # A frame's latency runs from the arrival of its last sample, which the pacing holds back until more
    # than `timestamp + window / 2` s after the start, to its emission, before the stream ended. Bounds
    # from the stream's own clock hold however busy the machine is; a fixed bound in ms would not.
    latencies = []
    for frame in collector.snapshot()[0.5]:
        assert 0 < frame.latency_ms < (elapsed - frame.timestamp - frame.scale / 2) * 1e3, frame.timestamp
        latencies.append(frame.latency_ms)
    assert summary.scales[0].latency_p50_ms == pytest.approx(np.median(latencies))
    assert summary.scales[0].latency_max_ms == pytest.approx(max(latencies))


def test_stdin_s16le_frames_equal_embedding_the_same_samples(musicnn_home, tmp_path):
    from mde.runtime.extractor import load_model

    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal((16000 * 4, 2)) * 3000).astype("<i2")
    proc = subprocess.run(
        [sys.executable, "-m", "mde", "stream", "--stdin", "--rate", "16000", "--channels", "2", "--format",
         "s16le", "--scales", "3", "--hop", "1", "--jsonl", "-", "--no-view"],
        input=pcm.tobytes(), capture_output=True, cwd=tmp_path, timeout=300,
        env={**__import__("os").environ, "MDE_HOME": str(musicnn_home)},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    rows = sorted((json.loads(line) for line in proc.stdout.decode().splitlines()), key=lambda r: r["timestamp"])
    samples = (pcm.astype(np.float32) / 32768.0).mean(axis=1, dtype=np.float32)
    with store_at(musicnn_home):
        expected = load_model("MTT_musicnn", threads=1).embed(samples, sr=16000, window=3, hop=1)
    assert [r["timestamp"] for r in rows] == pytest.approx(expected.timestamps.tolist())
    np.testing.assert_allclose([r["embedding"] for r in rows], expected.embedding, atol=1e-5)


def test_a_live_worker_that_falls_behind_drops_its_oldest_frames_and_counts_them(tiny_model):
    from mde.runtime.extractor import load_model
    from mde.stream.engine import LIVE_PENDING_FRAMES, ScaleWorker
    from mde.stream.feeds import ReadyFrame
    from mde.stream.scales import Scale, scale_grid

    model = load_model(tiny_model)
    grid = scale_grid(model, model.info.window_seconds, None)
    emitted = []
    worker = ScaleWorker(Scale(model.info.window_seconds, model, grid, [model.info.embedding_output]),
                         emitted.append, live=True, nice=0)
    window = np.zeros(grid.length, np.float32)
    for start in range(10):  # the worker is not started yet: nothing is computed meanwhile
        worker.submit(ReadyFrame(0, start * grid.step, window), time.monotonic())
    assert worker.state.dropped == 10 - LIVE_PENDING_FRAMES
    worker.start()
    worker.close()
    assert [f.timestamp for f in emitted] == pytest.approx(
        [s * grid.step * grid.unit_seconds for s in range(10 - LIVE_PENDING_FRAMES, 10)]
    )
    assert worker.summary().dropped == 10 - LIVE_PENDING_FRAMES


@pytest.mark.parametrize("args, fragment", [
    ([], "choose one input"),
    (["--mic", "--file", "x.wav"], "choose one input"),
    (["--stdin"], "--rate"),
    (["--file", "missing.wav"], "no such file"),
    (["--stdin", "--rate", "16000", "--as-fast-as-possible"], "--file only"),
    (["--stdin", "--rate", "16000", "--format", "u8"], "--format"),
    (["--stdin", "--rate", "16000", "--scales", "0.5,x"], "--scales"),
    (["--stdin", "--rate", "16000", "--hop", "7:1"], "not streamed"),
    (["--file", "x.wav", "--input-device", "1"], "--mic only"),
    (["--stdin", "--rate", "16000", "--out", "frames.csv"], "--out must end in"),
    (["--stdin", "--rate", "16000", "--models", "no_such_model"], "no_such_model"),
])
def test_bad_stream_requests_fail_in_one_line(args, fragment, tmp_path, musicnn_home):
    proc = run_mde("stream", *args, cwd=tmp_path, home=musicnn_home)
    assert_one_line_error(proc, fragment)


def test_the_array_file_is_flushed_while_streaming_and_complete_at_the_end(musicnn_home, tmp_path):
    import threading

    from conftest import write_tone

    from mde.stream import FileSource, load_scales, stream
    from mde.stream.outputs import ArraySink

    tone = write_tone(tmp_path / "tone.wav", seconds=3.0, rate=16000)
    with store_at(musicnn_home):
        scales = load_scales([0.5], models="MTT_musicnn")
    sink = ArraySink(tmp_path / "live.npz", flush_seconds=0.3)
    runner = threading.Thread(target=stream, args=(FileSource(str(tone), realtime=True), scales, [sink]))
    runner.start()
    # The first flush with a frame, whenever a busy machine gets to it: the paced stream lasts 3 s, and
    # its last frame's audio arrives 2.5 s after the first's.
    while not (tmp_path / "live.npz").exists() and runner.is_alive():
        time.sleep(0.02)
    partial = len(np.load(tmp_path / "live.npz")["0.5s/timestamp"])  # written before the stream ended
    runner.join()
    final = np.load(tmp_path / "live.npz")
    assert 1 <= partial < len(final["0.5s/timestamp"]) == 6
    assert not list(tmp_path.glob(".live.npz.*"))  # no temporary files left behind


def test_ctrl_c_ends_the_stream_cleanly_with_a_summary_and_the_outputs(tiny_model, mde_home, tmp_path):
    import os
    import signal

    from conftest import write_tone

    tone = write_tone(tmp_path / "tone.wav", seconds=20.0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mde", "stream", "--file", str(tone), "--scales", "0.5", "--models", tiny_model,
         "--jsonl", "-", "--out", str(tmp_path / "cut.npz"), "--no-view"],
        cwd=tmp_path, env={**os.environ, "MDE_HOME": str(mde_home)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    first = proc.stdout.readline()  # SIGINT only once the stream has demonstrably started: a frame is out
    assert json.loads(first)["timestamp"] == 0.0
    proc.send_signal(signal.SIGINT)
    rest, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr  # as an interrupted embed
    assert "interrupted:" in stderr and "Traceback" not in stderr  # other stderr lines are not this test's
    t = np.load(tmp_path / "cut.npz")["0.5s/timestamp"]
    assert 1 <= len(t) < 40 and np.all(np.diff(t) > 0)
    assert len(t) == 1 + len(rest.splitlines())  # every frame shown is in the file


def test_the_live_view_shows_the_newest_frame_and_count_per_scale():
    import io

    from rich.console import Console

    from mde.stream.engine import StreamFrame
    from mde.stream.live import LiveView

    console = Console(file=io.StringIO(), width=160, force_terminal=False)
    view = LiveView(console, [0.5, 29.0], top_k=2)
    for t, tags in ((0.0, [0.1, 0.9, 0.5]), (0.5, [0.8, 0.1, 0.3])):
        view.add(StreamFrame(t, 0.5, "m", 4.2, np.zeros(3, np.float32), np.array(tags, np.float32), ("a", "b", "c")))
    console.print(view._table())
    text = console.file.getvalue()
    assert "a 0.80, c 0.30" in text and "b 0.90" not in text  # the newest frame's top 2
    assert "waiting for the first window" in text  # 29 s has no frame yet
    assert "0.50" in text and " 2 " in text


def test_streaming_imports_no_torch(musicnn_home, tmp_path):
    import os

    from conftest import write_tone

    tone = write_tone(tmp_path / "tone.wav", seconds=1.0, rate=16000)
    code = ("import sys; from mde.stream import load_scales, stream_file; "
            f"arrays, _ = stream_file({str(tone)!r}, load_scales([0.5], models='MTT_musicnn')); "
            "print(len(arrays[0.5].timestamps), 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "MDE_HOME": str(musicnn_home)})
    assert proc.stdout.split() == ["2", "False"], proc.stderr
