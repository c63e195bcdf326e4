"""--offset / --duration: a span of a file is decoded from where it starts (libsndfile seeks there) and
embeds as the same samples cut from the whole decode would; timestamps count from the file's start."""

import numpy as np
import pytest
import soundfile as sf
from conftest import write_tone
from test_cli import assert_one_line_error, run_mde

from mde.audio import load_audio
from mde.errors import AudioError, MdeError
from mde.runtime.extractor import load_model


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_a_span_decodes_the_samples_of_the_whole_decode(tmp_path, fmt, subtype):
    rate = 22050
    signal = np.random.default_rng(0).uniform(-0.5, 0.5, (rate * 4, 2)).astype(np.float32)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, signal, rate, format=fmt, subtype=subtype)
    whole, _ = load_audio(path)
    span, got_rate = load_audio(path, offset=1.5, duration=0.75)
    start = round(1.5 * rate)
    assert got_rate == rate and len(span) == round(0.75 * rate)
    np.testing.assert_array_equal(span, whole[start : start + len(span)])
    tail, _ = load_audio(path, offset=3.0)
    np.testing.assert_array_equal(tail, whole[round(3.0 * rate):])


def test_embedding_a_span_equals_embedding_its_cut_samples(tiny_model, tmp_path):
    path = write_tone(tmp_path / "tone.wav", seconds=6.0, rate=8000)
    model = load_model(tiny_model)
    native, rate = load_audio(path)
    got = model.embed(path, offset=1.25, duration=3.0)
    start = round(1.25 * rate)
    expected = model.embed(native[start : start + 3 * rate], sr=rate)
    np.testing.assert_array_equal(got.embedding, expected.embedding)
    np.testing.assert_allclose(got.timestamps, expected.timestamps + 1.25)
    assert got.duration == pytest.approx(3.0, abs=1e-3)
    from_array = model.embed(native, sr=rate, offset=1.25, duration=3.0)
    np.testing.assert_array_equal(from_array.embedding, expected.embedding)


def test_bad_spans_are_refused(tiny_model, tmp_path):
    path = write_tone(tmp_path / "tone.wav", seconds=2.0)
    with pytest.raises(AudioError, match="offset 5 s is at or past the end of the file"):
        load_audio(path, offset=5.0)
    with pytest.raises(MdeError, match="duration must be above 0 s"):
        load_model(tiny_model).embed(path, duration=0.0)
    with pytest.raises(MdeError, match="offset must be 0 s or more"):
        load_audio(path, offset=float("nan"))


def test_embed_cli_records_the_span_and_recomputes_for_another(tiny_model, mde_home, tmp_path):
    path = write_tone(tmp_path / "tone.wav", seconds=5.0)
    out = tmp_path / "out"
    first = run_mde("embed", path, "-m", tiny_model, "-o", out, "--offset", "1", "--duration", "2",
                    cwd=tmp_path, home=mde_home)
    assert first.returncode == 0, first.stderr
    with np.load(out / "tone.npz") as data:
        assert float(data["offset"]) == 1.0 and float(data["max_duration"]) == 2.0
        assert data["timestamp"][0] == pytest.approx(1.0)
    again = run_mde("embed", path, "-m", tiny_model, "-o", out, "--offset", "1", "--duration", "2",
                    cwd=tmp_path, home=mde_home)
    assert "1 skipped" in again.stderr
    other = run_mde("embed", path, "-m", tiny_model, "-o", out, cwd=tmp_path, home=mde_home)
    assert "1 embedded" in other.stderr and "offset 1 s, now 0 s" in other.stderr
    past = run_mde("tag", path, "-m", tiny_model, "--offset", "9", cwd=tmp_path, home=mde_home)
    assert_one_line_error(past, "offset 9 s is at or past the end")
