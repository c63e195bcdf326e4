"""Where a stream's audio comes from: a microphone (PortAudio via sounddevice), a file, or a pipe.

Every source pushes (frames, channels) float32 blocks at its own rate into a :class:`BlockRing`, each
with the monotonic time at which its last frame became available. A *live* source (microphone, or a
file paced at real time) never waits for the consumer: when the ring is full the block is dropped and
counted. A file read as fast as possible and a pipe wait instead, so nothing is lost.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any, BinaryIO, Optional, Union

import numpy as np

from mde.audio import MIN_SAMPLE_RATE, open_audio, read_blocks
from mde.errors import MdeError
from mde.stream.buffers import BlockRing

DEFAULT_BLOCK_SECONDS = 0.02
"""Audio per block for live sources, in seconds: the granularity of latency."""
FAST_BLOCK_SECONDS = 0.5
"""Audio per block when reading a file or a pipe as fast as possible."""
STDIN_FORMATS = {"s16le": ("<i2", 1.0 / 32768.0), "f32le": ("<f4", 1.0)}
"""Raw sample formats on standard input: numpy dtype and scale to [-1, 1]."""
MAX_RATE_HZ = 384_000
"""Highest capture or pipe rate accepted, in Hz (the ring holds RING_SECONDS of audio at this rate)."""
MAX_CHANNELS = 64
"""Most interleaved channels accepted from a pipe or a capture device."""
NO_CAPTURE_DEVICE = ("no audio capture device found; on a headless machine start a PulseAudio null sink "
                     "(see README: Streaming > Headless capture)")
"""What ``--mic`` and ``--list-devices`` say when PortAudio sees no capture device at all."""


def check_rate(rate: float, what: str) -> int:
    """``rate`` as whole Hz; MdeError unless it is one from MIN_SAMPLE_RATE to MAX_RATE_HZ. what: the option."""
    if not (math.isfinite(rate) and MIN_SAMPLE_RATE <= rate <= MAX_RATE_HZ and rate == int(rate)):
        raise MdeError(f"{what} must be a whole number of Hz from {MIN_SAMPLE_RATE} to {MAX_RATE_HZ}, got {rate:g}")
    return int(rate)


def check_channels(channels: int) -> int:
    """``channels``; MdeError unless it is from 1 to MAX_CHANNELS."""
    if not 1 <= channels <= MAX_CHANNELS:
        raise MdeError(f"--channels must be from 1 to {MAX_CHANNELS}, got {channels}")
    return int(channels)


class AudioSource:
    """Base of the sources. Subclasses set ``rate`` (Hz), ``channels``, ``block_frames``, ``live`` and
    implement :meth:`start` and :meth:`stop`; a failure in a reader thread is kept in ``error``."""

    rate: int
    channels: int
    block_frames: int
    live: bool
    error: Optional[BaseException] = None
    device_overflows: int = 0

    def describe(self) -> str:
        raise NotImplementedError

    def start(self, ring: BlockRing) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def finished(self) -> bool:
        """True once no more blocks will be pushed."""
        raise NotImplementedError


class _ReaderSource(AudioSource):
    """A source read by a thread: blocks come from :meth:`_blocks`; live ones are paced by the clock."""

    def __init__(self) -> None:
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._done = threading.Event()

    def _blocks(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self, ring: BlockRing) -> None:
        self._thread = threading.Thread(target=self._read, args=(ring,), name="mde-stream-reader", daemon=True)
        self._thread.start()

    def _read(self, ring: BlockRing) -> None:
        try:
            started = time.monotonic()
            delivered = 0
            for block in self._blocks():
                if self._stop.is_set():
                    break
                delivered += len(block)
                if self.live:  # released when its last frame would have been captured; dropped if full
                    _sleep_until(started + delivered / self.rate, self._stop)
                else:  # wait for room: nothing is lost
                    while ring.full() and not self._stop.is_set():
                        time.sleep(0.002)
                    if self._stop.is_set():  # the consumer has gone: this block was never dropped
                        break
                ring.push(block, time.monotonic())
        except BaseException as exc:  # handed to the consumer, which reports it
            self.error = exc
        finally:
            self._done.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def finished(self) -> bool:
        return self._done.is_set()


def _sleep_until(deadline: float, stop: threading.Event) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        stop.wait(delay)


class FileSource(_ReaderSource):
    """An audio file decoded block by block (libsndfile), paced at real time or read as fast as possible.

    realtime: deliver each block when it would have been captured (a live source: drops when behind);
    otherwise read ahead as fast as the consumer takes it. block_seconds: audio per block.
    """

    def __init__(self, path: str, realtime: bool = True, block_seconds: Optional[float] = None) -> None:
        super().__init__()
        self.path = path
        self._file = open_audio(path)
        self.rate = self._file.samplerate
        self.channels = self._file.channels
        seconds = block_seconds or (DEFAULT_BLOCK_SECONDS if realtime else FAST_BLOCK_SECONDS)
        self.block_frames = max(1, round(seconds * self.rate))
        self.live = realtime

    def describe(self) -> str:
        pace = "real time" if self.live else "as fast as possible"
        return f"{self.path} ({self.rate} Hz, {self.channels} ch, {pace})"

    def _blocks(self):
        # Decode in load_audio's block size and slice: libsndfile's MP3 decoder rounds a few samples
        # differently for other read sizes, and the stream must see exactly the samples `embed` sees.
        with self._file:
            for decoded in read_blocks(self._file):
                for first in range(0, len(decoded), self.block_frames):
                    yield decoded[first : first + self.block_frames]


class StdinSource(_ReaderSource):
    """Raw interleaved samples from a pipe (arecord, ffmpeg ... -f s16le -): the writer sets the pace.

    rate: Hz. sample_format: 's16le' or 'f32le'. channels: interleaved channels. A trailing partial
    frame at the end of the input is ignored.
    """

    def __init__(self, rate: int, sample_format: str = "s16le", channels: int = 1,
                 stream: Optional[BinaryIO] = None, block_seconds: float = DEFAULT_BLOCK_SECONDS) -> None:
        super().__init__()
        if sample_format not in STDIN_FORMATS:
            raise MdeError(f"--format must be one of {', '.join(STDIN_FORMATS)}, got {sample_format!r}")
        if rate is None:
            raise MdeError("--stdin needs --rate, the pipe's sample rate in Hz")
        self.rate, self.channels, self.live = check_rate(rate, "--rate"), check_channels(channels), False
        self._dtype, self._scale = STDIN_FORMATS[sample_format]
        self._format = sample_format
        self._stream = stream if stream is not None else sys.stdin.buffer
        self.block_frames = max(1, round(block_seconds * self.rate))

    def describe(self) -> str:
        return f"standard input ({self.rate} Hz, {self.channels} ch, {self._format})"

    def _blocks(self):
        frame_bytes = np.dtype(self._dtype).itemsize * self.channels
        while True:
            data = self._stream.read(self.block_frames * frame_bytes)
            usable = len(data) - len(data) % frame_bytes
            if usable:
                samples = np.frombuffer(data[:usable], self._dtype).astype(np.float32) * np.float32(self._scale)
                yield samples.reshape(-1, self.channels)
            if len(data) < self.block_frames * frame_bytes:
                return


def import_sounddevice():
    """The sounddevice module, or an MdeError saying what to install (the package or PortAudio)."""
    try:
        import sounddevice
    except ImportError:
        raise MdeError("--mic needs the 'sounddevice' package: pip install sounddevice") from None
    except OSError:
        raise MdeError("--mic needs the PortAudio library: apt install libportaudio2 (Debian/Ubuntu)") from None
    return sounddevice


def list_input_devices() -> list[dict]:
    """Capture devices PortAudio sees: index, name, host API, input channels, default rate (Hz)."""
    sd = import_sounddevice()
    apis = sd.query_hostapis()
    return [
        {"index": i, "name": d["name"], "hostapi": apis[d["hostapi"]]["name"],
         "channels": d["max_input_channels"], "default_rate": d["default_samplerate"]}
        for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0
    ]


class MicSource(AudioSource):
    """A capture device through PortAudio, at the device's rate unless ``rate`` (Hz) is given.

    device: a PortAudio device index, a (part of a) device name, or None for the default input.
    channels: captured channels (default: up to 2), mixed to mono downstream (kept for stereo models).
    MdeError when there is no such device (saying how to get one when there is none at all) or the rate
    or channels are out of range (:func:`check_rate`, :func:`check_channels`). The PortAudio callback
    only copies into the preallocated ring: it never blocks, allocates arrays or takes a lock.
    """

    live = True

    def __init__(self, device: Union[int, str, None] = None, rate: Optional[int] = None,
                 channels: Optional[int] = None, block_seconds: float = DEFAULT_BLOCK_SECONDS) -> None:
        rate = None if rate is None else check_rate(rate, "--capture-rate")
        channels = None if channels is None else check_channels(channels)
        self._sd = import_sounddevice()
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        try:
            info = self._sd.query_devices(device, "input")
        except (ValueError, self._sd.PortAudioError) as exc:
            if not list_input_devices():
                raise MdeError(NO_CAPTURE_DEVICE) from None
            if device is None:
                raise MdeError("no default capture device; choose one with --input-device "
                               "(see 'mde stream --list-devices')") from None
            raise MdeError(f"no capture device {device!r} ({exc}); see 'mde stream --list-devices'") from None
        self.device = device
        self.device_name = info["name"]
        self.rate = int(rate or info["default_samplerate"])
        self.channels = int(channels or min(2, info["max_input_channels"]))
        self.block_frames = max(1, round(block_seconds * self.rate))
        self._stream: Any = None  # a sounddevice.InputStream while capturing
        self._ring: Optional[BlockRing] = None

    def describe(self) -> str:
        return f"microphone {self.device_name!r} ({self.rate} Hz, {self.channels} ch)"

    def _callback(self, indata, frames, time_info, status) -> None:
        if status.input_overflow:
            self.device_overflows += 1
        self._ring.push(indata, time.monotonic())  # type: ignore[union-attr]

    def start(self, ring: BlockRing) -> None:
        self._ring = ring
        try:
            self._stream = self._sd.InputStream(
                device=self.device, samplerate=self.rate, channels=self.channels, dtype="float32",
                blocksize=self.block_frames, callback=self._callback,
            )
            self._stream.start()
        except self._sd.PortAudioError as exc:
            raise MdeError(f"cannot open {self.describe()}: {exc}") from None

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None

    def finished(self) -> bool:
        return False
