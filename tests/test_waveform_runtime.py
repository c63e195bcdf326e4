"""Waveform models (the graph takes samples, not a log-mel) everywhere a log-mel model works: metadata,
``embed`` (mono and stereo), ``stream``, export from a training run in fp32 / fp16 / int8, Triton, the
torch backend and ``mde bench models``.

The models are tiny Conv1d taggers registered here under test-only names: a mono one with the mu-law
transform (trained 1 epoch on the session's synthesized corpus) and a stereo one with SoundNet's gain
(its untrained weights saved as a run's best checkpoint).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from torch import nn  # noqa: E402

from mde.audio import resample  # noqa: E402
from mde.errors import AudioError, ModelError  # noqa: E402
from mde.export.export import export_model  # noqa: E402
from mde.export.onnx_export import WAVEFORM_INPUT_NAME, with_metadata  # noqa: E402
from mde.runtime.extractor import ClipTooShort, load_model  # noqa: E402
from mde.runtime.frontend_config import SEED_FCN  # noqa: E402
from mde.runtime.input_transform import IDENTITY, MULAW_PEAK, SOUNDNET_GAIN, apply_transform  # noqa: E402
from mde.runtime.package import ModelInfo, read_model_info  # noqa: E402
from mde.trainer.models.registry import register, registered_names  # noqa: E402

RATE = 8000
WINDOW = 4000  # 0.5 s at RATE
MONO, STEREO = "test-waveform-mono", "test-waveform-stereo"
EMBEDDING = 32


class TinyWaveNet(nn.Module):
    """Two strided Conv1d blocks over the samples, then mean and max over time: {'embedding': (batch, 32),
    'logits', 'tags': (batch, n_tags)}. Takes (batch, samples) or (batch, channels, samples)."""

    def __init__(self, n_tags: int = 50, channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(channels, 8, 32, stride=8), nn.BatchNorm1d(8), nn.ReLU(), nn.MaxPool1d(4),
            nn.Conv1d(8, EMBEDDING // 2, 5, stride=2), nn.BatchNorm1d(EMBEDDING // 2), nn.ReLU(),
        )
        self.dense = nn.Linear(EMBEDDING, n_tags)

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.features(waveform.unsqueeze(1) if waveform.dim() == 2 else waveform)
        embedding = torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)
        logits = self.dense(embedding)
        return {"embedding": embedding, "logits": logits, "tags": torch.sigmoid(logits)}


if MONO not in registered_names():
    register(MONO, architecture="TinyWaveNet", input_length=WINDOW, embedding_dim=EMBEDDING, waveform_rate=RATE,
             input_transform=MULAW_PEAK)(lambda **kwargs: TinyWaveNet(**kwargs))
    register(STEREO, architecture="TinyWaveNet2", input_length=WINDOW, embedding_dim=EMBEDDING, waveform_rate=RATE,
             input_transform=SOUNDNET_GAIN, channels=2)(lambda **kwargs: TinyWaveNet(channels=2, **kwargs))


@pytest.fixture(scope="module")
def clips(synth_corpus) -> Path:
    """The session's 80 synthesized 2 s clips at 16 kHz (resampled to the models' 8 kHz)."""
    return synth_corpus.parent / "clips"


@pytest.fixture(scope="module")
def mono_exports(synth_corpus, clips, tmp_path_factory) -> dict[str, object]:
    """The mono model trained 1 epoch, exported from its run in fp32, then fp16 and int8 from that file."""
    from mde.trainer.config import TrainConfig
    from mde.trainer.loop import train

    root = tmp_path_factory.mktemp("waveform")
    run = root / "run-wave"
    train(TrainConfig(model=MONO, dataset="manifest", data=str(synth_corpus), out=str(run), epochs=1,
                      batch_size=16, crops_per_clip=1, lr=3e-3, device="cpu", eval_crops=2, seed=0))
    fp32 = export_model(run, root / "wave.onnx", calib=clips)
    return {
        "run": run,
        "fp32": fp32,
        "fp16": export_model(fp32.path, root / "wave-fp16.onnx", fp16=True, calib=clips),
        "int8": export_model(fp32.path, root / "wave-int8.onnx", int8=True, calib=clips),
    }


@pytest.fixture(scope="module")
def stereo_export(tmp_path_factory) -> dict[str, object]:
    """The stereo model's seeded initial weights as a run's best checkpoint, exported from the run."""
    root = tmp_path_factory.mktemp("waveform-stereo")
    torch.manual_seed(0)
    network = TinyWaveNet(n_tags=3, channels=2).eval()
    (root / "run-stereo" / "checkpoints").mkdir(parents=True)
    torch.save({"model": network.state_dict(), "architecture": STEREO, "tag_names": ["a", "b", "c"], "valid": {}},
               root / "run-stereo" / "checkpoints" / "best.pt")
    return {"network": network, "fp32": export_model(root / "run-stereo", root / "stereo.onnx")}


def _network(run: Path) -> nn.Module:
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    network = TinyWaveNet(n_tags=len(best["tag_names"]))
    network.load_state_dict(best["model"])
    return network.eval()


def _torch_outputs(network: nn.Module, windows: np.ndarray, transform) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.numpy() for k, v in network(torch.from_numpy(apply_transform(transform, windows))).items()}


def _waveform_info(**changes) -> ModelInfo:
    base = dict(name="w", architecture="a", source="s", licence="l", sample_rate=RATE, window_samples=WINDOW,
                hop_samples=WINDOW, input_kind="waveform", framing="audio_windows", frontend=None,
                embedding_dim=EMBEDDING, tag_names=("a", "b"), outputs={"embedding": EMBEDDING, "tags": 2},
                input_transform=MULAW_PEAK)
    base.update(changes)
    return ModelInfo(**base)


def _stereo_clip(path: Path, seconds: float = 2.1, rate: int = 11025) -> Path:
    """Different tones on the left and right channels, 16-bit WAV at ``rate`` Hz."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(2).standard_normal((len(t), 2)) * 0.01
    left, right = 0.5 * np.sin(2 * np.pi * 330 * t), 0.3 * np.sign(np.sin(2 * np.pi * 97 * t))
    sf.write(path, (np.stack([left, right], axis=1) + noise).astype(np.float32), rate, subtype="PCM_16")
    return path


# ----------------------------------------------------------------------------------------- metadata


def test_waveform_metadata_round_trips_and_old_files_still_read():
    info = _waveform_info(channels=2, input_transform=SOUNDNET_GAIN)
    data = json.loads(info.to_json())
    assert data["input_transform"] == {"kind": "gain", "gain": 256.0, "mu": 255, "peak_normalize": False}
    assert data["channels"] == 2 and data["frontend"] is None
    assert ModelInfo.from_json(info.to_json()) == info
    del data["input_transform"]  # a waveform model without a transform takes the samples as they are
    assert ModelInfo.from_json(json.dumps(data)).input_transform == IDENTITY
    assert _waveform_info(input_transform=None).input_transform == IDENTITY
    logmel = ModelInfo(name="m", architecture="a", source="s", licence="l", sample_rate=16000, window_samples=8000,
                       hop_samples=8000, input_kind="logmel", framing="audio_windows", frontend=SEED_FCN,
                       embedding_dim=2, outputs={"embedding": 2}, tags_output=None)
    old = json.loads(logmel.to_json())
    del old["channels"], old["input_transform"]  # written before waveform models existed
    again = ModelInfo.from_json(json.dumps(old))
    assert again == logmel and again.channels == 1 and again.input_transform is None


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"frontend": SEED_FCN.with_(sample_rate=RATE, f_max=4000.0).to_dict()}, "frontend: a waveform model"),
    ({"framing": "mel_patches", "patch_frames": 31}, "framing: a waveform model cuts audio_windows"),
    ({"patch_frames": 31}, "patch_frames: a waveform model"),
    ({"channels": 3}, "channels must be one of 1, 2, got 3"),
    ({"channels": "2"}, "channels must be one of 1, 2, got '2'"),
    ({"input_transform": "mulaw"}, "input_transform: expected an object"),
    ({"input_transform": {"kind": "gain", "gain": -1.0}}, "input_transform: gain must be a positive"),
    ({"input_transform": {"kind": "alaw"}}, "input_transform: kind must be one of"),
    ({"input_transform": {"kind": "none", "scale": 2}}, "input_transform: unknown fields scale"),
    ({"input_kind": "logmel"}, "frontend: a logmel model needs a front end"),
])
def test_missing_or_contradictory_waveform_fields_give_one_line_naming_the_field(changes, fragment):
    data = json.loads(_waveform_info().to_json())
    data.update(changes)
    with pytest.raises(ModelError) as caught:
        ModelInfo.from_json(json.dumps(data), "m.onnx")
    message = str(caught.value)
    assert fragment in message and message.startswith("m.onnx: bad metadata") and "\n" not in message


def test_log_mel_models_refuse_waveform_fields():
    frontend = SEED_FCN.with_(sample_rate=RATE, f_max=4000.0)
    with pytest.raises(ModelError, match="input_transform applies to waveform models only"):
        ModelInfo.from_json(_waveform_info(input_kind="logmel", frontend=frontend).to_json())
    with pytest.raises(ModelError, match="channels: a 2-channel logmel model cuts audio_windows, got 'mel_patches'"):
        ModelInfo.from_json(_waveform_info(input_kind="logmel", frontend=frontend, input_transform=None,
                                           channels=2, framing="mel_patches", patch_frames=16).to_json())


def test_metadata_that_contradicts_the_waveform_graph_is_refused_on_load(mono_exports, stereo_export, tmp_path):
    mono, stereo = mono_exports["fp32"], stereo_export["fp32"]
    for source, changes, fragment in [
        (mono, {"window_samples": 3000, "hop_samples": 3000}, "window_samples is 3000 in the metadata, "
                                                               "the graph takes 4000 samples"),
        (mono, {"channels": 2}, "channels 2: a multichannel waveform model takes (batch, channels, samples)"),
        (stereo, {"channels": 1}, "channels 1: a mono waveform model takes (batch, samples)"),
    ]:
        path = tmp_path / "bad.onnx"
        path.write_bytes(with_metadata(source.path.read_bytes(), replace(source.info, **changes)))
        with pytest.raises(ModelError) as caught:
            read_model_info(path)
        assert fragment in str(caught.value) and "does not match the graph" in str(caught.value)


# ----------------------------------------------------------------------------------------- embed


def test_embed_cuts_windows_transforms_each_and_runs_the_trained_network(mono_exports, clips):
    fp32 = mono_exports["fp32"]
    info = fp32.info
    assert (info.input_kind, info.frontend, info.channels, info.input_transform) == ("waveform", None, 1, MULAW_PEAK)
    assert (info.sample_rate, info.window_samples, info.architecture) == (RATE, WINDOW, "TinyWaveNet")
    assert max(fp32.torch_deltas.values()) < 1e-4
    clip = sorted(clips.glob("*.wav"))[0]
    model = load_model(fp32.path, threads=1, batch_size=3)  # 4 windows: two inference calls
    result = model.embed(clip, hop=0.5)
    np.testing.assert_allclose(result.timestamps, [0.0, 0.5, 1.0, 1.5])
    samples = resample(sf.read(clip, dtype="float32")[0], 16000, RATE)
    windows = np.stack([samples[s : s + WINDOW] for s in (0, 4000, 8000, 12000)])
    want = _torch_outputs(_network(mono_exports["run"]), windows, MULAW_PEAK)
    np.testing.assert_allclose(result.embedding, want["embedding"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(result.tags, want["tags"], atol=1e-5)
    assert not result.padded and result.duration == pytest.approx(2.0)
    overlapping = model.embed(clip, hop=0.25)
    np.testing.assert_allclose(overlapping.timestamps, np.arange(7) * 0.25)
    np.testing.assert_allclose(overlapping.embedding[::2], result.embedding, atol=1e-5)
    assert model.embed(clip, layer="tags").embedding.shape == (4, len(info.tag_names))


def test_a_short_clip_is_zero_padded_to_one_window_or_refused(mono_exports):
    model = load_model(mono_exports["fp32"].path, threads=1)
    short = (0.5 * np.sin(np.arange(2000) / 5.0)).astype(np.float32)  # 0.25 s at 8 kHz
    result = model.embed(short, sr=RATE)
    assert result.padded and result.timestamps.tolist() == [0.0] and result.duration == pytest.approx(0.25)
    padded = np.concatenate([short, np.zeros(WINDOW - len(short), np.float32)])[None]
    want = _torch_outputs(_network(mono_exports["run"]), padded, MULAW_PEAK)
    np.testing.assert_allclose(result.embedding, want["embedding"], atol=1e-4, rtol=1e-4)
    with pytest.raises(ClipTooShort, match=r"shorter than the 0\.5 s window"):
        model.embed(short, sr=RATE, pad=False)


def test_a_stereo_model_keeps_both_channels_and_repeats_a_mono_file(stereo_export, tmp_path):
    info, network = stereo_export["fp32"].info, stereo_export["network"]
    assert (info.channels, info.input_transform, info.tag_names) == (2, SOUNDNET_GAIN, ("a", "b", "c"))
    clip = _stereo_clip(tmp_path / "stereo.wav")
    model = load_model(stereo_export["fp32"].path, threads=1)
    result = model.embed(clip)
    samples = resample(sf.read(clip, dtype="float32")[0], 11025, RATE)  # (samples, 2)
    windows = np.stack([samples[s : s + WINDOW].T for s in (0, 4000, 8000)])  # (3, 2, 4000)
    want = _torch_outputs(network, windows, SOUNDNET_GAIN)
    assert result.timestamps.tolist() == [0.0, 0.5, 1.0, 1.5]  # 2.1 s: 4 windows
    np.testing.assert_allclose(result.embedding[:3], want["embedding"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(result.tags[:3], want["tags"], atol=1e-5)
    left = samples[:, 0].copy()
    both = model.embed(np.stack([left, left], axis=1), sr=RATE)
    np.testing.assert_allclose(model.embed(left, sr=RATE).embedding, both.embedding, atol=1e-6)
    sf.write(tmp_path / "mono.wav", left, RATE, subtype="FLOAT")
    np.testing.assert_allclose(model.embed(tmp_path / "mono.wav").embedding, both.embedding, atol=1e-6)
    sf.write(tmp_path / "three.wav", np.zeros((8000, 3), np.float32), RATE)
    with pytest.raises(AudioError, match=r"three\.wav: 3 channels; a 2-channel model takes mono or 2-channel"):
        model.embed(tmp_path / "three.wav")


def test_mde_embed_writes_a_waveform_models_frames_and_padding_flag(mono_exports, clips, tmp_path):
    from test_cli import run_mde

    clip, short = sorted(clips.glob("*.wav"))[0], tmp_path / "short.wav"
    sf.write(short, sf.read(clip, dtype="float32")[0][:3200], 16000)  # 0.2 s
    proc = run_mde("embed", clip, short, "-m", mono_exports["fp32"].path, "-o", tmp_path / "out", cwd=tmp_path,
                   home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "short.wav: 0.20 s is shorter than one window: zero-padded to one window" in proc.stderr
    expected = load_model(mono_exports["fp32"].path, threads=1).embed(clip)
    with np.load(tmp_path / "out" / f"{clip.stem}.npz") as full, np.load(tmp_path / "out" / "short.npz") as padded:
        np.testing.assert_allclose(full["timestamp"], [0.0, 0.5, 1.0, 1.5])
        np.testing.assert_allclose(full["embedding"], expected.embedding, atol=1e-5)
        assert not full["padded"] and padded["padded"] and padded["embedding"].shape == (1, EMBEDDING)


# ----------------------------------------------------------------------------------------- stream


def test_streaming_a_waveform_model_gives_the_frames_of_embed(mono_exports, stereo_export, clips, tmp_path):
    from mde.stream import load_scales, stream_file

    cases = [(mono_exports["fp32"].path, sorted(clips.glob("*.wav"))[1], 0.3),
             (stereo_export["fp32"].path, _stereo_clip(tmp_path / "stereo.wav"), 0.2),
             (mono_exports["fp32"].path, _stereo_clip(tmp_path / "short.wav", seconds=0.3), None)]
    for path, clip, hop in cases:
        arrays, summary = stream_file(clip, load_scales([0.5], models=str(path), hops=hop, announce=lambda _: None))
        expected = load_model(path, threads=1).embed(clip, hop=hop)
        assert np.array_equal(arrays[0.5].timestamps, expected.timestamps)
        np.testing.assert_allclose(arrays[0.5].embedding, expected.embedding, rtol=0, atol=1e-5)
        np.testing.assert_allclose(arrays[0.5].tags, expected.tags, rtol=0, atol=1e-6)
        assert summary.scales[0].padded == expected.padded == (hop is None)


# ----------------------------------------------------------------------------------------- export


def test_fp16_and_int8_waveform_models_agree_with_fp32(mono_exports, clips):
    fp16, int8 = mono_exports["fp16"].agreement, mono_exports["int8"].agreement
    assert fp16.cosine_min >= 0.999 and fp16.tags_max_delta <= 1e-2
    assert int8.cosine_min >= 0.98 and int8.windows >= 100
    clip = sorted(clips.glob("*.wav"))[2]
    embedded = {key: load_model(mono_exports[key].path, threads=1).embed(clip) for key in ("fp32", "fp16", "int8")}
    for key, tolerance in (("fp16", 1e-2), ("int8", 0.15)):
        assert read_model_info(mono_exports[key].path).precision == key
        assert embedded[key].info.input_transform == MULAW_PEAK
        np.testing.assert_allclose(embedded[key].tags, embedded["fp32"].tags, atol=tolerance)


def test_the_triton_entry_declares_the_waveform_input(mono_exports, stereo_export, tmp_path):
    from mde.export.triton import write_triton_repository

    for export, dims in ((mono_exports["fp32"], [WINDOW]), (stereo_export["fp32"], [2, WINDOW])):
        config = (write_triton_repository(export.path, tmp_path / "repo") / "config.pbtxt").read_text()
        assert f'input [{{ name: "{WAVEFORM_INPUT_NAME}" data_type: TYPE_FP32 dims: {json.dumps(dims)} }}]' in config
        assert f'output [{{ name: "embedding" data_type: TYPE_FP32 dims: [{EMBEDDING}] }}]' in config


def test_the_torch_backend_runs_waveform_graphs_as_onnx_runtime_does(mono_exports, stereo_export, clips, tmp_path):
    for path, clip in ((mono_exports["fp32"].path, sorted(clips.glob("*.wav"))[3]),
                       (stereo_export["fp32"].path, _stereo_clip(tmp_path / "stereo.wav"))):
        ort_result = load_model(path, threads=1).embed(clip, hop=0.25)
        torch_result = load_model(path, threads=1, backend="torch").embed(clip, hop=0.25)
        np.testing.assert_allclose(torch_result.embedding, ort_result.embedding, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(torch_result.tags, ort_result.tags, atol=1e-5)


class RecurrentWaveNet(nn.Module):
    """A strided Conv1d, then music2vec's stacked LSTM (here bidirectional) and a GRU over its steps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 8, 64, stride=32)
        self.lstm = nn.LSTM(8, 6, num_layers=2, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(12, 5)

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        steps = torch.relu(self.conv(waveform.unsqueeze(1))).transpose(1, 2)  # (batch, steps, 8)
        lstm, _ = self.lstm(steps)
        gru, _ = self.gru(lstm.transpose(0, 1))  # (steps, batch, 5)
        return {"embedding": gru[-1]}


def test_the_torch_backend_runs_recurrent_waveform_layers(tmp_path):
    from mde.export.examples import example_inputs
    from mde.export.onnx_export import export_onnx
    from mde.runtime.backends.ort import OrtBackend
    from mde.runtime.backends.torch_graph import recurrent_problem
    from mde.runtime.backends.torch_runner import TorchBackend

    torch.manual_seed(0)
    info = _waveform_info(embedding_dim=5, tag_names=(), tags_output=None, outputs={"embedding": 5})
    path = tmp_path / "recurrent.onnx"
    path.write_bytes(export_onnx(RecurrentWaveNet(), example_inputs(info, 2), info))
    batch = example_inputs(info, 3, seed=4)
    want = OrtBackend(path, threads=1).run(batch, ["embedding"])["embedding"]
    got = TorchBackend(path, threads=1).run(batch, ["embedding"])["embedding"]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert recurrent_problem("LSTM", ["x", "w", "r", "b", "lengths"], {}) == "sequence_lens"
    assert recurrent_problem("GRU", ["x", "w", "r"], {"linear_before_reset": 0}) == "linear_before_reset 0"
    assert recurrent_problem("LSTM", ["x", "w", "r"], {"activations": [b"Relu", b"Tanh", b"Tanh"]}) == \
        "activations Relu, Tanh, Tanh"


def test_tensorrt_profiles_span_the_waveform_input():
    from types import SimpleNamespace

    from mde.runtime.backends.tensorrt_engine import _profile_shapes

    mono = _profile_shapes(SimpleNamespace(shape=(-1, WINDOW)), _waveform_info(), 32)
    assert mono == ((1, WINDOW), (8, WINDOW), (32, WINDOW))
    stereo = _profile_shapes(SimpleNamespace(shape=(-1, 2, -1)), _waveform_info(channels=2, variable_length=True), 16)
    assert stereo == ((1, 2, WINDOW // 4), (8, 2, WINDOW), (16, 2, 4 * WINDOW))


def test_bench_models_measures_a_waveform_model(mono_exports, clips, tmp_path, mde_home):
    from mde.bench.suites import BenchSettings, run_suite

    run_suite("models", BenchSettings(out=tmp_path / "bench", threads=1, quick=True, rounds=1, audio=clips,
                                      models=(str(mono_exports["fp32"].path),), announce=lambda _: None))
    record = json.loads((tmp_path / "bench" / "bench_models_cpu.json").read_text())
    rows = record["results"]
    assert {"ORT fp32", "torch eager", "ORT fp16", "ORT int8"} <= {row["path"] for row in rows}, record["skipped"]
    assert {row["batch"] for row in rows} == {1, 2}
    assert all(row["window_s"] == 0.5 and row["flops"] > 0 for row in rows)
