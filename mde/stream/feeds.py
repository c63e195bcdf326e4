"""From blocks of captured audio to complete frames, exactly as the offline extractor cuts them.

A :class:`RateFeed` fits the stream's channels to what its models take (mixed to mono, or kept stereo
for stereo waveform models, as :func:`mde.audio.fit_channels` does offline) and resamples it to one model
rate (soxr's stream resampler, which gives the same samples as resampling the whole signal at once)
into a shared :class:`UnitBuffer`. Models that cut audio windows (log-mel or waveform) read it through a
:class:`Chunker` directly; models that cut mel patches read a :class:`MelFeed`, which computes each
log-mel frame once, as soon as its last sample has arrived, with the same centre padding the
whole-signal front end uses (reflection at the start, and at the end when the stream is finished).
Each chunker emits a frame as soon as its last unit exists, on the grid of
:func:`mde.runtime.chunker.frame_grid`, so a stream yields the frames ``embed`` yields for the same signal.
That includes an input that ends before a consumer's first frame is complete: like ``embed`` with a clip
shorter than one window, the consumer then gets one frame of the whole input zero-padded to one window.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mde.audio import fit_channels, pad_to_length, stream_resampler
from mde.errors import MdeError
from mde.runtime.chunker import FrameGrid
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import FrontendConfig
from mde.stream.buffers import UnitBuffer


@dataclass
class ReadyFrame:
    """A complete frame: which consumer it is for, its start (grid units), its units (a copy), and whether
    it is the whole (too short) input zero-padded to one window."""

    consumer: int
    start: int
    units: np.ndarray
    padded: bool = False


class Chunker:
    """Cuts frames of ``grid`` from a :class:`UnitBuffer` as soon as they are complete.

    consumer: an opaque index handed back with each frame (the scale it feeds).
    """

    def __init__(self, grid: FrameGrid, consumer: int) -> None:
        self.grid = grid
        self.consumer = consumer
        self.next_start = 0

    def take(self, buffer: UnitBuffer) -> list[ReadyFrame]:
        """Every frame whose last unit is in ``buffer``, in order."""
        frames = []
        while self.next_start + self.grid.length <= buffer.end:
            stop = self.next_start + self.grid.length
            frames.append(ReadyFrame(self.consumer, self.next_start, buffer.view(self.next_start, stop).copy()))
            self.next_start += self.grid.step
        return frames

    @property
    def starved(self) -> bool:
        """True while no frame has been cut."""
        return self.next_start == 0

    def padded(self, units: np.ndarray) -> ReadyFrame:
        """The frame of a starved consumer at the end of the stream, cut from ``units`` (the padded input)."""
        self.next_start = self.grid.step
        return ReadyFrame(self.consumer, 0, np.ascontiguousarray(units[..., : self.grid.length]), padded=True)


class MelFeed:
    """Log-mel frames of a growing signal, identical to those of one front-end call over the whole signal.

    Frame j covers samples [j*hop - c, j*hop - c + n_fft), c = n_fft // 2 with centre padding (else 0).
    It is computed once its last sample exists; frames that reach before sample 0 use the configured
    padding of the start; at :meth:`update` with ``final=True`` the frames reaching past the end are
    computed with the padding of the end, as the whole-signal front end does.
    """

    def __init__(self, config: FrontendConfig, threads: int = 1) -> None:
        self.config = config
        self._kernel = MelSpectrogram.from_config(replace(config, center=False), threads=threads)
        self._threads = threads
        self._pad = config.n_fft // 2 if config.center else 0
        self.frames = UnitBuffer(rows=config.n_mels, capacity=4096)
        self.chunkers: list[Chunker] = []

    @property
    def next_frame(self) -> int:
        return self.frames.end

    def first_sample_needed(self) -> int:
        """The earliest sample any future frame still reads (0 while a chunker may need the padded input)."""
        if any(chunker.starved for chunker in self.chunkers):
            return 0
        return max(0, self.next_frame * self.config.hop_length - self._pad)

    def update(self, samples: UnitBuffer, final: bool) -> list[ReadyFrame]:
        """Compute the frames the samples now allow, then return the patches they complete."""
        cfg = self.config
        total = samples.end
        if final:
            stop = cfg.n_frames(total) if total > self._pad else 0
        else:
            stop = max(0, (total + self._pad - cfg.n_fft) // cfg.hop_length + 1)
            if self._pad and total <= self._pad:  # reflecting the start needs n_fft // 2 + 1 samples
                stop = 0
        if stop > self.next_frame:
            self.frames.append(self._compute(samples, self.next_frame, stop))
        ready = [frame for chunker in self.chunkers for frame in chunker.take(self.frames)]
        if final and samples.end > 0:
            ready += [chunker.padded(self._whole_padded(samples, chunker.grid.min_samples))
                      for chunker in self.chunkers if chunker.starved]
        if self.chunkers:
            self.frames.discard_before(min(chunker.next_start for chunker in self.chunkers))
        return ready

    def _whole_padded(self, samples: UnitBuffer, n_samples: int) -> np.ndarray:
        """The log-mel of the whole input zero-padded to ``n_samples``, as ``embed`` computes it for a short clip."""
        padded, _ = pad_to_length(samples.view(0, samples.end), n_samples)
        return MelSpectrogram.from_config(self.config, threads=self._threads)(padded)

    def _compute(self, samples: UnitBuffer, first: int, stop: int) -> np.ndarray:
        cfg = self.config
        begin = first * cfg.hop_length - self._pad
        end = (stop - 1) * cfg.hop_length - self._pad + cfg.n_fft
        segment = samples.view(max(begin, 0), min(end, samples.end))
        before, after = max(0, -begin), max(0, end - samples.end)
        if before or after:
            if cfg.pad_mode == "reflect":
                segment = np.pad(segment, (before, after), mode="reflect")
            else:
                segment = np.pad(segment, (before, after), mode="constant")
        return self._kernel(segment)


class RateFeed:
    """The stream at one model rate and channel count: resampling, the sample buffer, and every consumer
    at that rate.

    source_rate, rate: Hz. channels: what the consumers take (1: mono; more: stereo waveform models, whose
    buffer holds (channels, samples)). Consumers are sample chunkers (audio-window models) and mel feeds
    (one per distinct front end of mono mel-patch models, shared by all scales that use it).
    """

    def __init__(self, source_rate: int, rate: int, threads: int = 1, channels: int = 1) -> None:
        self.rate = rate
        self.channels = channels
        self._resampler = None if source_rate == rate else stream_resampler(source_rate, rate, channels)
        self.samples = UnitBuffer(rows=None if channels == 1 else channels, capacity=1 << 20)
        self.window_chunkers: list[Chunker] = []
        self.mel_feeds: dict[FrontendConfig, MelFeed] = {}
        self._threads = threads

    def add_window_chunker(self, grid: FrameGrid, consumer: int) -> None:
        self.window_chunkers.append(Chunker(grid, consumer))

    def add_patch_chunker(self, config: FrontendConfig, grid: FrameGrid, consumer: int) -> None:
        if self.channels != 1:
            raise MdeError("a mel-patch model takes mono audio")
        if config.top_db is not None:
            raise MdeError(
                "a model whose front end clips to the whole signal's peak (top_db) cannot be streamed: "
                "the peak of a stream is not known in advance"
            )
        feed = self.mel_feeds.get(config)
        if feed is None:
            feed = self.mel_feeds[config] = MelFeed(config, threads=self._threads)
        feed.chunkers.append(Chunker(grid, consumer))

    def push(self, block: np.ndarray, final: bool = False) -> list[ReadyFrame]:
        """Add float32 samples at the source rate, (frames,) or (frames, channels) as the source gives
        them; the frames they complete, in order per consumer."""
        samples = fit_channels(block, self.channels, "the stream")
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=final)
        samples = np.asarray(samples, np.float32)
        self.samples.append(samples.T if samples.ndim == 2 else samples)
        ready = [frame for chunker in self.window_chunkers for frame in chunker.take(self.samples)]
        starved = [chunker for chunker in self.window_chunkers if chunker.starved]
        if final and starved and self.samples.end > 0:
            whole = self.samples.view(0, self.samples.end).T  # kept while a chunker is starved; samples first
            ready += [chunker.padded(pad_to_length(whole, chunker.grid.length)[0].T) for chunker in starved]
        for feed in self.mel_feeds.values():
            ready += feed.update(self.samples, final)
        self.samples.discard_before(self._first_sample_needed())
        return ready

    def _first_sample_needed(self) -> int:
        needs = [chunker.next_start for chunker in self.window_chunkers]
        needs += [feed.first_sample_needed() for feed in self.mel_feeds.values()]
        return min(needs) if needs else self.samples.end

