"""Decoding the formats libsndfile does not read (M4A/AAC, ALAC, WMA, WebM, ...) with FFmpeg through PyAV.

PyAV is optional (the ``decoders`` extra). When it is installed, :func:`mde.audio.load_audio` hands it
the files with one of :data:`FFMPEG_EXTENSIONS` that libsndfile does not recognise (the suffixes of
libsndfile's own formats keep its verdict), and :func:`mde.audio.find_audio_files` also picks them up.
libsndfile stays the decoder of the formats it reads: ``mde bench decode`` measured it faster than FFmpeg
through PyAV on all of them (WAV, FLAC, Ogg Vorbis, MP3).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np

from mde.errors import CorruptAudioError, NotAudioError

FFMPEG_EXTENSIONS: frozenset[str] = frozenset({".m4a", ".m4b", ".mp4", ".aac", ".alac", ".wma", ".webm", ".mka",
                                               ".ac3", ".opus"})
"""Suffixes of the audio files only FFmpeg reads, found in folders when PyAV is installed."""


@functools.lru_cache(maxsize=1)
def ffmpeg_available() -> bool:
    """Whether PyAV (FFmpeg) can be imported (checked without importing it)."""
    return importlib.util.find_spec("av") is not None


def decode_ffmpeg(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """The first audio stream of ``path`` as float32 (frames, channels) at its own rate, and the rate (Hz).

    NotAudioError (one line starting with the path) when FFmpeg finds no audio stream in it, or cannot
    open it; CorruptAudioError when decoding fails part way.
    """
    import av

    path = Path(path)
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise NotAudioError(f"{path}: not a recognised audio format ({_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            raise NotAudioError(f"{path}: no audio stream in the file")
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels
        if channels < 1 or not (stream.codec_context.sample_rate or stream.rate):
            raise NotAudioError(f"{path}: no decodable audio stream in the file")
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks.append(_float_frames(frame.to_ndarray(), frame.format.is_planar, channels))
        except av.FFmpegError as exc:
            raise CorruptAudioError(f"{path}: the audio stream is damaged ({_reason(exc)})") from None
        rate = int(stream.codec_context.sample_rate or stream.rate)
    samples = np.concatenate(chunks) if chunks else np.zeros((0, channels), np.float32)
    return np.ascontiguousarray(samples), rate


def _float_frames(array: np.ndarray, planar: bool, channels: int) -> np.ndarray:
    """A decoded frame as float32 (frames, channels), integer formats scaled to full scale [-1, 1)."""
    frames = array.T if planar else array.reshape(-1, channels)
    if frames.dtype.kind in "iu":
        bits = 8 * frames.dtype.itemsize
        offset = 2 ** (bits - 1) if frames.dtype.kind == "u" else 0  # (unsigned 8-bit PCM is centred on 128)
        return ((frames.astype(np.float32) - offset) / 2 ** (bits - 1)).astype(np.float32)
    return frames.astype(np.float32, copy=False)


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc).strip().splitlines()[0][:200]
