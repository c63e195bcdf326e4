"""Decoding hardening (issue 11): decoder chatter kept off the terminal, symlink loops, absurd sample
values, RF64 files whose ds64 chunk claims 2**31 frames or more."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import MSD_CLIP, MTAT_CLIP, write_tone

from mde.audio import find_audio_files, load_audio
from mde.errors import AudioError, CorruptAudioError, InvalidSamplesError
from mde.runtime.extractor import load_model

_JUNK = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()


def _damaged_mp3(source: Path, target: Path, cut: bool = False) -> Path:
    """``source`` with 400 junk bytes at offset 20000 (libmpg123 resyncs and prints notes), and cut in half."""
    data = bytearray(source.read_bytes())
    data[20000:20400] = _JUNK
    target.write_bytes(bytes(data[: len(data) // 2] if cut else data))
    return target


def test_mp3_resync_notes_stay_off_stderr(shared_data, tmp_path, capfd):
    path = _damaged_mp3(shared_data / MTAT_CLIP, tmp_path / "junk.mp3")
    samples, rate = load_audio(path)
    assert rate == 16000 and len(samples) > 15 * rate
    assert "Illegal Audio-MPEG-Header" not in capfd.readouterr().err


def test_mp3_notes_are_folded_into_the_error_of_a_failed_decode(shared_data, tmp_path, capfd):
    path = _damaged_mp3(shared_data / MSD_CLIP, tmp_path / "cut.mp3", cut=True)
    with pytest.raises(CorruptAudioError) as caught:
        load_audio(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: truncated or damaged") and "\n" not in message
    assert "(decoder: " in message and "Illegal Audio-MPEG-Header" in message
    assert message.count("(decoder: ") == 1
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"junk\n")  # refused while opening, inside open_audio's capture nested in load_audio's
    with pytest.raises(AudioError) as caught:
        load_audio(junk)
    assert str(caught.value).count("(decoder: ") == 1 and "Illegal Audio-MPEG-Header" in str(caught.value)
    assert "Illegal Audio-MPEG-Header" not in capfd.readouterr().err


def test_embed_from_eight_threads_is_alike_and_quiet(shared_data, tiny_model, tmp_path, capfd):
    path = _damaged_mp3(shared_data / MTAT_CLIP, tmp_path / "junk.mp3")
    model = load_model(tiny_model)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: model.embed(path).embedding, range(8)))
    assert all(np.array_equal(r, results[0]) for r in results) and len(results[0]) > 30
    assert "Illegal Audio-MPEG-Header" not in capfd.readouterr().err
    print("still reaches the terminal", file=sys.stderr)
    assert "still reaches" in capfd.readouterr().err  # fd 2 is restored


def test_a_symlink_loop_in_a_folder_is_listed_and_fails_on_its_own(tmp_path):
    write_tone(tmp_path / "a.wav", 0.1)
    (tmp_path / "x.wav").symlink_to("x.wav")
    assert find_audio_files([tmp_path]) == [tmp_path / "a.wav", tmp_path / "x.wav"]
    with pytest.raises(AudioError, match=r"x\.wav: a symbolic link that loops or points to nothing$"):
        load_audio(tmp_path / "x.wav")


def test_embed_lists_a_symlink_loop_as_failed_and_goes_on(tiny_model, mde_home, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_tone(folder / "a.wav", 1.0)
    (folder / "x.wav").symlink_to("x.wav")
    env = {**os.environ, "MDE_HOME": str(mde_home), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "mde", "embed", str(folder), "-o", str(tmp_path / "out"), "--model", tiny_model],
        cwd=tmp_path, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
    )
    assert "Traceback" not in proc.stderr and proc.returncode == 1
    assert "a symbolic link that loops" in proc.stderr
    assert (tmp_path / "out" / "a.npz").is_file()


@pytest.mark.parametrize("value", [1e30, -3e7])
def test_samples_far_beyond_full_scale_are_refused(tmp_path, value):
    x = np.zeros(8000, np.float32)
    x[4000] = value
    path = tmp_path / "loud.wav"
    sf.write(path, x, 8000, subtype="FLOAT")
    with pytest.raises(InvalidSamplesError, match=r"loud\.wav: sample 4000 \(0\.500 s\) is .*rescale the audio$"):
        load_audio(path)


def test_arrays_far_beyond_full_scale_are_refused_and_no_nan_is_returned(tiny_model):
    model = load_model(tiny_model)
    x = np.zeros(8000, np.float32)
    x[10] = 1e30
    with pytest.raises(InvalidSamplesError, match="array: sample 10 is 1e"):
        model.embed(x)
    x[10] = 30000.0  # int16-scaled floats are still accepted
    assert np.isfinite(model.embed(x).embedding).all()


def _rf64(path: Path, claimed_frames: int) -> Path:
    """A 16-bit RF64 file whose ds64 chunk claims ``claimed_frames`` frames, cut to half its 22050."""
    sf.write(path, np.full(22050, 0.1, np.float32), 22050, format="RF64", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    ds64 = data.index(b"ds64")
    struct.pack_into("<QQQ", data, ds64 + 8, 2 * claimed_frames + 100, 2 * claimed_frames, claimed_frames)
    path.write_bytes(bytes(data[: len(data) // 2]))
    return path


@pytest.mark.parametrize("claimed", [2**31, 3 * 2**30, 2**32 + 10, 2**40])
def test_truncated_rf64_claiming_2_31_frames_or_more_is_corrupt(tmp_path, claimed):
    path = _rf64(tmp_path / "big.wav", claimed)
    with pytest.raises(CorruptAudioError, match=rf"big\.wav: truncated: the header claims {claimed} frames"):
        load_audio(path)
