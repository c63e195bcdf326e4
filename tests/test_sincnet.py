"""Music-SincNet's sinc filter bank (mde.trainer.models.sincnet) against a direct computation of its
formula, its initial mel-spaced edges, its passbands, its output length and its ONNX export."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mde.trainer.models.sincnet import MusicSinc, MusicSincNet, initial_band_edges  # noqa: E402

RATE = 16000


def direct_filter(low_hz: float, high_hz: float, taps: int) -> np.ndarray:
    """One filter tap by tap: the difference of two windowed ideal low-passes, peak-normalised first."""
    half = (taps - 1) // 2
    out = np.empty(taps)

    def low_pass(f: float, t: int) -> float:
        return 2 * f if t == 0 else 2 * f * math.sin(2 * math.pi * f * t) / (2 * math.pi * f * t)

    for i in range(taps):
        out[i] = low_pass(high_hz / RATE, i - half) - low_pass(low_hz / RATE, i - half)
    out /= out.max()
    return out * np.array([0.54 - 0.46 * math.cos(2 * math.pi * n / taps) for n in range(taps)])


def test_initial_edges_are_mel_spaced_with_the_source_ends():
    low, high = initial_band_edges(256, RATE)
    assert low[0] == 30.0 and high[-1] == RATE / 2 - 100
    mel = 2595 * np.log10(1 + np.concatenate([low[1:], high[-2:-1]]) / 700)
    assert np.allclose(np.diff(mel[:-1]), (2595 * np.log10(1 + 8000 / 700) - 80) / 255)
    assert low[1] == pytest.approx(700 * (10 ** (80 / 2595) - 1))  # filter 1 starts at point 0 (80 mel)
    bank = MusicSinc(256, 2501, RATE)
    edge_low, edge_high = bank.edges()
    assert edge_low[0].item() * RATE == pytest.approx(80.0, rel=1e-5)  # 30 Hz + the 50 Hz minimum
    # the last filter's low edge (the second-last mel point, 7,916.8 Hz) lies above its high one (7,900 Hz):
    # the source's abs() turns the negative width into 16.8 Hz, so that filter spans 7,966.8 - 8,033.7 Hz
    assert low[-1] > high[-1]
    expected_high = low[-1] + 50 + abs(high[-1] - low[-1]) + 50
    assert edge_high[-1].item() * RATE == pytest.approx(expected_high, rel=1e-5)
    assert edge_high[-2].item() * RATE == pytest.approx(high[-2] + 100, rel=1e-5)  # + both 50 Hz minimums


def test_filters_match_the_direct_formula_and_pass_their_band():
    bank = MusicSinc(8, 401, RATE)
    filters = bank.filters().detach().numpy()[:, 0]
    low, high = (e.detach().numpy()[:, 0] * RATE for e in bank.edges())
    for k in range(8):
        assert np.allclose(filters[k], direct_filter(low[k], high[k], 401), atol=1e-5)
    response = np.abs(np.fft.rfft(filters[3], 8192))
    freqs = np.fft.rfftfreq(8192, 1 / RATE)
    centre = response[np.argmin(np.abs(freqs - (low[3] + high[3]) / 2))]
    far = response[np.argmin(np.abs(freqs - min(4 * high[3], 7900)))]
    assert centre > 20 * far


def test_output_length_gradients_and_parameters():
    bank = MusicSinc(4, 2501, RATE)
    out = bank(torch.randn(1, 1, 5000))
    assert out.shape == (1, 4, 7500)  # samples + 2,500
    out.square().mean().backward()
    assert bank.low_hz_.grad is not None and bank.low_hz_.grad.abs().sum() > 0
    assert bank.band_hz_.grad is not None and bank.band_hz_.grad.abs().sum() > 0
    net = MusicSincNet()
    from mde.trainer.models.samplecnn import SampleCNNEncoder

    head_free = sum(p.numel() for p in SampleCNNEncoder("rese").parameters())
    first_conv_extra = (256 - 1) * 128 * 3  # conv0 takes 256 channels instead of 1
    assert sum(p.numel() for p in net.parameters()) == 2 * 256 + head_free + first_conv_extra


def test_the_bank_exports_to_onnx_and_agrees(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    bank = MusicSinc(16, 251, RATE).eval()
    x = torch.randn(2, 1, 3000)
    path = tmp_path / "sinc.onnx"
    torch.onnx.export(bank, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    want = bank(x).detach().numpy()
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
