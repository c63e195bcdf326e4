"""dB relative to the peak (librosa's ``power_to_db(ref=np.max)``) and multichannel windows in the C front end
and its torch twin: the third seed's stereo front end against librosa itself."""

from __future__ import annotations

import numpy as np
import pytest

from mde.errors import FrontendError
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import SCHINDLER, FrontendConfig


def stereo(n_windows: int, samples: int, seed: int = 0) -> np.ndarray:
    """(n_windows, 2, samples) noise whose right channel is 14 dB quieter than the left."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_windows, 2, samples)) * np.array([[0.1], [0.02]])).astype(np.float32)


def test_the_seeds_front_end_is_librosas_power_to_db_with_ref_max_over_both_channels():
    librosa = pytest.importorskip("librosa")
    window = stereo(1, 55_040)[0]
    ours = MelSpectrogram.from_config(SCHINDLER)(window[None])[0]
    power = librosa.feature.melspectrogram(y=window, sr=22050, n_fft=1024, hop_length=256, n_mels=128,
                                           pad_mode="reflect")  # its era's defaults: Slaney mels, reflect
    theirs = librosa.power_to_db(power, ref=np.max)  # amin 1e-10, top_db 80
    assert ours.shape == theirs.shape == (2, 128, 216)
    np.testing.assert_allclose(ours, theirs, atol=2e-4)
    assert ours.max() == 0.0 and ours[0].max() == 0.0 and ours[1].max() < -10  # one peak for both channels
    assert ours.min() >= -80.0


def test_each_window_has_its_own_peak_and_mono_batches_keep_theirs():
    windows = stereo(3, 8192, seed=1)
    windows[1] *= 10  # 20 dB louder: relative to its own peak, the same picture
    kernel = MelSpectrogram.from_config(SCHINDLER)
    out = kernel(windows)
    assert out.shape == (3, 2, 128, 33)
    np.testing.assert_allclose(out.max(axis=(1, 2, 3)), 0.0)
    relative_to_one = MelSpectrogram.from_config(SCHINDLER.with_(db_ref="one", top_db=None))(windows)
    peaks = relative_to_one.max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, np.maximum(relative_to_one, peaks - 80.0) - peaks, atol=1e-4)
    mono = kernel(windows[:, 0])  # (batch, samples): each signal its own peak
    assert mono.shape == (3, 128, 33)
    np.testing.assert_allclose(mono.max(axis=(1, 2)), 0.0)


def test_the_torch_twin_computes_the_same_for_stereo_windows():
    torch = pytest.importorskip("torch")
    from mde.trainer.frontend import TorchMelSpectrogram

    windows = stereo(2, 22050, seed=2)
    ours = MelSpectrogram.from_config(SCHINDLER)(windows)
    twin = TorchMelSpectrogram(SCHINDLER)(torch.from_numpy(windows)).numpy()
    assert twin.shape == ours.shape
    np.testing.assert_allclose(twin, ours, atol=5e-4)


def test_the_reference_needs_decibels_and_a_known_name():
    with pytest.raises(FrontendError, match="db_ref='max' needs log='db', got log='ln'"):
        FrontendConfig(log="ln", db_ref="max")
    with pytest.raises(FrontendError, match="db_ref must be 'one' or 'max', got 'peak'"):
        FrontendConfig(db_ref="peak")  # type: ignore[arg-type]
    with pytest.raises(FrontendError, match=r"input must have shape \(samples,\), \(batch, samples\) or"):
        MelSpectrogram.from_config(SCHINDLER)(np.zeros((1, 2, 3, 4096), np.float32))
    assert FrontendConfig.from_dict({k: v for k, v in SCHINDLER.to_dict().items() if k != "db_ref"}).db_ref == "one"
