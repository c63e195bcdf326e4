import numpy as np
import pytest
from conftest import write_tone

from mde.errors import InvalidSamplesError, MdeError, ModelError
from mde.runtime.extractor import ClipTooShort, load_model
from mde.runtime.frontend import MelSpectrogram


def test_embedding_is_what_the_graph_computes_on_the_c_front_end(tiny_model, tmp_path):
    path = write_tone(tmp_path / "tone.wav", seconds=2.3, rate=8000)
    model = load_model(tiny_model, threads=1, batch_size=2)
    result = model.embed(path)
    # 2.3 s with 0.5 s windows: 4 complete windows, the tail is dropped.
    np.testing.assert_allclose(result.timestamps, [0.0, 0.5, 1.0, 1.5])
    import soundfile as sf

    samples, _ = sf.read(path, dtype="float32")
    mel = MelSpectrogram.from_config(model.info.frontend)
    expected = np.stack([mel(samples[s : s + 4000]).mean(axis=-1) for s in (0, 4000, 8000, 12000)])
    np.testing.assert_allclose(result.embedding, expected, rtol=1e-5, atol=1e-4)
    assert result.tags.shape == (4, 3) and np.all((result.tags > 0) & (result.tags < 1))
    assert result.tag_names == ("tag0", "tag1", "tag2") and result.model == "tiny"
    assert not result.padded and result.duration == pytest.approx(2.3)


def test_hop_in_seconds_gives_overlapping_windows(tiny_model, tmp_path):
    path = write_tone(tmp_path / "tone.wav", seconds=1.0)
    result = load_model(tiny_model).embed(path, hop=0.25)
    np.testing.assert_allclose(result.timestamps, [0.0, 0.25, 0.5])
    with pytest.raises(MdeError, match="hop must be positive"):
        load_model(tiny_model).embed(path, hop=0.0)


def test_short_clip_is_padded_or_refused(tiny_model, tmp_path):
    path = write_tone(tmp_path / "short.wav", seconds=0.2)
    model = load_model(tiny_model)
    result = model.embed(path)
    assert result.padded and len(result.timestamps) == 1 and result.duration == pytest.approx(0.2)
    with pytest.raises(ClipTooShort, match=r"shorter than the 0\.5 s window"):
        model.embed(path, pad=False)


def test_arrays_are_resampled_to_the_model_rate(tiny_model):
    model = load_model(tiny_model)
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    at_16k = model.embed(tone, sr=16000)
    at_8k = model.embed(tone[::2].copy(), sr=8000)
    assert len(at_16k.timestamps) == len(at_8k.timestamps) == 2
    # A 440 Hz tone is well below both Nyquist rates: the same log-mel within resampling noise wherever
    # there is energy (near 4 kHz, at -90 dB, the two resampling filters' stop bands differ).
    audible = at_16k.embedding > -80
    assert audible.sum() > 20
    np.testing.assert_allclose(at_16k.embedding[audible], at_8k.embedding[audible], atol=0.5)
    with pytest.raises(InvalidSamplesError):
        model.embed(np.full(8000, np.nan, np.float32))
    with pytest.raises(MdeError, match="mono"):
        model.embed(np.zeros((2, 8000), np.float32))
    with pytest.raises(MdeError, match="arrays only"):
        model.embed("x.wav", sr=8000)


def test_layer_selection(tiny_model, tmp_path):
    path = write_tone(tmp_path / "tone.wav", seconds=0.5)
    model = load_model(tiny_model)
    result = model.embed(path, layer="tags")
    assert result.embedding.shape == (1, 3) and result.layer == "tags"
    with pytest.raises(ModelError, match="no layer 'nope'"):
        model.embed(path, layer="nope")
