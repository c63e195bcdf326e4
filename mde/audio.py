"""Audio I/O: decode files to mono float32, resample, validate, and find audio files on disk.

Units: lengths and positions are in samples unless a name says seconds; rates are in Hz. Decoding
uses libsndfile (through soundfile), and FFmpeg (PyAV, when installed) for the formats libsndfile does not
read (M4A/AAC and others: :mod:`mde.audio_ffmpeg`); resampling uses soxr; none imports torch or librosa.

Every failure to read a file raises a subclass of :class:`mde.errors.AudioError` whose one-line
message starts with the path.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Optional

import numpy as np
import soundfile as sf
import soxr

from mde.audio_ffmpeg import FFMPEG_EXTENSIONS, decode_ffmpeg, ffmpeg_available
from mde.errors import (
    AudioError,
    AudioFileNotFound,
    CorruptAudioError,
    EmptyAudioFile,
    InvalidSamplesError,
    MdeError,
    NotAudioError,
    UnsupportedRateError,
)

RESAMPLE_QUALITY = "HQ"
"""soxr quality of every resampling, whole-signal and streaming alike (so both give the same samples)."""

MIN_SAMPLE_RATE = 8000
"""The lowest sample rate (Hz) accepted for decoding and resampling."""

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au"}
    | ({".opus"} if "OPUS" in sf.available_subtypes("OGG") else set())
)
"""Lower-case suffixes of the formats libsndfile reads, which :func:`find_audio_files` picks up when it walks
a folder (with :data:`mde.audio_ffmpeg.FFMPEG_EXTENSIONS` beside them when PyAV is installed: see
:func:`audio_extensions`)."""


def audio_extensions() -> frozenset[str]:
    """The suffixes :func:`find_audio_files` picks up: AUDIO_EXTENSIONS, and FFmpeg's when PyAV is installed."""
    return AUDIO_EXTENSIONS | FFMPEG_EXTENSIONS if ffmpeg_available() else AUDIO_EXTENSIONS

MAX_SAMPLE_MAGNITUDE = 1e6
"""The largest sample magnitude accepted (full scale is 1.0): room for int16-scaled float arrays, far
below what overflows the front end's float32 power spectrum."""

_BLOCK_SAMPLES = 1 << 18
"""Samples (frames x channels) decoded per block: the multichannel buffer never holds more."""

_MAX_PREALLOC = 1 << 26
"""The most samples allocated up front from a header's frame count (a lying header can't exhaust memory)."""

_MP3_SLACK = 1152
"""Samples an MP3 with an exact length header may decode short of it (one MPEG-1 Layer III frame)."""
_MP3_LENGTH_TAGS = (b"Xing", b"Info", b"VBRI")
_MP3_TAG_WINDOW = 4096
"""Bytes after the ID3v2 tag searched for a length header (it sits inside the first MPEG frame)."""

_STREAMING_SIZE = 0x7FFF0000
"""Chunk sizes at or above this are placeholders that streaming writers (ffmpeg to a pipe) leave."""

# libsndfile's header log: "data : 44100 (should be 22028)" (WAV), "Data Size : ..." (AU),
# "SSND : ..." (AIFF): the data chunk claims more bytes than the file holds.
_SHORT_CHUNK = re.compile(r"^\s*(?:data|data size|ssnd)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.I | re.M)
# RF64: "Calculated frame count 10999 does not match value from 'ds64' chunk of 22050."
_SHORT_COUNT = re.compile(
    r"calculated frame count (\d+) does not match value from '\w+' chunk of (-?\d+)", re.I
)
# The count in that line is the ds64 chunk's 64-bit frame count cut to a signed 32-bit int (negative
# from 2**31 frames on); the ds64 section of the log ("  Frames    : 3221225472") has it whole.
_DS64_FRAMES = re.compile(r"^\s*Frames\s*:\s*(\d+)\s*$", re.I | re.M)
# libsndfile logs this when libogg finds pages missing (damage; junk after the last page is only "skipped").
_OGG_HOLE = "libogg reports a hole"

_OGG_MAX_PAGE = 27 + 255 + 255 * 255
"""The largest Ogg page in bytes: a 27-byte header, 255 lacing values, 255 segments of 255 bytes."""
_OGG_EOS_FLAG = 0x04

# libsndfile error codes from sf_open: 1-4 are public (sndfile.h), 7 and 18 internal (common.h).
_SF_ERR_UNRECOGNISED_FORMAT = 1
_SF_ERR_MALFORMED_FILE = 3
_SF_ERR_UNSUPPORTED_ENCODING = 4
_SFE_BAD_FILE = 7  # the MPEG decoder's answer to a .mp3 that holds no MPEG frames
_SFE_UNIMPLEMENTED = 18


def load_audio(path: str | os.PathLike[str], sr: int | None = None, channels: int = 1, offset: float = 0.0,
               duration: float | None = None) -> tuple[np.ndarray, int]:
    """Decode an audio file (or the span of it from ``offset`` for ``duration`` seconds) to mono (or, with
    ``channels``, multichannel) float32 samples.

    Any format libsndfile reads (WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, AU, ...) with any sample
    format and channel count. Channels are averaged (see ``channels``); with ``sr`` given and different
    from the file's rate, the result is resampled with soxr 'HQ'. Unlike ``librosa.load``, the default
    keeps the file's own rate (librosa resamples to 22050 Hz unless told ``sr=None``).

    Parameters
    ----------
    path : str or os.PathLike
        The audio file.
    sr : int or None, default None
        Rate to resample to, in Hz (at least :data:`MIN_SAMPLE_RATE`); None keeps the file's rate.
    channels : int, default 1
        1: average the file's channels to mono. More: keep them (see :func:`fit_channels`: a mono file
        is repeated on every channel, other channel counts are refused).
    offset : float, default 0.0
        Seconds from the start of the file where decoding starts (libsndfile seeks there: what comes
        before is not decoded; FFmpeg formats are decoded from the start and cut).
    duration : float or None, default None
        At most this many seconds are decoded (None: to the end). The span is decoded and resampled as
        if it were a file of its own.

    Returns
    -------
    samples : np.ndarray, float32, shape (samples,), or (samples, channels) when ``channels`` > 1
        C-contiguous samples, full scale [-1, 1].
    rate : int
        Their rate in Hz: ``sr`` when given, else the file's.

    Raises
    ------
    AudioFileNotFound
        The path does not exist.
    AudioError
        The path is a directory, a symbolic link that loops or points to nothing, or cannot be opened
        (permissions).
    EmptyAudioFile
        Zero bytes, or a valid file that holds zero frames.
    NotAudioError
        Not a format libsndfile recognises (text, random bytes, header-less RAW).
    CorruptAudioError
        Recognised but damaged: a header that claims more data than the file holds (WAV, AIFF, AU,
        RF64, also an RF64 ds64 chunk claiming 2**31 frames or more), an Ogg stream without its
        end-of-stream page or with missing pages, a FLAC or MP3 stream the decoder loses sync in, or
        fewer frames decoded than the header announces (FLAC, Ogg, MP3 with a length header). The
        decoder's own notices, if any, are folded into the message.
    InvalidSamplesError
        NaN, infinity or a sample beyond :data:`MAX_SAMPLE_MAGNITUDE` (the message gives sample and
        second).
    UnsupportedRateError
        The file's rate or ``sr`` is below :data:`MIN_SAMPLE_RATE`.
    AudioError
        ``channels`` > 1 and the file has another channel count than 1 or ``channels``; ``offset`` at or
        past the end of the file.
    MdeError
        ``offset`` negative or ``duration`` not above 0 (see :func:`check_span`).

    Every message is one line that starts with the path.

    Notes
    -----
    What cannot be detected: garbage bytes inside PCM data (WAV/AIFF data are any bytes) decode as
    noise; a truncated W64 file reads as shorter. An MP3 without a Xing/Info/VBRI header (plain CBR)
    has only an estimated length (libsndfile counts ID3v2 tags, cover art included, as audio), so a
    cut one decodes without error to the frames present; one with such a header is checked, but
    up to 1152 samples may be missing unnoticed. A short run of garbage in an MP3 that the decoder
    resyncs past drops a frame or two silently (libmpg123's notices about it are kept off stderr).
    A WAV from a streaming writer with a placeholder data size (0xFFFFFFFF) is read to the end of the
    file; one with size 0 reads as empty.
    """
    path = Path(path)
    check_span(offset, duration)
    if sr is not None:
        _check_rate(sr, f"{path}: requested sample rate")
    try:
        with _decoder_notices_muted(), open_audio(path) as f:
            rate = f.samplerate
            start, count = span_frames(rate, offset, duration)
            if start and f.frames > 0 and start >= f.frames:
                raise _past_the_end(path, offset, f.frames / rate)
            # (checked, and resampled block by block)
            samples = _read_all(f, mono=channels == 1, sr=sr, start=start, count=count)
    except NotAudioError:
        if path.suffix.lower() not in FFMPEG_EXTENSIONS or not ffmpeg_available():
            raise  # (libsndfile's verdict stands on its own formats: FFmpeg probes random bytes as something)
        samples, rate = _decoded_by_ffmpeg(path, mono=channels == 1)
        start, count = span_frames(rate, offset, duration)
        if start and start >= len(samples):
            raise _past_the_end(path, offset, len(samples) / rate) from None
        samples = samples[start : None if count is None else start + count]
        check_samples(samples, str(path), sr=rate, offset=start)
        samples = samples if sr is None else resample(samples, rate, sr)
    if len(samples) == 0:
        if offset:
            raise _past_the_end(path, offset, None)
        raise EmptyAudioFile(f"{path}: the file holds no audio frames")
    if channels > 1:
        samples = fit_channels(samples, channels, str(path))
    return samples, sr or rate


def check_span(offset: float = 0.0, duration: float | None = None) -> None:
    """MdeError (one line) unless ``offset`` (seconds) is finite and at least 0 and ``duration`` (seconds) is
    None or finite and above 0."""
    if not (np.isfinite(offset) and offset >= 0):
        raise MdeError(f"the offset must be 0 s or more, got {offset:g}")
    if duration is not None and not (np.isfinite(duration) and duration > 0):
        raise MdeError(f"the duration must be above 0 s, got {duration:g}")


def span_frames(rate: int, offset: float = 0.0, duration: float | None = None) -> tuple[int, int | None]:
    """The span from ``offset`` for ``duration`` seconds at ``rate`` Hz as (first frame, frame count), the
    count None for 'to the end'; a duration keeps at least one frame."""
    start = round(offset * rate)
    return start, None if duration is None else max(1, round(duration * rate))


def _past_the_end(path: Path, offset: float, seconds: float | None) -> AudioError:
    length = f" ({seconds:.2f} s long)" if seconds is not None else ""
    return AudioError(f"{path}: the offset {offset:g} s is at or past the end of the file{length}")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample along the first axis from ``sr_in`` to ``sr_out`` Hz with soxr 'HQ'.

    ``x`` is (samples,) or (frames, channels); the result has round(len(x) * sr_out / sr_in) frames
    and is C-contiguous float32. Equal rates return ``x`` as float32 (no copy when it already is).
    Raises UnsupportedRateError for a rate below :data:`MIN_SAMPLE_RATE`.
    """
    _check_rate(sr_in, "input sample rate")
    _check_rate(sr_out, "output sample rate")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    return np.ascontiguousarray(soxr.resample(x, sr_in, sr_out, quality=RESAMPLE_QUALITY), dtype=np.float32)


def stream_resampler(sr_in: int, sr_out: int, channels: int = 1) -> soxr.ResampleStream:
    """A float32 soxr stream resampler from ``sr_in`` to ``sr_out`` Hz for ``channels`` channels (fed
    (samples,) chunks for one, (samples, channels) for more): fed chunk by chunk (the last with
    ``last=True``), it gives the samples :func:`resample` gives for the whole signal."""
    _check_rate(sr_in, "input sample rate")
    _check_rate(sr_out, "output sample rate")
    return soxr.ResampleStream(sr_in, sr_out, channels, dtype="float32", quality=RESAMPLE_QUALITY)


_PAIRWISE_CHANNELS = 8
"""From this many channels numpy's mean sums them pairwise (in another order than one by one)."""


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average a (frames, channels) array over its channels into a float32 (frames,) array.

    The mean is accumulated in float32 (ample for a handful of channels, and it keeps stereo mixdown
    cheaper than decoding). A 1-D array is taken as mono already and returned as float32.
    """
    x = np.asarray(x)
    if x.ndim == 1:
        return np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected (frames,) or (frames, channels), got shape {x.shape}")
    if x.shape[1] == 1:
        return np.ascontiguousarray(x[:, 0], dtype=np.float32)
    if x.shape[1] >= _PAIRWISE_CHANNELS:
        mono: np.ndarray = x.mean(axis=1, dtype=np.float32)
        return mono
    # Below 8 channels numpy's mean adds the channels in order, then divides: the same bits, 4-8x faster
    # than its strided reduction (stereo 44.1 kHz: 2 ms instead of 17 ms per 30 s)
    x = x.astype(np.float32, copy=False)  # (mean with dtype float32 casts every sample first, too)
    mono = x[:, 0].copy()
    for channel in range(1, x.shape[1]):
        mono += x[:, channel]
    mono /= np.float32(x.shape[1])
    return mono


def fit_channels(x: np.ndarray, channels: int, origin: str) -> np.ndarray:
    """``x`` ((frames,) or (frames, c) float32) as a model of ``channels`` channels takes it: mono
    (frames,) for 1 (:func:`to_mono`), else (frames, channels), a mono signal repeated on every channel.
    AudioError (one line starting with ``origin``) for another channel count than 1 or ``channels``."""
    if channels == 1:
        return to_mono(x)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1):
        return np.ascontiguousarray(np.repeat(x.reshape(len(x), 1), channels, axis=1))
    if x.ndim != 2 or x.shape[1] != channels:
        got = f"{x.shape[1]} channels" if x.ndim == 2 else f"shape {x.shape}"
        raise AudioError(f"{origin}: {got}; a {channels}-channel model takes mono or {channels}-channel audio")
    return np.ascontiguousarray(x)


def check_samples(x: np.ndarray, origin: str, sr: int | None = None, offset: int = 0) -> None:
    """Raise InvalidSamplesError if ``x`` holds NaN, infinity or a magnitude above MAX_SAMPLE_MAGNITUDE.

    Full scale is 1.0; samples far beyond it (a float file holding 1e30) overflow the front end's
    float32 power spectrum into NaN embeddings, so they are refused rather than embedded.
    ``origin`` starts the message (a path, or "array"); the first bad sample (the first bad frame,
    for a (frames, channels) array) is named by index (plus ``offset``: where ``x`` starts in its
    signal), and in seconds too when ``sr`` (Hz) is given.
    """
    with np.errstate(invalid="ignore"):
        good = np.abs(x) <= MAX_SAMPLE_MAGNITUDE  # False for NaN too
    if good.all():
        return
    bad_frames = ~good.reshape(len(x), -1).all(axis=1)
    index = int(np.argmax(bad_frames))
    frame = np.asarray(x[index]).ravel()
    at = index + offset
    where = f"sample {at}" + (f" ({at / sr:.3f} s)" if sr else "")
    if not np.isfinite(frame).all():
        what = "NaN" if np.isnan(frame).any() else "infinity"
        raise InvalidSamplesError(f"{origin}: {what} at {where}")
    value = float(frame[np.argmax(np.abs(frame))])
    raise InvalidSamplesError(
        f"{origin}: {where} is {value:.3g}, beyond the largest magnitude accepted "
        f"({MAX_SAMPLE_MAGNITUDE:g}; full scale is 1.0): rescale the audio"
    )


def find_audio_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders into a sorted list of files, without duplicates.

    A file is taken as given, whatever its suffix. A folder is walked recursively for files whose
    suffix (case-insensitive) is in :data:`AUDIO_EXTENSIONS`; hidden files and folders (names
    starting with '.') are skipped. Duplicates are recognised by resolved path. A symbolic link that
    loops or points nowhere is listed as it is (loading it raises a one-line AudioError).
    Raises AudioFileNotFound for a path that does not exist.
    """
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        if not os.path.lexists(path):
            raise AudioFileNotFound(f"{path}: no such file or directory")
        for file in _walk_audio(path) if path.is_dir() else [path]:
            found.setdefault(_resolved(file), file)
    return sorted(found.values())


def _resolved(path: Path) -> Path:
    """``path`` with symbolic links resolved; a looping link as an absolute path of its own."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # RuntimeError: Python before 3.13 on a symlink loop
        return path.absolute()


def pad_to_length(x: np.ndarray, n: int) -> tuple[np.ndarray, bool]:
    """Zero-pad ``x`` at the end to ``n`` samples; return it and whether padding was added.

    An array already ``n`` samples or longer is returned unchanged.
    """
    if len(x) >= n:
        return x, False
    padded = np.zeros((n, *x.shape[1:]), dtype=x.dtype)
    padded[: len(x)] = x
    return padded, True


_DECODER_NOTICES = ("[src/libmpg123/", "Note: ", "Warning: ", "Error: ")
"""How lines that libmpg123 (inside libsndfile) writes straight to file descriptor 2 begin."""
_FOLDED = "_mde_decoder_notices_folded"
"""Set on an AudioError whose message holds the decoder's notices, so that an enclosing capture adds none."""
_MAX_FOLDED_NOTICES = 3
"""The most decoder notices folded into the message of a failed decode."""


class _StderrCapture:
    """Redirect file descriptor 2 into a temporary file while any thread decodes.

    libmpg123 prints resync notices ("Note: Illegal Audio-MPEG-Header ...", "Warning: Xing stream size
    off ...") to fd 2, also for files that decode correctly. Those notices are dropped, or folded into
    the error when the decode fails; any other text written meanwhile is passed on when the last
    decode ends. Nested and concurrent decodes share one capture: the lock guards only entering and
    leaving it (a dup2 or two), never the decoding itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = -1
        self._sink: Optional[IO[bytes]] = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        start = self._enter()
        try:
            yield
        except AudioError as exc:
            notices = self._notices_since(start)
            if not notices or getattr(exc, _FOLDED, False):  # (a nested capture folded them already)
                raise
            folded = type(exc)(f"{exc} (decoder: {notices})")
            setattr(folded, _FOLDED, True)
            raise folded from None
        finally:
            self._leave()

    def _enter(self) -> int:
        """Start (or join) the capture; return the capture's offset now (-1: fd 2 is not open)."""
        with self._lock:
            if self._depth == 0:
                self._redirect()
            self._depth += 1
            return os.lseek(2, 0, os.SEEK_CUR) if self._sink else -1

    def _redirect(self) -> None:
        if sys.stderr:
            sys.stderr.flush()
        try:
            self._saved = os.dup(2)
        except OSError:  # no fd 2 at all: nothing can reach a terminal
            return
        self._sink = tempfile.TemporaryFile()  # noqa: SIM115 (open until the last decode ends)
        os.dup2(self._sink.fileno(), 2)

    def _notices_since(self, start: int) -> str:
        """The decoder notices written since offset ``start`` of the capture, on one line."""
        with self._lock:
            if self._sink is None or start < 0:
                return ""
            text = os.pread(self._sink.fileno(), 1 << 16, start).decode("utf-8", "replace")
        notices = list(dict.fromkeys(_decoder_lines(text)[0]))
        more = len(notices) - _MAX_FOLDED_NOTICES
        folded = "; ".join(n.rstrip(".") for n in notices[:_MAX_FOLDED_NOTICES])
        return folded + (f"; and {more} more" if more > 0 else "")

    def _leave(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth or self._sink is None:
                return
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._sink.seek(0)
            captured = self._sink.read().decode("utf-8", "replace")
            self._sink.close()
            self._sink = None
        kept = _decoder_lines(captured)[1]
        if kept and sys.stderr:
            sys.stderr.write("\n".join(kept) + "\n")


def _decoder_lines(text: str) -> tuple[list[str], list[str]]:
    """Split captured stderr text into (decoder notices without their prefix, every other line)."""
    notices, others = [], []
    for line in text.splitlines():
        prefix = next((p for p in _DECODER_NOTICES if line.startswith(p)), None)
        if prefix is None:
            others.append(line)
        elif line[len(prefix):].strip():
            notices.append(line.split("] ", 1)[-1] if prefix.startswith("[") else line[len(prefix):].strip())
    return notices, others


_decoder_notices_muted = _StderrCapture()


COMPRESSED_RATIO = 20
"""Decoded float32 bytes per file byte assumed for a file whose header libsndfile cannot read (128 kbit/s
AAC against 44.1 kHz stereo float32 is about 22)."""


def decoded_bytes(path: str | os.PathLike[str]) -> int:
    """About how many bytes ``path`` takes decoded to float32 at its own rate: frames x channels x 4 from
    its header, else COMPRESSED_RATIO x its size; 0 when it cannot be read at all (it fails fast anyway)."""
    try:
        info = sf.info(os.fspath(path))
        return int(info.frames) * int(info.channels) * 4
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        pass
    try:
        return os.path.getsize(path) * COMPRESSED_RATIO
    except OSError:
        return 0


def _decoded_by_ffmpeg(path: Path, mono: bool) -> tuple[np.ndarray, int]:
    """A file libsndfile does not read, decoded by FFmpeg (see :mod:`mde.audio_ffmpeg`); libsndfile's
    NotAudioError stands when FFmpeg cannot read it either."""
    try:
        samples, rate = decode_ffmpeg(path)
    except NotAudioError:
        raise NotAudioError(f"{path}: not a recognised audio format") from None
    _check_rate(rate, f"{path}: sample rate")
    return (to_mono(samples) if mono else samples), rate


def _walk_audio(folder: Path) -> list[Path]:
    """Audio files under ``folder``, skipping hidden files and folders."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [
            Path(root, name)
            for name in names
            if not name.startswith(".") and Path(name).suffix.lower() in audio_extensions()
        ]
    return files


def _check_rate(rate: int, what: str) -> None:
    """Raise UnsupportedRateError if ``rate`` (Hz) is below MIN_SAMPLE_RATE; ``what`` starts the message."""
    if not rate >= MIN_SAMPLE_RATE:
        raise UnsupportedRateError(f"{what} {rate} Hz is below the minimum of {MIN_SAMPLE_RATE} Hz")


def _open(path: Path) -> sf.SoundFile:
    """Open ``path`` for reading, turning every libsndfile failure into a typed AudioError."""
    if not path.exists():
        if os.path.islink(path):
            raise AudioError(f"{path}: a symbolic link that loops or points to nothing")
        raise AudioFileNotFound(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise EmptyAudioFile(f"{path}: the file is empty (0 bytes)")
    if path.suffix.lower() == ".raw":
        raise NotAudioError(f"{path}: header-less RAW audio is not supported (no rate or format in the file)")
    try:
        return sf.SoundFile(path)
    except sf.LibsndfileError as e:
        raise _open_error(path, e) from None


def _open_error(path: Path, e: sf.LibsndfileError) -> AudioError:
    """The typed error for a failed sf_open of an existing regular file."""
    reason = e.error_string.strip().rstrip(".")
    if e.code in (_SF_ERR_UNRECOGNISED_FORMAT, _SFE_BAD_FILE):
        return NotAudioError(f"{path}: not a recognised audio format")
    if e.code in (_SF_ERR_UNSUPPORTED_ENCODING, _SFE_UNIMPLEMENTED):
        return NotAudioError(f"{path}: unsupported audio encoding ({reason})")
    if e.code == _SF_ERR_MALFORMED_FILE:
        return CorruptAudioError(f"{path}: the audio file is malformed or truncated ({reason})")
    return AudioError(f"{path}: cannot open ({reason})")


def open_audio(path: str | os.PathLike[str]) -> sf.SoundFile:
    """Open an audio file for decoding after the checks :func:`load_audio` makes before decoding.

    Raises the typed errors of :func:`load_audio` for a missing, empty, unrecognised, truncated file or
    an unsupported rate. Use it as a context manager; read it with :func:`read_blocks`.
    """
    path = Path(path)
    with _decoder_notices_muted():
        f = _open(path)
    try:
        _check_rate(f.samplerate, f"{path}: sample rate")
        _check_header(f, path)
    except AudioError:
        f.close()
        raise
    return f


def read_blocks(f: sf.SoundFile, block_frames: int = 0, start: int = 0, count: int | None = None
                ) -> Iterator[np.ndarray]:
    """Decode an opened file from frame ``start`` to its end (or for at most ``count`` frames) as float32
    (frames, channels) blocks of up to ``block_frames``.

    Each block is a view of one reused buffer, valid until the next is yielded. A decoder error, or
    fewer frames than the header announces, raises CorruptAudioError (the message starts with the path).
    block_frames: 0 picks a block of about 2**18 samples over all channels.
    """
    path = Path(f.name)
    block = np.empty((block_frames or max(1, _BLOCK_SAMPLES // f.channels), f.channels), np.float32)
    if start:
        f.seek(start)
    n = 0
    while (size := len(block) if count is None else min(len(block), count - n)) and (
            got := _read_block(f, block[:size], path, start + n)):
        yield block[:got]
        n += got
    _check_decoded(f, path, n, start, count)


def _read_all(f: sf.SoundFile, mono: bool, sr: int | None = None, start: int = 0, count: int | None = None
              ) -> np.ndarray:
    """Decode ``f`` from frame ``start`` to the end (or for at most ``count`` frames: see
    :func:`read_blocks`) in blocks, averaging channels when ``mono`` (else (frames, channels)), each
    block checked (:func:`check_samples`) and, with ``sr`` other than the file's rate, resampled by a
    stream resampler: the samples :func:`resample` gives for the whole signal, without ever holding it at
    the file's rate and channels (a 2-hour 44.1 kHz stereo file is 2.5 GB so, 0.46 GB at 16 kHz mono).
    A decoder error is CorruptAudioError."""
    path, rate = Path(f.name), f.samplerate
    width: tuple[int, ...] = () if mono else (f.channels,)
    resampler = None if sr is None or sr == rate else stream_resampler(rate, sr, 1 if mono else f.channels)
    frames = max(f.frames - start, 0) if count is None else min(max(f.frames - start, 0), count)
    expected = frames if resampler is None or sr is None else round(frames * sr / rate) + 1
    out = np.empty((min(expected, _MAX_PREALLOC // (1 if mono else f.channels)), *width), np.float32)
    n, position = 0, start

    def append(piece: np.ndarray) -> None:
        nonlocal out, n
        if n + len(piece) > len(out):
            out.resize((max(2 * len(out), n + len(piece)), *width), refcheck=False)
        out[n : n + len(piece)] = piece
        n += len(piece)

    for block in read_blocks(f, start=start, count=count):
        piece = to_mono(block) if mono else block
        check_samples(piece, str(path), sr=rate, offset=position)
        position += len(piece)
        append(piece if resampler is None else resampler.resample_chunk(piece, last=False))
    if resampler is not None:
        append(resampler.resample_chunk(np.zeros((0, *width), np.float32), last=True))
    out.resize((n, *width), refcheck=False)
    return out


def _read_block(f: sf.SoundFile, block: np.ndarray, path: Path, position: int) -> int:
    """Read up to len(block) frames into ``block``; return how many were read (0 at the end)."""
    try:
        with _decoder_notices_muted():
            return len(f.read(out=block))
    except sf.LibsndfileError as e:
        reason = e.error_string.strip().rstrip(".")
        raise CorruptAudioError(
            f"{path}: decoding failed after {position} frames ({position / f.samplerate:.2f} s): {reason}"
        ) from None


def _check_header(f: sf.SoundFile, path: Path) -> None:
    """Raise CorruptAudioError if the just-opened file is cut short.

    Uses libsndfile's header log (read it before decoding: decoding adds lines of its own) and, for
    Ogg, the end-of-stream flag that the last page of a complete stream carries.
    """
    missing = _missing_from_log(f.extra_info)
    if missing:
        raise CorruptAudioError(f"{path}: truncated: {missing}")
    if f.format == "OGG" and not _ogg_last_page_is_final(path):
        raise CorruptAudioError(f"{path}: truncated: the Ogg stream ends without its end-of-stream page")


def _check_decoded(f: sf.SoundFile, path: Path, decoded: int, start: int = 0, count: int | None = None) -> None:
    """Raise CorruptAudioError if decoding skipped damage or gave fewer frames than the header announces
    (for the span from frame ``start`` of at most ``count`` frames, when the file was not read whole)."""
    if f.format == "OGG" and _OGG_HOLE in f.extra_info:
        raise CorruptAudioError(f"{path}: damaged: pages of the Ogg stream are missing or corrupted")
    expected = _expected_frames(f, path)
    if expected is None:
        return
    if start or count is not None:
        wanted = max(expected - start, 0) if count is None else min(max(expected - start, 0), count)
        if decoded < wanted:
            raise CorruptAudioError(f"{path}: truncated or damaged: decoded {decoded} of the {wanted} frames "
                                    f"the header announces from frame {start}")
    elif decoded < expected:
        raise CorruptAudioError(
            f"{path}: truncated or damaged: decoded {decoded} of the {f.frames} frames the header announces"
        )


def _ogg_last_page_is_final(path: Path) -> bool:
    """Whether the last complete Ogg page of the file carries the end-of-stream flag.

    Bytes after that page (a partial page of a cut file, or appended junk) are ignored.
    """
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - _OGG_MAX_PAGE))
        tail = fh.read()
    start = len(tail)
    while (start := tail.rfind(b"OggS", 0, start)) >= 0:
        segments = tail[start + 26 : start + 27]
        if segments:
            table = tail[start + 27 : start + 27 + segments[0]]
            if len(table) == segments[0] and start + 27 + len(table) + sum(table) <= len(tail):
                return bool(tail[start + 5] & _OGG_EOS_FLAG)
    return False


def _missing_from_log(log: str) -> str | None:
    """Describe data the header claims but the file lacks, from libsndfile's header log."""
    for claimed, present in _SHORT_CHUNK.findall(log):
        if int(present) < int(claimed) < _STREAMING_SIZE:
            return f"the header claims {claimed} data bytes, the file holds {present}"
    declared = _DS64_FRAMES.search(log)
    for present, header in _SHORT_COUNT.findall(log):
        claimed = int(declared.group(1)) if declared else int(header)
        if int(present) < claimed:
            return f"the header claims {claimed} frames, the file holds {present}"
    return None


def _expected_frames(f: sf.SoundFile, path: Path) -> int | None:
    """The fewest frames a complete file decodes to, or None where the header only estimates it.

    Without a Xing/Info/VBRI header libsndfile estimates an MP3's length from the file size, counting
    ID3v2 tags (cover art) as audio, so the estimate says nothing about truncation.
    """
    frames = int(f.frames)
    if f.format != "MP3":
        return frames
    return frames - _MP3_SLACK if _mp3_has_length_header(path) else None


def _mp3_has_length_header(path: Path) -> bool:
    """Whether the first MPEG frame (after any ID3v2 tag) carries a Xing, Info or VBRI header."""
    with open(path, "rb") as fh:
        id3 = fh.read(10)
        if len(id3) == 10 and id3[:3] == b"ID3":
            size = (id3[6] << 21) | (id3[7] << 14) | (id3[8] << 7) | id3[9]  # syncsafe integer
            fh.seek(10 + size + (10 if id3[5] & 0x10 else 0))  # flag 0x10: a 10-byte footer follows
        else:
            fh.seek(0)
        first = fh.read(_MP3_TAG_WINDOW)
    return any(tag in first for tag in _MP3_LENGTH_TAGS)
