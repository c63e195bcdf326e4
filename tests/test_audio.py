"""mde.audio: decoding real files in many formats, mixdown, resampling, bad input, file discovery."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import MSD_CLIP, MTAT_CLIP
from hypothesis import given, settings
from hypothesis import strategies as st

from mde.audio import (
    AUDIO_EXTENSIONS,
    MIN_SAMPLE_RATE,
    check_samples,
    find_audio_files,
    load_audio,
    pad_to_length,
    resample,
    to_mono,
)
from mde.errors import (
    AudioError,
    AudioFileNotFound,
    CorruptAudioError,
    EmptyAudioFile,
    InvalidSamplesError,
    NotAudioError,
    UnsupportedRateError,
)

RATES = [8000, 11025, 22050, 44100, 48000, 96000]

# subtype -> (integer dtype written, bits the subtype keeps): the written integers are multiples of
# the subtype's step, so libsndfile stores them exactly and reads back value / 2**(dtype bits - 1).
INTEGER_SUBTYPES = {
    "PCM_U8": (np.int16, 8),
    "PCM_16": (np.int16, 16),
    "PCM_24": (np.int32, 24),
    "PCM_32": (np.int32, 32),
}


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    """A float64 sine of ``seconds`` at ``rate`` Hz."""
    t = np.arange(round(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def quantized_ints(frames: int, channels: int, subtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random integers a PCM subtype stores exactly, and their float values as libsndfile reads them."""
    dtype, bits = INTEGER_SUBTYPES[subtype]
    full_bits = np.iinfo(dtype).bits
    step = 2 ** (full_bits - bits)
    levels = np.random.default_rng(seed).integers(-(2 ** (bits - 1)), 2 ** (bits - 1), (frames, channels))
    ints = (levels * step).astype(dtype)
    return ints, ints / 2.0 ** (full_bits - 1)


def peak_hz(x: np.ndarray, rate: int) -> float:
    """Frequency (Hz) of the largest FFT magnitude of ``x``."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def raises_one_line(error: type[Exception], path: Path, **kwargs) -> str:
    """Call load_audio(path) expecting ``error``; check its message is one line starting with the path."""
    with pytest.raises(error) as info:
        load_audio(path, **kwargs)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    return message


def write_sine_file(path: Path, rate: int = 22050, seconds: float = 1.0, **kwargs) -> np.ndarray:
    """Write a 440 Hz sine with soundfile (``kwargs``: format, subtype); return the float64 samples."""
    x = sine(440, rate, seconds)
    sf.write(path, x, rate, **kwargs)
    return x


# --- decoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize(
    "fmt, subtype",
    [("WAV", s) for s in INTEGER_SUBTYPES]
    + [("FLAC", "PCM_16"), ("FLAC", "PCM_24"), ("AIFF", "PCM_16"), ("AU", "PCM_24")],
)
def test_integer_pcm_decodes_exactly(tmp_path: Path, fmt: str, subtype: str, channels: int) -> None:
    ints, values = quantized_ints(3000, channels, subtype)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, ints, 22050, format=fmt, subtype=subtype)
    samples, rate = load_audio(path)
    expected = values.astype(np.float32).mean(axis=1, dtype=np.float32)  # decoded as float32, mixed in float32
    assert rate == 22050
    assert samples.dtype == np.float32 and samples.shape == (3000,) and samples.flags.c_contiguous
    # 32-bit integers don't fit float32's 24-bit mantissa: one rounding per sample before the mean.
    np.testing.assert_allclose(samples, expected, rtol=0, atol=1e-7 if subtype == "PCM_32" else 0)


@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("subtype, dtype", [("FLOAT", np.float32), ("DOUBLE", np.float64)])
def test_float_wav_decodes_exactly(tmp_path: Path, subtype: str, dtype: type, channels: int) -> None:
    values = np.random.default_rng(1).uniform(-1, 1, (2000, channels)).astype(dtype)
    path = tmp_path / "x.wav"
    sf.write(path, values, 48000, subtype=subtype)
    samples, rate = load_audio(path)
    assert rate == 48000
    expected = values.astype(np.float32).mean(axis=1, dtype=np.float32)
    np.testing.assert_array_equal(samples, expected)


@pytest.mark.parametrize("rate", RATES)
def test_file_rate_is_returned_and_kept(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "x.wav"
    x = write_sine_file(path, rate=rate, seconds=0.25, subtype="FLOAT")
    samples, got = load_audio(path)
    assert got == rate
    np.testing.assert_array_equal(samples, x.astype(np.float32))


def test_loading_at_the_file_rate_does_not_resample(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    write_sine_file(path, rate=11025, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, sr=11025)[0], load_audio(path)[0])


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize(
    "fmt, subtype, rate",
    [
        ("OGG", "VORBIS", 44100),
        ("OGG", "VORBIS", 8000),
        ("OGG", "OPUS", 48000),
        ("MP3", "MPEG_LAYER_III", 44100),
        ("MP3", "MPEG_LAYER_III", 16000),
    ],
)
def test_lossy_formats_keep_the_sine(
    tmp_path: Path, fmt: str, subtype: str, rate: int, channels: int
) -> None:
    x = sine(440, rate, 1.0)
    path = tmp_path / f"x.{'opus' if subtype == 'OPUS' else fmt.lower()}"
    sf.write(path, np.tile(x[:, None], (1, channels)), rate, format=fmt, subtype=subtype)
    samples, got = load_audio(path)
    assert got == rate and samples.dtype == np.float32
    assert len(samples) == len(x)
    assert np.corrcoef(samples, x)[0, 1] > 0.99
    assert np.sqrt(np.mean(samples**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.03)
    assert peak_hz(samples, rate) == pytest.approx(440, abs=2)


@pytest.mark.parametrize(
    "fmt, subtype, tolerance",
    [
        ("WAV", "PCM_16", 2**-15),  # libsndfile may round x and -x to integers one step apart
        ("WAV", "FLOAT", 0.0),
        ("FLAC", "PCM_24", 2**-23),
        ("OGG", "VORBIS", 1e-3),
        ("MP3", "MPEG_LAYER_III", 1e-3),
    ],
)
def test_antiphase_stereo_mixes_to_silence(tmp_path: Path, fmt: str, subtype: str, tolerance: float) -> None:
    x = sine(1000, 44100, 0.5)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, np.stack([x, -x], axis=1), 44100, format=fmt, subtype=subtype)
    samples, _ = load_audio(path)
    assert len(samples) == len(x)
    assert np.abs(samples).max() <= tolerance


def test_six_channel_mixdown_is_the_channel_mean(tmp_path: Path) -> None:
    frames = 4410
    channels = np.stack([sine(100 * (c + 1), 44100, 0.1, amplitude=0.1 * (c + 1)) for c in range(6)], axis=1)
    path = tmp_path / "x.flac"
    sf.write(path, channels, 44100, subtype="PCM_24")
    samples, _ = load_audio(path)
    stored = sf.read(path, dtype="float32")[0]
    np.testing.assert_array_equal(samples, stored.mean(axis=1, dtype=np.float32))
    assert len(samples) == frames
    assert not np.allclose(samples, stored[:, 0], atol=1e-3)  # not just the first channel


def test_long_multichannel_file_decodes_across_blocks(tmp_path: Path) -> None:
    # More frames than one decoding block holds, with a ramp so a lost or repeated block shows.
    frames = 300_000
    ramp = (np.arange(frames) % 30000 - 15000).astype(np.int16)
    path = tmp_path / "x.wav"
    sf.write(path, np.stack([ramp, ramp], axis=1), 16000, subtype="PCM_16")
    samples, _ = load_audio(path)
    np.testing.assert_array_equal(samples, ramp / np.float32(32768))


# --- resampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate_in, rate_out", [(44100, 16000), (8000, 22050), (48000, 44100)])
def test_resampled_sine_keeps_its_frequency_and_level(tmp_path: Path, rate_in: int, rate_out: int) -> None:
    path = tmp_path / "x.wav"
    x = sine(1000, rate_in, 1.0)
    sf.write(path, x, rate_in, subtype="FLOAT")
    samples, rate = load_audio(path, sr=rate_out)
    assert rate == rate_out and samples.dtype == np.float32 and samples.flags.c_contiguous
    assert abs(len(samples) - round(len(x) * rate_out / rate_in)) <= 1
    assert peak_hz(samples, rate_out) == pytest.approx(1000, abs=1.5)
    middle = samples[len(samples) // 10 : -len(samples) // 10]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    # A clean sine: the best-fit 1 kHz sinusoid explains all but a tiny residual.
    t = np.arange(len(middle)) / rate_out
    basis = np.stack([np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)], axis=1)
    residual = middle - basis @ np.linalg.lstsq(basis, middle, rcond=None)[0]
    assert np.sqrt(np.mean(residual**2)) < 1e-3


def test_resample_identity_and_dtype() -> None:
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    assert resample(x, 16000, 16000) is x
    y = resample(x.astype(np.float64), 16000, 16000)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x)
    assert resample(x.astype(np.float64), 16000, 8000).dtype == np.float32


@pytest.mark.parametrize("rates", [(4000, 16000), (16000, 4000), (0, 16000), (16000, -1)])
def test_resample_rejects_rates_below_the_minimum(rates: tuple[int, int]) -> None:
    with pytest.raises(UnsupportedRateError):
        resample(np.zeros(100, np.float32), *rates)


@settings(max_examples=40, deadline=None)
@given(
    frames=st.integers(0, 3000),
    channels=st.one_of(st.none(), st.integers(1, 4)),
    rate_in=st.sampled_from(RATES),
    rate_out=st.sampled_from(RATES),
)
def test_resample_shapes(frames: int, channels: int | None, rate_in: int, rate_out: int) -> None:
    shape = (frames,) if channels is None else (frames, channels)
    y = resample(np.zeros(shape, np.float32), rate_in, rate_out)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    assert y.shape[1:] == shape[1:]
    assert abs(y.shape[0] - round(frames * rate_out / rate_in)) <= 1


@settings(max_examples=40, deadline=None)
@given(frames=st.integers(0, 50), channels=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_to_mono_is_the_channel_mean(frames: int, channels: int, seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal((frames, channels))
    y = to_mono(x)
    assert y.shape == (frames,) and y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(y, x.mean(axis=1), rtol=1e-6, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(frames=st.integers(0, 5000), channels=st.integers(2, 12), wide=st.booleans(), seed=st.integers(0, 2**16))
def test_to_mono_gives_the_bits_of_numpys_float32_mean(frames: int, channels: int, wide: bool, seed: int) -> None:
    """The channel-by-channel sum (below 8 channels) is bit for bit numpy's float32 mean, from float32 or
    float64 samples: outputs made before it stay reproducible."""
    x = np.random.default_rng(seed).standard_normal((frames, channels)).astype(np.float64 if wide else np.float32)
    assert np.array_equal(to_mono(x).view(np.int32), x.mean(axis=1, dtype=np.float32).view(np.int32))


def test_to_mono_passes_mono_through_and_rejects_other_shapes() -> None:
    x = np.arange(5, dtype=np.float64)
    np.testing.assert_array_equal(to_mono(x), x.astype(np.float32))
    np.testing.assert_array_equal(to_mono(x[:, None]), x.astype(np.float32))
    with pytest.raises(ValueError):
        to_mono(np.zeros((2, 2, 2)))


# --- the real clips -------------------------------------------------------------------------------


def test_mtat_clip_decodes_at_16k_mono(shared_data: Path) -> None:
    samples, rate = load_audio(shared_data / MTAT_CLIP)
    assert rate == 16000 and samples.shape == (465984,) and samples.dtype == np.float32
    assert 0.01 < np.sqrt(np.mean(samples**2)) < 1
    np.testing.assert_array_equal(load_audio(shared_data / MTAT_CLIP, sr=16000)[0], samples)


def test_msd_clip_mixes_stereo_down_and_resamples(shared_data: Path) -> None:
    path = shared_data / MSD_CLIP
    stereo, native = sf.read(path, dtype="float32")
    assert stereo.ndim == 2 and stereo.shape[1] == 2 and native == 22050
    samples, rate = load_audio(path)
    assert rate == 22050
    np.testing.assert_allclose(samples, stereo.mean(axis=1), atol=1e-6)
    at_16k, rate = load_audio(path, sr=16000)
    assert rate == 16000 and at_16k.dtype == np.float32
    assert abs(len(at_16k) - round(len(stereo) * 16000 / 22050)) <= 1


# --- bad input ------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    raises_one_line(AudioFileNotFound, tmp_path / "nope.wav")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    message = raises_one_line(AudioError, folder)
    assert "directory" in message


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp3"
    path.touch()
    raises_one_line(EmptyAudioFile, path)


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".flac", ".ogg", ".txt"])
@pytest.mark.parametrize("content", [b"this is not audio\n" * 100, bytes(range(256)) * 40])
def test_text_and_random_bytes_are_not_audio(tmp_path: Path, suffix: str, content: bytes) -> None:
    path = tmp_path / f"x{suffix}"
    path.write_bytes(content)
    raises_one_line(NotAudioError, path)


def test_headerless_raw_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "x.raw"
    path.write_bytes(bytes(1000))
    raises_one_line(NotAudioError, path)


@pytest.mark.parametrize("fmt", ["WAV", "AIFF", "AU", "RF64"])
def test_truncated_pcm_file_is_corrupt(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"x.{fmt.lower()}"
    write_sine_file(path, format=fmt, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    raises_one_line(CorruptAudioError, path)


def test_wav_cut_by_one_frame_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    write_sine_file(path, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:-2])
    raises_one_line(CorruptAudioError, path)


@pytest.mark.parametrize(
    "fmt, subtype, suffix, keep",
    [
        ("FLAC", "PCM_16", "flac", 0.5),
        ("FLAC", "PCM_16", "flac", 0.99),
        ("OGG", "VORBIS", "ogg", 0.5),
        ("OGG", "VORBIS", "ogg", 0.99),
        ("OGG", "OPUS", "opus", 0.5),
        ("OGG", "OPUS", "opus", 0.99),
        ("MP3", "MPEG_LAYER_III", "mp3", 0.5),
        ("MP3", "MPEG_LAYER_III", "mp3", 0.95),
    ],
)
def test_truncated_compressed_file_is_corrupt(
    tmp_path: Path, fmt: str, subtype: str, suffix: str, keep: float
) -> None:
    path = tmp_path / f"x.{suffix}"
    write_sine_file(path, rate=48000 if subtype == "OPUS" else 22050, seconds=10, format=fmt, subtype=subtype)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    raises_one_line(CorruptAudioError, path)


@pytest.mark.parametrize(
    "fmt, subtype, suffix, size",
    [
        ("FLAC", "PCM_16", "flac", 100),
        ("FLAC", "PCM_16", "flac", 4096),
        ("OGG", "VORBIS", "ogg", 100),
        ("OGG", "VORBIS", "ogg", 4096),
        ("OGG", "OPUS", "opus", 100),
        ("OGG", "OPUS", "opus", 4096),
        # libmpg123 resyncs past a short run of garbage (a documented limit), not past this much.
        ("MP3", "MPEG_LAYER_III", "mp3", 4096),
    ],
)
def test_garbage_in_the_middle_is_corrupt(
    tmp_path: Path, fmt: str, subtype: str, suffix: str, size: int
) -> None:
    path = tmp_path / f"x.{suffix}"
    write_sine_file(path, rate=48000 if subtype == "OPUS" else 22050, seconds=10, format=fmt, subtype=subtype)
    data = path.read_bytes()
    middle = len(data) // 2
    garbage = np.random.default_rng(0).bytes(size)
    path.write_bytes(data[:middle] + garbage + data[middle + len(garbage) :])
    raises_one_line(CorruptAudioError, path)


def test_ogg_with_junk_after_the_last_page_still_decodes(tmp_path: Path) -> None:
    path = tmp_path / "x.ogg"
    write_sine_file(path, format="OGG", subtype="VORBIS")
    clean, _ = load_audio(path)
    path.write_bytes(path.read_bytes() + b"TAG" + bytes(125))  # an ID3v1 tag some taggers append
    np.testing.assert_array_equal(load_audio(path)[0], clean)


def test_garbage_inside_wav_data_is_undetectable_but_contained(tmp_path: Path) -> None:
    # Documented limit: PCM data can be any bytes. The length and the untouched samples survive.
    path = tmp_path / "x.wav"
    write_sine_file(path, subtype="PCM_16")
    clean, _ = load_audio(path)
    data = path.read_bytes()
    start = len(data) // 2 & ~1
    path.write_bytes(data[:start] + b"\x7f" * 1000 + data[start + 1000 :])
    samples, _ = load_audio(path)
    first_bad = (start - 44) // 2
    assert len(samples) == len(clean)
    np.testing.assert_array_equal(samples[:first_bad], clean[:first_bad])
    np.testing.assert_array_equal(samples[first_bad + 500 :], clean[first_bad + 500 :])


def with_id3v2_padding(mp3: bytes, padding: int) -> bytes:
    """The MP3 with ``padding`` zero bytes added to its ID3v2 tag (as a large cover image would)."""
    assert mp3[:3] == b"ID3"
    size = (mp3[6] << 21) | (mp3[7] << 14) | (mp3[8] << 7) | mp3[9]  # a syncsafe integer
    new = size + padding
    header = mp3[:6] + bytes([(new >> 21) & 0x7F, (new >> 14) & 0x7F, (new >> 7) & 0x7F, new & 0x7F])
    return header + mp3[10 : 10 + size] + bytes(padding) + mp3[10 + size :]


def test_cbr_mp3_with_a_big_id3_tag_is_not_taken_for_truncated(shared_data: Path, tmp_path: Path) -> None:
    # The clip has no Xing/Info header: libsndfile estimates its length from the file size, tag included.
    clean, _ = load_audio(shared_data / MTAT_CLIP)
    path = tmp_path / "cover-art.mp3"
    path.write_bytes(with_id3v2_padding((shared_data / MTAT_CLIP).read_bytes(), 300_000))
    assert sf.info(str(path)).frames > len(clean) * 2
    np.testing.assert_array_equal(load_audio(path)[0], clean)


def test_cut_cbr_mp3_returns_the_decodable_prefix(shared_data: Path, tmp_path: Path) -> None:
    # Documented limit: without a length header a cut MP3 can't be told from a short one. What is
    # returned is exactly the start of the complete decode.
    data = (shared_data / MTAT_CLIP).read_bytes()
    clean, _ = load_audio(shared_data / MTAT_CLIP)
    path = tmp_path / "cut.mp3"
    path.write_bytes(data[: int(len(data) * 0.7)])
    samples, _ = load_audio(path)
    assert 0.6 * len(clean) < len(samples) < 0.75 * len(clean)
    np.testing.assert_array_equal(samples, clean[: len(samples)])


def test_streaming_wav_with_placeholder_size_reads_to_the_end(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    x = write_sine_file(path, subtype="FLOAT")
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    data[data.find(b"data") + 4 : data.find(b"data") + 8] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(load_audio(path)[0], x.astype(np.float32))


@pytest.mark.parametrize(
    "fmt, subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("OGG", "VORBIS"), ("AIFF", "PCM_24")]
)
def test_valid_file_with_zero_frames_is_empty(tmp_path: Path, fmt: str, subtype: str) -> None:
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, np.zeros((0, 2), np.float32), 22050, format=fmt, subtype=subtype)
    assert path.stat().st_size > 0
    raises_one_line(EmptyAudioFile, path)


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity")])
@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_float_wav_with_nan_or_inf(tmp_path: Path, subtype: str, bad: float, word: str) -> None:
    x = np.zeros((16000, 2))
    x[12000, 1] = bad  # in the second channel, 0.75 s in
    x[14000, 0] = bad
    path = tmp_path / "x.wav"
    sf.write(path, x, 16000, subtype=subtype)
    message = raises_one_line(InvalidSamplesError, path)
    assert f"{word} at sample 12000 (0.750 s)" in message


@pytest.mark.parametrize("rate", [4000, 7999])
def test_file_rate_below_minimum(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "x.wav"
    sf.write(path, np.zeros(rate), rate, subtype="PCM_16")
    assert f"{rate} Hz" in raises_one_line(UnsupportedRateError, path)


def test_requested_rate_below_minimum(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    write_sine_file(path)
    raises_one_line(UnsupportedRateError, path, sr=MIN_SAMPLE_RATE - 1)
    assert load_audio(path, sr=MIN_SAMPLE_RATE)[1] == MIN_SAMPLE_RATE


def test_check_samples_on_arrays() -> None:
    check_samples(np.zeros(10, np.float32), "array")
    check_samples(np.zeros(0, np.float32), "array")
    x = np.zeros(100, np.float32)
    x[[42, 50]] = np.nan
    with pytest.raises(InvalidSamplesError, match=r"^array: NaN at sample 42$"):
        check_samples(x, "array")
    with pytest.raises(InvalidSamplesError, match=r"^clip: infinity at sample 3 \(0\.375 s\)$"):
        check_samples(np.array([[0, 0], [0, 0], [0, 0], [0, -np.inf]]), "clip", sr=8)


# --- padding --------------------------------------------------------------------------------------


def test_pad_to_length() -> None:
    x = np.arange(1, 6, dtype=np.float32)
    padded, did_pad = pad_to_length(x, 8)
    assert did_pad and padded.dtype == np.float32
    np.testing.assert_array_equal(padded, [1, 2, 3, 4, 5, 0, 0, 0])
    for n in (5, 3):
        same, did_pad = pad_to_length(x, n)
        assert not did_pad and same is x


# --- finding files --------------------------------------------------------------------------------


def test_find_audio_files_walks_a_nested_tree(tmp_path: Path) -> None:
    names = [
        "a.wav", "B.MP3", "sub/c.flac", "sub/deeper/d.Ogg", "sub/deeper/e.opus", "sub/f.aif",
        "notes.txt", "sub/cover.jpg", ".hidden.wav", "sub/.also-hidden.mp3", ".cache/g.wav",
    ]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    explicit = tmp_path / "notes.txt"  # a file is taken as given, whatever its suffix
    found = find_audio_files([tmp_path, explicit, tmp_path / "a.wav", str(tmp_path / "sub")])
    expected = ["B.MP3", "a.wav", "notes.txt", "sub/c.flac", "sub/deeper/d.Ogg", "sub/f.aif"]
    if ".opus" in AUDIO_EXTENSIONS:
        expected.insert(4, "sub/deeper/e.opus")
    assert found == sorted(tmp_path / name for name in expected)
    assert found == sorted(found) and len(set(found)) == len(found)


def test_find_audio_files_dedupes_by_resolved_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert find_audio_files([tmp_path / "a.wav", "../a.wav", tmp_path]) == [tmp_path / "a.wav"]


def test_find_audio_files_missing_path(tmp_path: Path) -> None:
    with pytest.raises(AudioFileNotFound, match="gone"):
        find_audio_files([tmp_path, tmp_path / "gone"])


def test_find_audio_files_empty_folder(tmp_path: Path) -> None:
    assert find_audio_files([tmp_path]) == []


def test_audio_extensions() -> None:
    assert {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au"} <= AUDIO_EXTENSIONS
    assert (".opus" in AUDIO_EXTENSIONS) == ("OPUS" in sf.available_subtypes("OGG"))
    assert all(ext == ext.lower() and ext.startswith(".") for ext in AUDIO_EXTENSIONS)


def test_import_pulls_in_no_heavy_dependencies() -> None:
    code = "import sys, mde.audio; print([m for m in ('torch', 'librosa', 'scipy') if m in sys.modules])"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("channels", [1, 2])
def test_resampling_block_by_block_gives_the_whole_signals_samples(tmp_path, channels: int) -> None:
    """load_audio resamples each decoded block through one stream resampler (the file is never held at its
    own rate): the same bits as resampling the whole decoded signal, over many blocks."""
    rng = np.random.default_rng(3)
    stereo = (0.2 * rng.standard_normal((44100 * 9, 2))).astype(np.float32)  # 9 s: about 3 blocks
    path = tmp_path / "long.wav"
    sf.write(path, stereo, 44100, subtype="FLOAT")
    whole, _ = load_audio(path, channels=channels)
    blockwise, rate = load_audio(path, sr=16000, channels=channels)
    assert rate == 16000 and np.array_equal(blockwise, resample(whole, 44100, 16000))
    bad = stereo.copy()
    bad[44100 * 7 + 5, 1] = np.nan  # in the third block: its position counts from the file's start
    sf.write(path, bad, 44100, subtype="FLOAT")
    with pytest.raises(InvalidSamplesError, match=f"NaN at sample {44100 * 7 + 5} \\(7.000 s\\)"):
        load_audio(path, sr=16000, channels=channels)
