"""The Harmonic CNN encoder (mde.trainer.models.harmonic_cnn): filterbank, kapre-style STFT and dB,
harmonic layout, block shapes, parameter count, Keras initialisation, learnable Q and ONNX export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mde.trainer.models.harmonic_cnn import (
    HC_FEATURES,
    HC_RATE,
    HC_SAMPLES,
    HarmonicCNN,
    HarmonicSTFT,
    harmonic_center_frequencies,
    harmonic_filterbank,
    harmonic_level,
    highest_midi,
    magnitude_to_decibel,
)

N_FFT, HOP = 512, 256


def periodic_hann(n: int) -> np.ndarray:
    return np.array([0.5 - 0.5 * math.cos(2 * math.pi * i / n) for i in range(n)])


def reference_magnitude(signal: np.ndarray) -> np.ndarray:
    """kapre's STFT magnitude: 256 zeros before the signal, none after, frames of 512 every 256 samples,
    periodic Hann, |rfft|: (257, frames), float64."""
    padded = np.concatenate([np.zeros(N_FFT - HOP), signal])
    frames = 1 + (len(padded) - N_FFT) // HOP
    window = periodic_hann(N_FFT)
    columns = [np.abs(np.fft.rfft(padded[t * HOP:t * HOP + N_FFT] * window)) for t in range(frames)]
    return np.stack(columns, axis=1)


def reference_filterbank(q: float) -> np.ndarray:
    """The triangles evaluated filter by filter and bin by bin at 16 kHz, n_fft 512, 6 harmonics, 128
    centres per harmonic (MIDI 24 + i / 2), harmonic-major columns."""
    bank = np.zeros((N_FFT // 2 + 1, 6 * 128))
    for column in range(6 * 128):
        harmonic, index = divmod(column, 128)
        f0 = (harmonic + 1) * 440.0 * 2 ** ((24 + index / 2 - 69) / 12)
        bandwidth = (0.1079 * f0 + 24.7) / q
        for k in range(N_FFT // 2 + 1):
            frequency = k * 8000 / 256
            bank[k, column] = max(0.0, 1 - 2 * abs(frequency - f0) / bandwidth)
    return bank


def reference_decibel(x: np.ndarray) -> np.ndarray:
    """kapre MagnitudeToDecibel defaults on one example: 10 log10(max(x, 1e-5)), floored at max - 80."""
    db = 10 * np.log10(np.maximum(x, 1e-5))
    return np.maximum(db, db.max() - 80)


@pytest.fixture(scope="module")
def model() -> HarmonicCNN:
    torch.manual_seed(0)
    return HarmonicCNN().eval()


@pytest.fixture(scope="module")
def waveform() -> torch.Tensor:
    """Two 80,000-sample inputs: uniform noise and a quieter reversed copy."""
    noise = torch.rand(1, HC_SAMPLES, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return torch.cat([noise, -0.5 * noise.flip(1)])


@pytest.fixture(scope="module")
def outputs(model: HarmonicCNN, waveform: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """One forward pass: (front-end output, the seven blocks' outputs, features)."""
    captured: list[torch.Tensor] = []
    modules = [model.hstft, *model.blocks]
    handles = [m.register_forward_hook(lambda _m, _i, out: captured.append(out)) for m in modules]
    with torch.no_grad():
        features = model(waveform)
    for handle in handles:
        handle.remove()
    return captured[0], captured[1:], features


def test_center_frequencies_and_level() -> None:
    centers = harmonic_center_frequencies()
    assert highest_midi(HC_RATE, 6) == 88  # 1333.3 Hz is MIDI 88.19 -> E6
    assert harmonic_level() == 128 and centers.shape == (768,)
    assert centers[0] == pytest.approx(32.7032, abs=1e-4)  # C1
    top = 440.0 * 2 ** ((87.5 - 69) / 12)  # the top note E6 (88) itself is excluded
    assert centers[127] == pytest.approx(top) and top == pytest.approx(1280.975, abs=1e-3)
    assert centers[-1] == pytest.approx(6 * top) and centers[-1] < HC_RATE / 2
    np.testing.assert_allclose(centers[1:128] / centers[:127], 2 ** (1 / 24))  # half-semitone steps
    for harmonic in range(6):
        np.testing.assert_allclose(centers[harmonic * 128:(harmonic + 1) * 128], (harmonic + 1) * centers[:128])
    # librosa's hz_to_note rounds to the nearest note: 22050 / 12 Hz is MIDI 93.74 -> 94, not 93
    assert highest_midi(22050, 6) == 94 and harmonic_level(22050, 6, 2) == (94 - 24) * 2


@pytest.mark.parametrize("q", [1.0, 2.0])
def test_filterbank_matches_direct_computation(q: float) -> None:
    bank = harmonic_filterbank(HC_RATE, N_FFT, 6, 2, q)
    assert bank.dtype == np.float64 and bank.shape == (257, 768)
    np.testing.assert_allclose(bank, reference_filterbank(q), rtol=0, atol=1e-12)
    module = HarmonicSTFT(bw_q=q)
    np.testing.assert_allclose(module.filterbank().detach().numpy(), bank, rtol=0, atol=1e-5)


def test_stft_magnitude_matches_numpy_fft() -> None:
    signal = np.random.default_rng(2).uniform(-1, 1, 5000)
    stft = HarmonicSTFT()
    got = stft.magnitude(torch.from_numpy(signal).float().unsqueeze(0))[0].numpy()
    expected = reference_magnitude(signal)
    assert got.shape == expected.shape == (257, 1 + (5000 + 256 - 512) // 256)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * expected.max())


def test_stft_padding_at_begin_and_periodic_window() -> None:
    stft = HarmonicSTFT()
    impulses = torch.zeros(2, 2048)
    impulses[0, 0] = 1.0
    impulses[1, 255] = 1.0
    magnitude = stft.magnitude(impulses)
    assert magnitude.shape == (2, 257, 8)
    # sample 0 sits at index 256 of frame 0 (after 256 padded zeros): periodic Hann w[256] = 1
    np.testing.assert_allclose(magnitude[0, :, 0].numpy(), 1.0, rtol=1e-5, atol=1e-6)
    assert magnitude[0, :, 1].abs().max() < 1e-6  # frame 1 starts at sample 0, w[0] = 0
    # sample 255 is index 511 of frame 0: periodic w[511] = (1 - cos(2 pi / 512)) / 2, symmetric would be 0
    edge = 0.5 - 0.5 * math.cos(2 * math.pi * 511 / 512)
    np.testing.assert_allclose(magnitude[1, :, 0].numpy(), edge, rtol=1e-4, atol=0.0)


def test_decibel_floor_and_per_example_range() -> None:
    x = torch.tensor([[1e-7, 1e-5, 1e-3, 10.0, 1000.0], [1e-7, 1e-5, 1e-3, 10.0, 1e4]])
    db = magnitude_to_decibel(x)
    # example 0: max 30 dB, floor max(-50 (amin), 30 - 80) = -50
    np.testing.assert_allclose(db[0].numpy(), [-50.0, -50.0, -30.0, 10.0, 30.0], rtol=0, atol=1e-4)
    # example 1: its own max 40 dB clips everything below -40, independently of example 0
    np.testing.assert_allclose(db[1].numpy(), [-40.0, -40.0, -30.0, 10.0, 40.0], rtol=0, atol=1e-4)
    silence = HarmonicSTFT()(torch.zeros(1, 4096))
    assert torch.equal(silence, torch.full_like(silence, -50.0))


def test_harmonic_layout_channels_are_harmonics() -> None:
    signal = np.random.default_rng(3).uniform(-1, 1, 6000)
    stft = HarmonicSTFT()
    with torch.no_grad():
        x = torch.from_numpy(signal).float().unsqueeze(0)
        got = stft(x)[0].numpy()
        magnitude = stft.magnitude(x)[0].double().numpy()
    filtered = reference_filterbank(1.0).T @ magnitude  # (768, frames), harmonic-major
    expected = reference_decibel(filtered.reshape(6, 128, -1))  # channel h = filters h * 128 .. h * 128 + 127
    assert got.shape == (6, 128, 1 + (6000 + 256 - 512) // 256)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)
    # a 1 kHz tone peaks at the fundamental closest to 1000 / h Hz in channel h - 1
    tone = torch.sin(2 * math.pi * 1000 * torch.arange(8000) / HC_RATE).unsqueeze(0) * 0.5
    with torch.no_grad():
        profile = stft(tone)[0].mean(dim=2)
    for harmonic in (1, 2, 3):
        midi = 12 * math.log2(1000 / harmonic / 440) + 69
        assert int(profile[harmonic - 1].argmax()) == round((midi - 24) * 2)


def test_block_shapes_features_and_parameter_count(model: HarmonicCNN, outputs) -> None:
    front, maps, features = outputs
    frames = 1 + (HC_SAMPLES + 256 - 512) // 256
    assert frames == 312 and front.shape == (2, 6, 128, 312)
    # (channels, frequency, time): pools 2x2 five times, then (2 frequency, 3 time) twice
    expected = [(128, 64, 156), (128, 32, 78), (128, 16, 39), (256, 8, 19), (256, 4, 9), (256, 2, 3), (512, 1, 1)]
    assert [tuple(m.shape[1:]) for m in maps] == expected
    assert features.shape == (2, HC_FEATURES)
    assert torch.equal(features, torch.cat([m.amax(dim=(2, 3)) for m in maps[-3:]], dim=1))

    def conv(cin: int, cout: int) -> int:  # 3x3 kernel + bias, then BN gamma + beta
        return 9 * cin * cout + cout + 2 * cout

    blocks = [conv(6, 128), 2 * conv(128, 128), 2 * conv(128, 128), conv(128, 256),
              2 * conv(256, 256), 2 * conv(256, 256), conv(256, 512)]
    hand_count = 1 + 2 * 6 + sum(blocks)  # Q, input BN(6), blocks
    assert hand_count == 4_437_901
    assert sum(p.numel() for p in model.parameters()) == hand_count


def test_keras_initialisation(model: HarmonicCNN) -> None:
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 11
    for conv in convs:
        cout, cin, kh, kw = conv.weight.shape
        limit = math.sqrt(6 / (cin * kh * kw + cout * kh * kw))  # Glorot uniform
        assert conv.bias is not None and not conv.bias.any()
        assert 0.9 * limit < conv.weight.abs().max() <= limit
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 12 and all(n.eps == 1e-3 and n.momentum == 0.01 for n in norms)


def test_q_is_learnable() -> None:
    stft = HarmonicSTFT()
    assert isinstance(stft.bw_q, torch.nn.Parameter) and float(stft.bw_q) == 1.0
    assert "hstft.bw_q" in dict(HarmonicCNN(conv_channels=4).named_parameters())
    x = torch.rand(2, 4000, generator=torch.Generator().manual_seed(4)) * 2 - 1
    stft(x).sum().backward()
    assert stft.bw_q.grad is not None and torch.isfinite(stft.bw_q.grad).all() and stft.bw_q.grad.abs() > 0


def test_onnx_export_matches_torch(model: HarmonicCNN, waveform: torch.Tensor, outputs, tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "harmonic_cnn.onnx"
    torch.onnx.export(model, (waveform[:1],), str(path), opset_version=17, dynamo=False,
                      input_names=["waveform"], output_names=["features"],
                      dynamic_axes={"waveform": {0: "batch"}, "features": {0: "batch"}})
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Conv" in ops and not ops & {"STFT", "DFT"}
    expected = outputs[2].numpy()  # torch's features of both inputs; exported with a batch of one
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"waveform": waveform.numpy()})
    assert got.shape == (2, HC_FEATURES)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
