"""The streaming engine: one dispatcher cutting frames, one worker thread per scale computing them.

The dispatcher (the calling thread) takes blocks from the source's ring, feeds every model rate and
channel count (:mod:`mde.stream.feeds`: mixed to mono, or kept stereo for stereo waveform models) and
hands each completed frame to its scale's worker with the time its last sample arrived. Each worker
batches whatever is pending, runs the model and emits :class:`StreamFrame` objects to the sinks;
latency is the time from the arrival of a frame's last sample to its emission. Workers of longer
scales run at a lower scheduling priority (a higher nice value), so a 29 s frame never holds up a
0.5 s one on a busy core. With a live source a worker that falls behind drops its oldest pending frame
and counts it; otherwise the dispatcher waits for it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Optional, Protocol

import numpy as np

from mde.errors import MdeError
from mde.runtime.extractor import frames_per_call
from mde.runtime.inputs import model_inputs
from mde.stream.buffers import BlockRing
from mde.stream.feeds import RateFeed, ReadyFrame
from mde.stream.scales import Scale
from mde.stream.sources import AudioSource
from mde.tags import top_tags

RING_SECONDS = 4.0
"""Audio the capture ring holds before a live source starts dropping blocks, in seconds."""
LIVE_PENDING_FRAMES = 4
"""Frames a scale may have waiting with a live source before its oldest is dropped."""
POLL_SECONDS = 0.001
"""How often the dispatcher looks for new blocks, in seconds (the callback never signals: it must not lock)."""
NICE_STEP = 5
"""Nice increment per scale rank: the shortest scale keeps the process's priority."""


@dataclass
class StreamFrame:
    """One emitted frame: its start ``timestamp`` (seconds since the stream began), its scale (window
    seconds), the model, latency in milliseconds, the embedding (float32 vector) and tag probabilities
    (or None)."""

    timestamp: float
    scale: float
    model: str
    latency_ms: float
    embedding: np.ndarray
    tags: Optional[np.ndarray]
    tag_names: tuple[str, ...]

    def top_tags(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable tags of this frame (empty for models without tags)."""
        return [] if self.tags is None else top_tags(self.tags, self.tag_names, k)


class FrameSink(Protocol):
    """Receives frames as they are emitted (from worker threads, one at a time) and the final summary."""

    def add(self, frame: StreamFrame) -> None: ...

    def close(self, summary: StreamSummary) -> None: ...


@dataclass
class ScaleSummary:
    """Per-scale counts and latencies (ms) of a finished stream; the latencies are NaN when it had no frames.
    padded: the input ended before one window and its one frame is the input zero-padded to a window."""

    scale: float
    model: str
    hop_s: float
    frames: int
    dropped: int
    padded: bool
    latency_min_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float


@dataclass
class StreamSummary:
    """What a finished stream did: per-scale figures, audio seconds seen and lost, wall and CPU seconds."""

    source: str
    scales: list[ScaleSummary]
    audio_seconds: float
    wall_seconds: float
    cpu_seconds: float
    dropped_audio_seconds: float
    device_overflows: int
    interrupted: bool = False

    @property
    def cpu_load(self) -> float:
        """CPU seconds per wall second (1.0 = one core busy)."""
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def dropped_frames(self) -> int:
        return sum(s.dropped for s in self.scales)


@dataclass
class _Pending:
    frame: ReadyFrame
    arrival: float


@dataclass
class _ScaleState:
    latencies_ms: list[float] = field(default_factory=list)
    dropped: int = 0
    padded: bool = False


class ScaleWorker:
    """Computes one scale's frames on its own thread.

    live: drop the oldest pending frame when more than LIVE_PENDING_FRAMES wait (counted); otherwise
    :meth:`submit` waits. nice: added to the thread's nice value (Linux; ignored where unsupported).
    """

    def __init__(self, scale: Scale, emit: Callable[[StreamFrame], None], live: bool, nice: int) -> None:
        self.scale = scale
        self.state = _ScaleState()
        self.error: Optional[BaseException] = None
        self._emit = emit
        self._live = live
        self._nice = nice
        self._batch = frames_per_call(scale.grid, scale.model.batch_size)
        self._capacity = LIVE_PENDING_FRAMES if live else 2 * self._batch
        self._pending: deque[_Pending] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"mde-stream-{scale.label}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, frame: ReadyFrame, arrival: float) -> None:
        with self._ready:
            if self._live and len(self._pending) >= self._capacity:
                self._pending.popleft()
                self.state.dropped += 1
            while len(self._pending) >= self._capacity and self.error is None:
                self._ready.wait()
            if self.error is not None:
                raise MdeError(f"the {self.scale.label} worker failed: {self.error}")
            self._pending.append(_Pending(frame, arrival))
            self._ready.notify_all()

    def close(self) -> None:
        """Finish the pending frames, then stop."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._thread.join()

    def _take(self) -> list[_Pending]:
        with self._ready:
            while not self._pending and not self._closed:
                self._ready.wait()
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), self._batch))]
            self._ready.notify_all()
            return batch

    def _run(self) -> None:
        _lower_priority(self._nice)
        try:
            while batch := self._take():
                self._compute(batch)
        except BaseException as exc:  # reported by the dispatcher on its next submit, and at the end
            with self._ready:
                self.error = exc
                self._ready.notify_all()

    def _compute(self, batch: list[_Pending]) -> None:
        scale, info = self.scale, self.scale.model.info
        frames = np.stack([item.frame.units for item in batch])
        values = scale.model.backend.run(model_inputs(frames, scale.grid, scale.model.inputs), scale.outputs)
        done = time.monotonic()
        embedding, tags = values[scale.outputs[0]], values.get(info.tags_output) if info.tags_output else None
        for i, item in enumerate(batch):
            latency_ms = (done - item.arrival) * 1e3
            self.state.latencies_ms.append(latency_ms)
            self.state.padded |= item.frame.padded
            self._emit(StreamFrame(
                timestamp=item.frame.start * scale.grid.unit_seconds, scale=scale.seconds, model=info.name,
                latency_ms=latency_ms, embedding=embedding[i],
                tags=None if tags is None else tags[i], tag_names=info.tag_names,
            ))

    def summary(self) -> ScaleSummary:
        lat = np.asarray(self.state.latencies_ms) if self.state.latencies_ms else np.full(1, np.nan)
        return ScaleSummary(
            scale=self.scale.seconds, model=self.scale.model.name, hop_s=self.scale.hop_seconds,
            frames=len(self.state.latencies_ms), dropped=self.state.dropped, padded=self.state.padded,
            latency_min_ms=float(lat.min()), latency_p50_ms=float(np.percentile(lat, 50)),
            latency_p99_ms=float(np.percentile(lat, 99)),
            latency_max_ms=float(lat.max()),
        )


def _lower_priority(increment: int) -> None:
    """Raise the calling thread's nice value by ``increment`` (Linux threads have their own)."""
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError:
        pass


class StreamEngine:
    """Runs ``scales`` over ``source`` and hands every frame to ``sinks``.

    threads: threads for the front ends of the dispatcher (model threads are set when models load).
    """

    def __init__(self, source: AudioSource, scales: Sequence[Scale], sinks: Sequence[FrameSink] = (),
                 threads: int = 1) -> None:
        if not scales:
            raise MdeError("nothing to stream: no scales")
        self.source = source
        self.scales = list(scales)
        self.sinks = list(sinks)
        self._emit_lock = threading.Lock()
        self._feeds: dict[tuple[int, int], RateFeed] = {}
        for index, scale in enumerate(self.scales):
            info = scale.model.info
            if info.channels > 1 and source.channels not in (1, info.channels):
                raise MdeError(f"{info.name} takes {info.channels}-channel audio, the source has {source.channels} "
                               "channels (mono or the model's count can be streamed)")
            key = (info.sample_rate, info.channels)
            feed = self._feeds.get(key)
            if feed is None:
                feed = self._feeds[key] = RateFeed(source.rate, info.sample_rate, threads=threads,
                                                   channels=info.channels)
            if scale.grid.unit == "sample":
                feed.add_window_chunker(scale.grid, index)
            else:
                feed.add_patch_chunker(info.frontend, scale.grid, index)  # type: ignore[arg-type]
        ranks = sorted(range(len(self.scales)), key=lambda i: self.scales[i].seconds)
        self.workers = [
            ScaleWorker(scale, self._emit, source.live, nice=NICE_STEP * ranks.index(i))
            for i, scale in enumerate(self.scales)
        ]

    def _emit(self, frame: StreamFrame) -> None:
        with self._emit_lock:
            for sink in self.sinks:
                sink.add(frame)

    def run(self, duration: Optional[float] = None, stop: Optional[threading.Event] = None) -> StreamSummary:
        """Stream until the source ends, ``duration`` seconds of audio have passed, ``stop`` is set or
        Ctrl-C; then finish pending frames, close the sinks and return the summary."""
        source = self.source
        limit = None if duration is None else round(duration * source.rate)
        slots = max(8, int(RING_SECONDS * source.rate / source.block_frames))
        ring = BlockRing(slots, source.block_frames, source.channels)
        wall0, cpu0 = time.monotonic(), time.process_time()
        seen, interrupted = 0, False
        for worker in self.workers:
            worker.start()
        try:
            source.start(ring)
            while stop is None or not stop.is_set():
                ended = source.finished()
                item = ring.pop()
                if item is None:
                    if ended:
                        break
                    time.sleep(POLL_SECONDS)
                    continue
                block, arrival = item
                if limit is not None and seen + len(block) >= limit:
                    self._dispatch(block[: limit - seen], arrival, final=True)
                    seen = limit
                    break
                seen += len(block)
                self._dispatch(block, arrival, final=False)
            if seen != limit:
                self._dispatch(np.zeros((0, source.channels), np.float32), time.monotonic(), final=True)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            source.stop()
            for worker in self.workers:
                worker.close()
        summary = StreamSummary(
            source=source.describe(),
            scales=[worker.summary() for worker in self.workers],
            audio_seconds=seen / source.rate,
            wall_seconds=time.monotonic() - wall0,
            cpu_seconds=time.process_time() - cpu0,
            dropped_audio_seconds=ring.dropped_frames / source.rate,
            device_overflows=source.device_overflows,
            interrupted=interrupted,
        )
        for sink in self.sinks:  # what was computed is kept, also when a part failed
            sink.close(summary)
        failed = next((w for w in self.workers if w.error is not None), None)
        if failed is not None:
            raise MdeError(f"the {failed.scale.label} worker failed: {failed.error}")
        if source.error is not None:
            raise source.error
        return summary

    def _dispatch(self, block: np.ndarray, arrival: float, final: bool) -> None:
        """Feed a (frames, channels) block of the source to every model rate and channel count."""
        for feed in self._feeds.values():
            for frame in feed.push(block, final=final):
                self.workers[frame.consumer].submit(frame, arrival)
