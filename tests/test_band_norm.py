"""The per-band input standardisation (mde.runtime.band_norm): its metadata, the runtime's input stage and
the trainer's torch twin giving the same inputs, and the statistics the trainer fits on the train split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mde.errors import ModelError
from mde.export.examples import example_signal, example_windows
from mde.runtime.band_norm import BandNorm, apply_band_norm
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import MULTISCALE
from mde.runtime.inputs import input_stage
from mde.runtime.package import ModelInfo

torch = pytest.importorskip("torch")

from mde.trainer.band_stats import MIN_STD, fit_band_norm  # noqa: E402
from mde.trainer.frontend import TorchBandNorm, TorchMelSpectrogram  # noqa: E402

BANDS = MULTISCALE.n_mels
WINDOW = 32768  # samples at 11,025 Hz (3 s): a short window keeps the test fast


def band_norm(seed: int = 0) -> BandNorm:
    rng = np.random.default_rng(seed)
    return BandNorm.from_arrays(rng.uniform(-30.0, 0.0, BANDS), rng.uniform(0.5, 6.0, BANDS))


def info(**changes) -> ModelInfo:
    base = dict(
        name="m", architecture="MultiScaleCNN", source="test", licence="MIT", sample_rate=11025,
        window_samples=WINDOW, hop_samples=WINDOW, input_kind="logmel", framing="audio_windows",
        frontend=MULTISCALE, embedding_dim=500, tag_names=("a", "b"), outputs={"embedding": 500, "tags": 2},
        band_norm=band_norm(),
    )
    base.update(changes)
    return ModelInfo(**base)


def test_the_metadata_keeps_the_vectors_and_refuses_bad_ones_in_one_line():
    declared = info()
    assert ModelInfo.from_json(declared.to_json()) == declared
    assert ModelInfo.from_json(info(band_norm=None).to_json()).band_norm is None
    data = json.loads(declared.to_json())
    cases = {
        "every std must be positive, got 0.0": {"mean": [0.0] * BANDS, "std": [0.0] * BANDS},
        "need as many means as deviations": {"mean": [0.0] * BANDS, "std": [1.0] * (BANDS - 1)},
        "std must hold finite numbers": {"mean": [0.0] * BANDS, "std": [1.0] * (BANDS - 1) + ["x"]},
        "expected an object with 'mean' and 'std'": [1.0, 2.0],
        "127 bands for a front end of 128 mel bands": {"mean": [0.0] * 127, "std": [1.0] * 127},
    }
    for message, value in cases.items():
        with pytest.raises(ModelError) as caught:
            ModelInfo.from_json(json.dumps({**data, "band_norm": value}), "m.onnx")
        assert str(caught.value).startswith("m.onnx: bad metadata: band_norm: ") and message in str(caught.value)
        assert "\n" not in str(caught.value)
    with pytest.raises(ModelError, match="band_norm applies to logmel models only"):
        ModelInfo.from_json(json.dumps({**data, "input_kind": "waveform", "frontend": None}), "m.onnx")


def test_the_runtime_and_the_torch_twin_standardise_alike():
    norm = band_norm()
    frames = example_windows(WINDOW, 11025, 3)
    logmel = MelSpectrogram.from_config(MULTISCALE)(frames)
    ours = apply_band_norm(norm, logmel)
    expected = (logmel.astype(np.float64) - np.array(norm.mean)[:, None]) / np.array(norm.std)[:, None]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        twin = TorchBandNorm(norm)(torch.from_numpy(logmel)).numpy()
    np.testing.assert_array_equal(twin, ours)  # the same float32 arithmetic, bit for bit

    stage = input_stage(info())  # the whole input stage: C front end, then the band norm
    with torch.no_grad():
        torch_inputs = TorchBandNorm(norm)(TorchMelSpectrogram(MULTISCALE)(torch.from_numpy(frames))).numpy()
    runtime_inputs = stage.windows(frames)
    loud = logmel > logmel.max() - np.log(1e6)  # within 60 dB of the peak, where float32 agrees
    np.testing.assert_allclose(torch_inputs[loud], runtime_inputs[loud], atol=2e-3)
    np.testing.assert_array_equal(input_stage(info(band_norm=None)).windows(frames), logmel)


def test_a_mel_patch_model_standardises_its_patches():
    patch_info = info(framing="mel_patches", patch_frames=16, window_samples=16 * 512, hop_samples=16 * 512)
    stage = input_stage(patch_info)
    logmel = stage.whole(example_signal(11025, 11025))[None, :, :16]
    np.testing.assert_array_equal(stage.logmel_inputs(logmel), apply_band_norm(patch_info.band_norm, logmel))


def test_fitted_statistics_are_those_of_every_frame_of_the_train_clips():
    clips = [example_signal(n, 11025, seed) for seed, n in enumerate((40000, 25000, 52000))]
    clips.append(np.zeros(30000, np.float32))  # silence: ln(1e-20) in every band, shorter than the window
    frontend = TorchMelSpectrogram(MULTISCALE)
    counted = []
    norm = fit_band_norm(frontend, clips, 32768, torch.device("cpu"), counted.append)
    padded = [np.pad(c, (0, max(0, 32768 - len(c)))) for c in clips]
    frames = np.concatenate([MelSpectrogram.from_config(MULTISCALE)(c) for c in padded], axis=1).astype(np.float64)
    assert counted == [1, 2, 3, 4] and norm.n_bands == BANDS
    np.testing.assert_allclose(norm.mean, frames.mean(axis=1), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(norm.std, frames.std(axis=1), rtol=1e-3, atol=1e-3)
    silent = fit_band_norm(frontend, [np.zeros(40000, np.float32)], 32768, torch.device("cpu"))
    assert min(silent.std) == MIN_STD and silent.mean[0] == pytest.approx(np.log(1e-20), rel=1e-6)
    with pytest.raises(ValueError, match="no training clips"):
        fit_band_norm(frontend, [], 32768, torch.device("cpu"))


def test_a_waveform_or_mismatched_input_is_refused():
    with pytest.raises(ValueError, match="128 bands, the log-mel 96"):
        apply_band_norm(band_norm(), np.zeros((96, 10), np.float32))
    with pytest.raises(ModelError, match="127 bands for a front end of 128"):
        from mde.runtime.package import check_metadata

        check_metadata(info(band_norm=BandNorm((0.0,) * 127, (1.0,) * 127)), "m")


def test_a_stereo_norm_has_a_mean_and_std_per_channel_and_band():
    from mde.runtime.frontend_config import SCHINDLER

    rng = np.random.default_rng(0)
    left, right = (example_signal(30000, 22050, seed) * gain for seed, gain in ((0, 1.0), (1, 0.05)))
    clips = [np.stack([left, right]), np.stack([right, right])]  # (channels, samples)
    norm = fit_band_norm(TorchMelSpectrogram(SCHINDLER), clips, 22050, torch.device("cpu"))
    logmels = np.concatenate([MelSpectrogram.from_config(SCHINDLER)(c[None])[0] for c in clips], axis=-1)
    assert (norm.channels, norm.n_bands) == (2, 128)
    mean = np.array(norm.mean).reshape(2, 128)
    np.testing.assert_allclose(mean, logmels.mean(axis=-1), atol=2e-3)
    np.testing.assert_allclose(np.array(norm.std).reshape(2, 128), logmels.std(axis=-1), atol=2e-3)
    assert abs(mean[0].mean() - mean[1].mean()) > 3  # the quiet right channel has its own statistics
    assert BandNorm.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm
    assert "channels" not in band_norm().to_dict()  # mono metadata stays as it was
    batch = rng.standard_normal((3, 2, 128, 5)).astype(np.float32)
    expected = (batch - mean[None, :, :, None]) / np.array(norm.std).reshape(1, 2, 128, 1)
    np.testing.assert_allclose(apply_band_norm(norm, batch), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        twin = TorchBandNorm(norm)(torch.from_numpy(batch)).numpy()
    np.testing.assert_array_equal(twin, apply_band_norm(norm, batch))
    with pytest.raises(ValueError, match="2 channels, the log-mel has shape"):
        apply_band_norm(norm, batch[:, 0])
    with pytest.raises(ModelError, match="a whole number of bands per channel"):
        BandNorm((0.0,) * 3, (1.0,) * 3, channels=2)
