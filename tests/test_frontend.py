"""The C log-mel front end: parity with the seed and musicnn references, torch and librosa; threads; errors."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MTAT_CLIP

from mde.errors import FrontendError
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import FLOAT32_MIN_NORMAL, MUSICNN, SEED_FCN, FrontendConfig

FCN29_SAMPLES = 464000
FCN05_SAMPLES = 8000


@pytest.fixture(scope="module")
def mtat_clip(shared_data: Path) -> np.ndarray:
    """The MTAT clip decoded by soundfile: 16 kHz mono float32 (bit-exact with the references' input)."""
    import soundfile as sf

    samples, rate = sf.read(shared_data / MTAT_CLIP, dtype="float32")
    assert rate == 16000 and samples.ndim == 1
    return samples


def noisy_tone(n_samples: int, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A 440 Hz tone plus white noise, float32 in [-1, 1]."""
    t = np.arange(n_samples) / sample_rate
    noise = np.random.default_rng(seed).standard_normal(n_samples)
    return (0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * noise).astype(np.float32)


def torchaudio_htk_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> np.ndarray:
    """torchaudio.functional.melscale_fbanks(mel_scale='htk', norm=None), transcribed to float64 numpy."""
    all_freqs = np.linspace(0, sample_rate // 2, n_freqs)
    m_pts = np.linspace(2595.0 * np.log10(1.0 + f_min / 700.0), 2595.0 * np.log10(1.0 + f_max / 700.0), n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up))


def max_db_error(ours: np.ndarray, reference: np.ndarray, within_db_of_peak: float = 60.0) -> tuple[float, float]:
    """(max |delta| where the reference is within ``within_db_of_peak`` dB of its peak, max |delta| overall)."""
    delta = np.abs(ours.astype(np.float64) - reference)
    loud = reference > reference.max() - within_db_of_peak
    return float(delta[loud].max()), float(delta.max())


# ---------------------------------------------------------------- the seed's references


@pytest.mark.parametrize(
    ("reference_file", "n_samples", "n_frames"),
    [("joram_fcn29.npz", FCN29_SAMPLES, 1813), ("joram_fcn05.npz", FCN05_SAMPLES, 32)],
)
def test_seed_logmel_matches_reference(
    shared_data: Path, mtat_clip: np.ndarray, reference_file: str, n_samples: int, n_frames: int
) -> None:
    reference = np.load(shared_data / "reference" / reference_file)["logmel_first_f64"]
    ours = MelSpectrogram.from_config(SEED_FCN)(mtat_clip[:n_samples])
    assert ours.shape == reference.shape == (128, n_frames)
    assert ours.dtype == np.float32
    delta = np.abs(ours.astype(np.float64) - reference)
    assert delta[reference > -60.0].max() <= 0.01
    assert delta.max() <= 0.5


def test_filterbank_matches_seed_checkpoint(shared_data: Path) -> None:
    seed_fb = np.load(shared_data / "reference" / "joram_fcn29.npz")["mel_fb"]
    ours = MelSpectrogram.from_config(SEED_FCN).filterbank
    assert ours.shape == seed_fb.shape == (257, 128) and ours.dtype == np.float32
    # torchaudio built the seed's matrix in float32: its own rounding reaches ~1.4e-5 on weights <= 1
    np.testing.assert_allclose(ours, seed_fb, rtol=0, atol=3e-5)


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "n_mels", "f_min", "f_max"),
    [(16000, 512, 128, 0.0, 8000.0), (22050, 2048, 96, 20.0, 11025.0), (44100, 1024, 40, 300.0, 16000.0)],
)
def test_htk_filterbank_matches_torchaudio_formula(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float
) -> None:
    ours = MelSpectrogram(sample_rate, n_fft, n_fft // 4, n_mels, f_min=f_min, f_max=f_max).filterbank
    expected = torchaudio_htk_filterbank(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("norm", [None, "slaney"])
def test_filterbank_matches_librosa(htk: bool, norm: str | None) -> None:
    librosa = pytest.importorskip("librosa")
    ours = MelSpectrogram(22050, 1024, 256, 80, f_min=30.0, mel_scale="htk" if htk else "slaney", norm=norm).filterbank
    expected = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=30.0, htk=htk, norm=norm).T
    np.testing.assert_allclose(ours, expected, rtol=2e-7, atol=1e-9)


@pytest.mark.parametrize("n_fft", [256, 512, 4096])
def test_window_is_periodic_hann(n_fft: int) -> None:
    window = MelSpectrogram(16000, n_fft, n_fft // 2, 16).window
    expected = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    assert window.dtype == np.float32 and window.shape == (n_fft,)
    np.testing.assert_allclose(window, expected, rtol=0, atol=6e-8)


# ---------------------------------------------------------------- musicnn's recipe


def test_musicnn_logmel_matches_reference(shared_data: Path, mtat_clip: np.ndarray) -> None:
    """The reference is librosa (float32) -> float16 -> log10(1 + 10000 x) over the whole clip.

    Our float32 FFT differs from librosa's by float32 noise, so a mel value lying within that noise of a
    float16 rounding boundary can round to the neighbouring half. One half ulp is at most 2^-10 of the
    value, so such a flip moves log10(1 + C x) by at most log10(1 + 2^-10) = 4.24e-4. Everywhere else
    only the float32 log differs (a few ulps of values <= 6, i.e. < 2e-6).
    """
    reference = np.load(shared_data / "reference" / "joram_musicnn.npz")["logmel"]
    ours = MelSpectrogram.from_config(MUSICNN)(mtat_clip).T
    assert ours.shape == reference.shape == (1821, 96)
    delta = np.abs(ours - reference)
    flipped = delta > 2e-6
    assert delta.max() <= np.log10(1 + 2.0**-10) + 2e-6
    assert flipped.mean() < 1e-3  # 49 of 174816 values on the reference machine


# ---------------------------------------------------------------- librosa and torch recipes


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize("power", [1.0, 2.0])
@pytest.mark.parametrize("top_db", [None, 20.0])
def test_slaney_recipe_matches_librosa(pad_mode: str, power: float, top_db: float | None) -> None:
    librosa = pytest.importorskip("librosa")
    signal = noisy_tone(22050 * 2, 22050)
    ours = MelSpectrogram(
        22050, 2048, 512, 128, mel_scale="slaney", norm="slaney", pad_mode=pad_mode, power=power, top_db=top_db
    )(signal)
    mel = librosa.feature.melspectrogram(
        y=signal.astype(np.float64), sr=22050, n_fft=2048, hop_length=512, n_mels=128, htk=False, norm="slaney",
        center=True, pad_mode=pad_mode, power=power,
    )
    expected = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=top_db)
    if top_db is not None:
        assert (expected == expected.max() - top_db).any(), "the signal should reach the top_db clip"
    loud, overall = max_db_error(ours, expected)
    assert loud <= 1e-3 and overall <= 1e-2


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_natural_log_recipe_matches_librosa(pad_mode: str) -> None:
    """The multi-scale CNN's front end: librosa's defaults at 11,025 Hz, then ln of the power clipped at 1e-20;
    within float32 noise where the power is within 60 dB of its peak, and exactly ln(1e-20) in silence."""
    librosa = pytest.importorskip("librosa")
    signal = noisy_tone(11025 * 3, 11025)
    signal[11025:16000] = 0.0  # a stretch of silence: the floor
    ours = MelSpectrogram(11025, 2048, 512, 128, mel_scale="slaney", norm="slaney", pad_mode=pad_mode, log="ln",
                          amin=1e-20)(signal)
    power = librosa.feature.melspectrogram(y=signal.astype(np.float64), sr=11025, n_fft=2048, hop_length=512,
                                           n_mels=128, pad_mode=pad_mode)
    expected = np.log(np.clip(power, 1e-20, None))
    loud, _ = max_db_error(ours * 10 / np.log(10), expected * 10 / np.log(10))
    assert loud <= 1e-3  # dB
    silent = MelSpectrogram(11025, 2048, 512, 128, log="ln", amin=1e-20)(np.zeros(11025, np.float32))
    assert np.all(silent == np.float32(np.log(1e-20)))


def test_htk_recipe_matches_torch_stft() -> None:
    torch = pytest.importorskip("torch")
    signal = noisy_tone(16000 * 3, 16000, seed=3)
    ours = MelSpectrogram.from_config(SEED_FCN)(signal)
    window = torch.hann_window(512, periodic=True, dtype=torch.float64)
    spectrum = torch.stft(
        torch.from_numpy(signal.astype(np.float64)), 512, 256, window=window, center=True, pad_mode="reflect",
        return_complex=True,
    )
    filterbank = torchaudio_htk_filterbank(257, 0.0, 8000.0, 128, 16000)
    mel = filterbank.T @ (spectrum.abs() ** 2).numpy()
    expected = 10.0 * np.log10(np.maximum(mel, 1e-10))
    loud, overall = max_db_error(ours, expected)
    assert loud <= 1e-3 and overall <= 1e-2


def test_top_db_clips_each_signal_to_its_own_peak() -> None:
    loud = noisy_tone(16000, 16000)
    batch = np.stack([loud, loud * 1e-3])
    mel = MelSpectrogram(16000, 512, 256, 64, top_db=30.0)
    out = mel(batch)
    for spectrogram in out:
        assert spectrogram.min() == pytest.approx(spectrogram.max() - 30.0, abs=1e-5)
    assert out[0].max() - out[1].max() == pytest.approx(60.0, abs=0.01)


def test_logs_are_accurate_to_a_few_float32_ulps() -> None:
    """The kernel's vectorised log against float64 logs of the very mel values it was given."""
    n_samples = 64000
    signal = (noisy_tone(n_samples, 16000) * np.logspace(-4, 1, n_samples)).astype(np.float32)
    mel = MelSpectrogram(16000, 512, 256, 96, log=None)(signal).astype(np.float64)
    db = MelSpectrogram(16000, 512, 256, 96, log="db")(signal)
    log10p = MelSpectrogram(16000, 512, 256, 96, log="log10p")(signal)
    exact_db = 10 * np.log10(np.maximum(mel, np.float32(1e-10)))
    exact_log10p = np.log10(1 + 10000.0 * mel)
    assert exact_db.max() - exact_db.min() > 100  # a wide range of mantissas and exponents
    assert (np.abs(db - exact_db) <= 4 * np.spacing(np.abs(exact_db).astype(np.float32))).all()
    # 1 + C x is rounded to float32 first (numpy's float32 recipe): up to 2.6e-8 more
    assert (np.abs(log10p - exact_log10p) <= 6 * np.spacing(exact_log10p.astype(np.float32)) + 5e-8).all()


def test_float16_rounding_equals_numpy_cast() -> None:
    """fp16_round = numpy's float32 -> float16 cast (subnormal halves and overflow to inf included)."""
    n_samples = 64000
    gain = np.logspace(-5, 3, n_samples)  # mel values from below 2^-24 to far beyond 65504
    signal = (noisy_tone(n_samples, 16000) * gain).astype(np.float32)
    unrounded = MelSpectrogram(16000, 512, 256, 96, log=None)(signal)
    rounded = MelSpectrogram(16000, 512, 256, 96, log=None, fp16_round=True)(signal)
    with np.errstate(over="ignore"):
        expected = unrounded.astype(np.float16).astype(np.float32)
    assert np.isinf(expected).any() and (expected < 2.0**-14).any()
    np.testing.assert_array_equal(rounded, expected)
    log10p = MelSpectrogram(16000, 512, 256, 96, log="log10p", fp16_round=True)(signal)
    np.testing.assert_array_equal(np.isposinf(log10p), np.isinf(expected))  # log10(1 + C inf) = inf, as numpy


# ---------------------------------------------------------------- batches, threads and the GIL


def test_batch_equals_single_calls_and_threads_are_bit_exact() -> None:
    signals = np.stack([noisy_tone(12345, 16000, seed=s) for s in range(5)])  # 49 frames: a partial lane group
    serial = MelSpectrogram.from_config(SEED_FCN, threads=1)
    batch = serial(signals)
    assert batch.shape == (5, 128, SEED_FCN.n_frames(12345))
    for signal, expected in zip(signals, batch):
        np.testing.assert_array_equal(serial(signal), expected)
    for threads in (2, 3, 16):
        np.testing.assert_array_equal(MelSpectrogram.from_config(SEED_FCN, threads=threads)(signals), batch)
        np.testing.assert_array_equal(MelSpectrogram.from_config(SEED_FCN, threads=threads)(signals[2]), batch[2])


def test_one_instance_serves_several_python_threads() -> None:
    mel = MelSpectrogram.from_config(MUSICNN, threads=2)
    inputs = [noisy_tone(40000, 16000, seed=s) for s in range(6)]
    expected = [mel(x) for x in inputs]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = mel(inputs[i])

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for i, value in enumerate(expected):
        np.testing.assert_array_equal(results[i], value)


def test_compute_releases_the_gil() -> None:
    """While a ~0.1 s kernel call runs, the main thread keeps executing Python code: it spends about as
    much CPU time in that span as the kernel's thread does. Had the call held the GIL, the main thread
    would have sat blocked (no CPU) all through it. Per-thread CPU time, unlike wall time, depends little
    on what else the machine is running: the scheduler shares the cores fairly between the threads."""
    mel = MelSpectrogram(16000, 4096, 64, 128, threads=1)
    signals = np.stack([noisy_tone(160000, 16000, seed=s) for s in range(12)])
    span: dict[str, float] = {}

    def work() -> None:
        cpu = time.thread_time()
        span["start"] = time.perf_counter()
        mel(signals)
        span["end"] = time.perf_counter()
        span["cpu"] = time.thread_time() - cpu

    worker = threading.Thread(target=work)
    ticks = []  # (wall, this thread's CPU) seconds
    worker.start()
    while worker.is_alive():
        ticks.append((time.perf_counter(), time.thread_time()))
    worker.join()
    inside = [cpu for wall, cpu in ticks if span["start"] < wall < span["end"]]
    # about 1x with two free cores; a quarter leaves room for a busy machine (another test process's threads
    # on the same cores), while a call that held the GIL would leave the main thread next to nothing
    assert inside and inside[-1] - inside[0] > 0.25 * span["cpu"]


# ---------------------------------------------------------------- the public surface


def test_from_config_and_attributes() -> None:
    config = FrontendConfig(sample_rate=8000, n_fft=256, hop_length=128, n_mels=16, f_max=4000.0)
    mel = MelSpectrogram.from_config(config, threads=3)
    assert mel.config == config and mel.threads == 3
    assert mel.filterbank.shape == (129, 16) and mel.filterbank.dtype == np.float32
    assert MelSpectrogram(8000, 256, 128, 16, f_max=4000.0).config == config


def test_input_dtypes_and_layouts_are_normalised() -> None:
    mel = MelSpectrogram.from_config(SEED_FCN)
    signal = noisy_tone(8000, 16000)
    expected = mel(signal)
    np.testing.assert_array_equal(mel(signal.astype(np.float64)), expected)
    wide = np.zeros((2, 16000), np.float32)
    wide[0, ::2] = signal
    np.testing.assert_array_equal(mel(wide[0, ::2]), expected)  # non-contiguous
    np.testing.assert_array_equal(mel(np.asfortranarray(np.stack([signal, signal])))[1], expected)


def test_mel_powers_down_to_the_smallest_normal_float32_are_logged_accurately() -> None:
    """At the lowest amin (FLT_MIN, -379.3 dB) the log is exact to 1e-3 dB down to the floor, which it equals."""
    signal = (noisy_tone(8000, 16000) * 1e-18).astype(np.float32)
    mel = MelSpectrogram.from_config(SEED_FCN.with_(amin=FLOAT32_MIN_NORMAL))
    ours = mel(signal)
    spectrum = np.abs(librosa_free_stft(signal.astype(np.float64) * 1e18)) ** 2  # scaled to normal range
    with np.errstate(divide="ignore"):
        expected = 10 * np.log10(mel.filterbank.astype(np.float64).T @ spectrum) - 360.0
    deep = (expected > -379.0) & (expected < -360.0)
    assert deep.sum() > 100
    assert np.abs(ours - expected)[deep].max() <= 1e-3
    floored = expected < -379.4
    assert floored.sum() > 20
    assert (ours[floored] == np.float32(10 * np.log10(FLOAT32_MIN_NORMAL))).all()


def librosa_free_stft(signal: np.ndarray, n_fft: int = 512, hop: int = 256) -> np.ndarray:
    """Centred, reflect-padded periodic-Hann STFT (n_fft // 2 + 1, frames) in float64."""
    padded = np.pad(signal, n_fft // 2, mode="reflect")
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = padded[np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]]
    return np.fft.rfft(frames * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)), axis=1).T


def test_silence_is_the_floor() -> None:
    out = MelSpectrogram.from_config(SEED_FCN)(np.zeros(4000, np.float32))
    assert (out == np.float32(10 * np.log10(1e-10))).all()


def test_the_runtime_imports_no_torch_or_librosa(tmp_path) -> None:
    # Run outside the checkout so that the installed package (with its compiled kernel) is imported.
    modules = ("mde.runtime.frontend, mde.runtime.extractor, mde.runtime.batch, mde.runtime.writers, mde.cli.embed, "
               "mde.stream, mde.stream.live, mde.stream.outputs, mde.cli.stream")
    code = f"import sys, {modules}; print(sorted({{'torch', 'librosa'}} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("n_fft", [300, 8192, 128])
def test_unsupported_n_fft_is_a_frontend_error(n_fft: int) -> None:
    with pytest.raises(FrontendError, match="n_fft"):
        MelSpectrogram(16000, n_fft, 256, 64)


@pytest.mark.parametrize(("bad", "name"), [(np.nan, "NaN"), (np.inf, "+Inf"), (-np.inf, "-Inf")])
def test_non_finite_input_is_located(bad: float, name: str) -> None:
    mel = MelSpectrogram.from_config(SEED_FCN)
    signal = noisy_tone(8000, 16000)
    signal[1234] = bad
    with pytest.raises(FrontendError, match=f"^input contains {re.escape(name)} at sample 1234$"):
        mel(signal)
    batch = np.stack([noisy_tone(8000, 16000), signal])
    with pytest.raises(FrontendError, match=f"^input contains {re.escape(name)} at signal 1, sample 1234$"):
        mel(batch)


def test_too_short_input_names_the_minimum() -> None:
    mel = MelSpectrogram.from_config(SEED_FCN)
    assert mel(np.zeros(257, np.float32)).shape == (128, 2)
    with pytest.raises(FrontendError, match=r"256 samples.*at least 257"):
        mel(np.zeros(256, np.float32))
    with pytest.raises(FrontendError, match="no samples"):
        mel(np.zeros(0, np.float32))
    uncentred = MelSpectrogram(16000, 512, 256, 64, center=False)
    with pytest.raises(FrontendError, match="at least 512"):
        uncentred(np.zeros(511, np.float32))
    assert MelSpectrogram(16000, 512, 256, 64, pad_mode="constant")(np.zeros(1, np.float32)).shape == (64, 1)


@pytest.mark.parametrize(
    "bad_input", [np.zeros(1000, np.int16), np.zeros(1000, np.int64), np.zeros(1000, bool), np.zeros((2, 2, 2, 600))]
)
def test_non_float_or_badly_shaped_input_is_rejected(bad_input: np.ndarray) -> None:
    with pytest.raises(FrontendError):
        MelSpectrogram.from_config(SEED_FCN)(bad_input)


@pytest.mark.parametrize(
    "settings",
    [{"threads": 0}, {"log": "log10p", "top_db": 80.0}, {"top_db": -1.0}, {"power": 3.0}, {"f_max": 9000.0}],
)
def test_bad_settings_are_frontend_errors(settings: dict) -> None:
    with pytest.raises(FrontendError):
        MelSpectrogram(16000, 512, 256, 64, **settings)
