"""Music-SincNet's sinc filter bank (mde.trainer.models.sincnet) against a direct computation of its
formula, its initial mel-spaced edges, its passbands, its output length and its ONNX export."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mde.trainer.models.sincnet import MS_RATE, MS_SAMPLES, MusicSinc, MusicSincNet, initial_band_edges  # noqa: E402

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


def test_the_fft_path_is_the_direct_convolution():
    """Training runs the bank through the FFT; it gives the zero-padded direct convolution (float64 here) for a
    batch of several signals, to float32 rounding of the products' sums."""
    bank = MusicSinc(64, 2501, RATE)
    x = torch.randn(3, 1, 3000)
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        want = torch.nn.functional.conv1d(x.double(), bank.filters().double(), padding=2500)
        got = bank(x)
    assert got.shape == want.shape == (3, 64, 5500)
    assert float((got.double() - want).abs().max()) < 1e-5 * float(want.abs().max())


def test_the_bank_exports_to_onnx_and_agrees(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    bank = MusicSinc(16, 251, RATE).eval()
    x = torch.randn(2, 1, 3000)
    path = tmp_path / "sinc.onnx"
    torch.onnx.export(bank, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    want = bank(x).detach().numpy()
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# The real bank's initial edges in Hz after the 50 Hz minimums, worked out by hand from the source's recipe:
# mel points m_j = 80 + j (2595 log10(1 + 8000 / 700) - 80) / 255, f_j = 700 (10^(m_j / 2595) - 1), so
# f_0 = 51.496, f_1 = 58.748, f_2 = 66.070, f_253 = 7834.486, f_254 = 7916.845, f_255 = 8000 (the Nyquist).
# Filter k spans f_(k-1) + 50 to f_(k+1) + 100 (30 Hz for f_-1, 7,900 Hz for f_256); the last one's width
# 7,900 - 7,916.845 is negative and abs() makes it 16.845 Hz.
REAL_LOW_HZ = {0: 80.0, 1: 101.4958, 2: 108.7479, 254: 7884.4856, 255: 7966.8454}
REAL_HIGH_HZ = {0: 158.7479, 1: 166.0700, 253: 8016.8454, 254: 8100.0, 255: 8033.6908}


def hand_edges_hz(k: int) -> tuple[float, float]:
    """Filter k's (low, high) edges in Hz of the real 256-filter bank at 16 kHz, from the mel formula."""
    top_mel = 2595 * math.log10(1 + 8000 / 700)

    def point(j: int) -> float:
        return 700 * (10 ** ((80 + j * (top_mel - 80) / 255) / 2595) - 1)

    b1 = 30.0 if k == 0 else point(k - 1)
    b2 = 7900.0 if k == 255 else point(k + 1)
    return b1 + 50, b1 + 50 + abs(b2 - b1) + 50


def test_the_real_bank_starts_at_the_hand_worked_edges_and_taps():
    bank = MusicSinc()
    low, high = (e.detach().double().numpy()[:, 0] * RATE for e in bank.edges())
    for k, hz in REAL_LOW_HZ.items():
        assert low[k] == pytest.approx(hz, abs=2e-3)
    for k, hz in REAL_HIGH_HZ.items():
        assert high[k] == pytest.approx(hz, abs=2e-3)
    filters = bank.filters().detach().numpy()[:, 0]
    assert filters.shape == (256, 2501)
    for k in (0, 1, 100, 254, 255):
        assert np.allclose(filters[k], direct_filter(*hand_edges_hz(k), 2501), atol=2e-5)


def test_every_filter_peaks_at_one_in_its_middle_tap_before_the_window():
    bank = MusicSinc()
    window = np.array([0.54 - 0.46 * math.cos(2 * math.pi * n / 2501) for n in range(2501)])
    assert np.allclose(bank.window.numpy()[0], window, atol=1e-7)
    unwindowed = bank.filters().detach().double().numpy()[:, 0] / window
    assert np.allclose(unwindowed.max(axis=1), 1.0, atol=1e-6)
    assert (unwindowed.argmax(axis=1) == 1250).all()


def test_a_real_filter_passes_its_band_and_stops_twice_its_high_edge():
    bank = MusicSinc()
    low, high = (e.detach().numpy()[:, 0] * RATE for e in bank.edges())
    filters = bank.filters().detach().numpy()[:, 0]
    freqs = np.fft.rfftfreq(16000, 1 / RATE)  # 1 Hz bins
    for k in (20, 100, 180):
        gain = np.abs(np.fft.rfft(filters[k], 16000))
        centre = gain[round(float(low[k] + high[k]) / 2)]
        assert centre > 1000 * gain[round(2 * float(high[k]))]  # 60 dB down at twice the high edge
        assert centre > 1000 * gain[round(float(low[k]) / 2)]  # and at half the low edge
        inside = gain[(freqs > low[k] + 20) & (freqs < high[k] - 20)]
        assert inside.min() > 0.9 * centre  # flat across the band, away from the ~10 Hz transitions


def rese_block_parameters(cin: int, cout: int) -> int:
    conv_bn = 3 * cin * cout + cout + 2 * cout + 3 * cout * cout + cout + 2 * cout
    shortcut = cin * cout + cout + 2 * cout if cin != cout else 0
    excitation = 2 * cout * 16 * cout + 16 * cout + cout
    return conv_bn + shortcut + excitation


def test_music_sincnet_has_the_hand_counted_parameters():
    widths = [128, 128, 256, 256, 256, 256, 256, 256, 512]
    total = 2 * 256  # each filter's low edge and width
    total += 256 * 128 * 3 + 128 + 2 * 128  # conv0 over the 256 filter outputs, its BN
    total += sum(rese_block_parameters(cin, cout) for cin, cout in zip([128, *widths], widths))
    total += 1024 * 1024 + 1024 + 2 * 1024  # dense1 over the 256 + 256 + 512 maxima, its BN; no tag head
    assert sum(p.numel() for p in MusicSincNet().parameters()) == total


def test_a_crop_reaches_the_ninth_block_with_one_step():
    net = MusicSincNet().eval()
    steps: dict[str, int] = {}
    for name, module in [("sinc", net.sinc), *net.samplecnn.named_children()]:
        module.register_forward_hook(lambda _m, _i, out, name=name: steps.__setitem__(name, out.shape[-1]))
    with torch.no_grad():
        features = net(torch.randn(1, MS_SAMPLES))
    assert MS_SAMPLES == 59049 and MS_RATE == 16000
    assert steps["sinc"] == 61549  # 59,049 + 2 x 1,250 zero padding + 2 x 1,250 'same' padding - 2,500
    assert steps["conv0"] == 20516  # (61,549 - 3) // 3 + 1
    assert [steps[f"layer{i}"] for i in range(1, 10)] == [6838, 2279, 759, 253, 84, 28, 9, 3, 1]
    assert features.shape == (1, 1024) and torch.isfinite(features).all()
