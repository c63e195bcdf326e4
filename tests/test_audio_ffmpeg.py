"""Files only FFmpeg reads (M4A/AAC), decoded through PyAV when it is installed (the decoders extra)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from test_cli import run_mde

pytest.importorskip("av")

from mde.audio import find_audio_files, load_audio
from mde.audio_ffmpeg import decode_ffmpeg
from mde.bench.decode_suite import agreement, write_aac
from mde.errors import CorruptAudioError, NotAudioError

RATE = 16000


def _music(seconds: float = 3.0, channels: int = 2) -> np.ndarray:
    """A log sweep from 100 Hz to 4 kHz (never periodic, so that its alignment is unambiguous), (frames,
    channels), left and right in different balance."""
    t = np.arange(int(seconds * RATE)) / RATE
    sweep = 0.5 * np.sin(2 * np.pi * np.cumsum(100 * np.exp(t * np.log(40) / seconds)) / RATE)
    return np.stack([sweep * (0.5 + 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture
def m4a(tmp_path):
    source = _music()
    return write_aac(source, RATE, tmp_path / "chord.m4a"), source


def test_an_m4a_decodes_to_what_was_encoded(m4a):
    path, source = m4a
    samples, rate = decode_ffmpeg(path)
    assert rate == RATE and samples.dtype == np.float32 and samples.shape[1] == 2
    match = agreement(source, samples)
    # FFmpeg's AAC encoder primes with 1024 samples, which a file muxed without an edit list does not mark
    # (iTunes-style files do, and FFmpeg then drops them): they decode as leading samples
    assert -1100 <= match["lag_samples"] <= 0 and 0 <= match["length_diff"] <= 2 * 1024 + 128
    assert match["snr_db"] > 20  # a lossy codec: close, not equal


def test_load_audio_reads_m4a_through_ffmpeg_and_mixes_and_resamples_it(m4a):
    path, _ = m4a
    mono, rate = load_audio(path, sr=8000)
    assert rate == 8000 and mono.ndim == 1
    stereo, _ = load_audio(path, channels=2)
    assert stereo.shape[1] == 2
    np.testing.assert_allclose(load_audio(path)[0], stereo.mean(axis=1), atol=1e-6)
    assert len(mono) == pytest.approx(len(stereo) / 2, abs=2)


def test_folders_list_m4a_files_and_libsndfile_formats_stay_with_libsndfile(m4a, tmp_path):
    path, source = m4a
    sf.write(tmp_path / "chord.flac", source, RATE, subtype="PCM_16")
    assert find_audio_files([tmp_path]) == [tmp_path / "chord.flac", path]
    flac, _ = load_audio(tmp_path / "chord.flac", channels=2)
    np.testing.assert_array_equal(flac, sf.read(tmp_path / "chord.flac", dtype="float32")[0])


def test_a_file_neither_decoder_reads_keeps_libsndfiles_error(tmp_path):
    junk = tmp_path / "junk.m4a"
    junk.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(range(256)) * 4)
    with pytest.raises((NotAudioError, CorruptAudioError), match=str(junk)):
        load_audio(junk)
    text = tmp_path / "notes.txt"
    text.write_text("not audio at all\n" * 100)
    with pytest.raises(NotAudioError, match="not a recognised audio format"):
        load_audio(text)


def test_a_cut_m4a_is_one_line_or_its_whole_frames(m4a, tmp_path):
    path, _ = m4a
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    try:
        samples, _ = load_audio(cut)
    except (NotAudioError, CorruptAudioError) as exc:
        assert str(exc).startswith(str(cut)) and "\n" not in str(exc)
    else:
        assert len(samples) > 0


def test_mde_embed_takes_a_folder_with_m4a_files(m4a, tiny_model, mde_home, tmp_path):
    path, _ = m4a
    ran = run_mde("embed", path.parent, "-m", tiny_model, "-o", tmp_path / "out", home=mde_home, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert len(np.load(tmp_path / "out" / "chord.npz")["timestamp"]) > 0
