"""The local batch's threads: several files at once in one process, with one shared model."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import write_tone

from mde.runtime import store
from mde.runtime.batch import EmbedSettings, embed_files, files_at_once
from mde.runtime.workers import AHEAD_PER_THREAD, thread_map


def test_thread_map_runs_jobs_at_once_and_yields_them_in_order():
    barrier = threading.Barrier(2, timeout=10)  # passes only if two jobs run at the same time

    def job(i: int) -> int:
        if i < 2:
            barrier.wait()
        time.sleep(0.001 * (7 - i))  # later jobs finish first
        return i * i

    assert list(thread_map(job, range(8), 2)) == [i * i for i in range(8)]


def test_thread_map_keeps_a_bounded_number_of_jobs_ahead():
    started: list[int] = []

    def job(i: int) -> int:
        started.append(i)
        return i

    results = thread_map(job, range(100), 3)
    assert next(results) == 0
    time.sleep(0.05)
    assert len(started) <= AHEAD_PER_THREAD * 3 + 1  # not the whole batch
    assert list(results) == list(range(1, 100))


def test_thread_map_raises_a_jobs_error_in_order_and_stops_early():
    started: list[int] = []

    def job(i: int) -> int:
        started.append(i)
        if i == 3:
            raise ValueError("job 3")
        return i

    seen = []
    with pytest.raises(ValueError, match="job 3"):
        for value in thread_map(job, range(1000), 2):
            seen.append(value)
    assert seen == [0, 1, 2]
    assert len(started) < 20  # the jobs not started were dropped


def test_files_at_once_is_one_per_thread_and_never_more_than_the_files():
    assert files_at_once(2, 100) == 2 and files_at_once(4, 3) == 3 and files_at_once(8, 1) == 1
    assert files_at_once(1, 100) == 1


def test_two_threads_write_what_one_writes(tiny_model, tmp_path):
    (tmp_path / "in").mkdir()
    sources = [write_tone(tmp_path / "in" / f"t{i}.wav", seconds=0.6 + 0.3 * i, freq=200.0 + 90 * i)
               for i in range(7)]
    broken = tmp_path / "in" / "broken.wav"
    broken.write_bytes(b"RIFF no")
    sources.insert(3, broken)
    model = store.resolve(tiny_model)
    one = embed_files(model, sources, tmp_path / "one", EmbedSettings(), threads=1)
    two = embed_files(model, sources, tmp_path / "two", EmbedSettings(), threads=2)
    assert [(o.source, o.status) for o in one.outcomes] == [(o.source, o.status) for o in two.outcomes]
    assert [o.status for o in two.outcomes].count("failed") == 1 and two.outcomes[3].status == "failed"
    for source in sources:
        if source != broken:
            left, right = (np.load(tmp_path / run / f"{source.stem}.npz") for run in ("one", "two"))
            for key in left.files:
                assert np.array_equal(left[key], right[key]), (source.name, key)
    assert not [p for p in (tmp_path / "two").iterdir() if p.suffix != ".npz"]


def _concurrency(weights: list[int], budget: int, threads: int = 3) -> int:
    """The most jobs that ran at once when jobs of ``weights`` went through thread_map with ``budget``."""
    running, most = [0], [0]
    lock = threading.Lock()

    def job(weight: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return weight

    assert list(thread_map(job, weights, threads, weigh=lambda w: w, budget=budget)) == weights
    return most[0]


def test_thread_map_keeps_the_weight_out_within_the_budget():
    assert _concurrency([3] * 9, budget=9) == 3  # light jobs: all threads busy
    assert _concurrency([5] * 6, budget=8) == 1  # two would exceed the budget: one at a time
    assert _concurrency([100, 1, 1, 1], budget=8) >= 1  # heavier than the budget alone: it still runs
    assert _concurrency([4, 4, 4, 4], budget=0) == 3  # no budget: no limit


def test_decoded_bytes_is_read_from_the_header(tmp_path):
    from mde.audio import COMPRESSED_RATIO, decoded_bytes

    wav = write_tone(tmp_path / "a.wav", seconds=1.0)  # 8000 frames, mono
    assert decoded_bytes(wav) == 8000 * 1 * 4
    other = tmp_path / "b.m4a"
    other.write_bytes(b"x" * 1000)
    assert decoded_bytes(other) == 1000 * COMPRESSED_RATIO
    assert decoded_bytes(tmp_path / "missing.wav") == 0
