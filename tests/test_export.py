"""``mde export``: a trained run, the seed checkpoints and MTT_musicnn to fp32 / fp16 / int8 model files,
checked against torch and against fp32 on ONNX Runtime's CPU provider, and loaded by the runtime."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from conftest import FCN05_CKPT, FCN29_CKPT, MSD_CLIP, MTAT_CLIP  # noqa: E402
from test_cli import assert_one_line_error, run_mde  # noqa: E402

from mde.export.examples import example_inputs  # noqa: E402
from mde.export.export import export_model  # noqa: E402
from mde.export.onnx_export import INPUT_NAME  # noqa: E402
from mde.runtime.extractor import load_model  # noqa: E402
from mde.runtime.package import ModelInfo, read_model_info  # noqa: E402


@pytest.fixture
def tiny_run(fcn05_run) -> Path:
    """fcn05 trained 1 epoch on 80 synthesized 2 s clips (the session's run, shared with test_train)."""
    return fcn05_run


def _session_outputs(path: Path, logmel: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT_NAME: logmel})))


def _assert_onnx_matches_torch(path: Path, arch: str, best: dict, inputs: list[np.ndarray],
                               outputs: set[str]) -> None:
    """The exported file's outputs equal the registry network's (weights from ``best``) on ``inputs``."""
    from mde.trainer.models import get_model_spec

    network = get_model_spec(arch).factory(n_tags=len(best["tag_names"]))
    network.load_state_dict(best["model"])
    network.eval()
    for logmel in inputs:
        got = _session_outputs(path, logmel)
        with torch.no_grad():
            want = network(torch.from_numpy(logmel))
        assert set(got) == outputs
        for key, value in got.items():
            np.testing.assert_allclose(value, want[key].numpy(), atol=1e-4, rtol=1e-4)


def test_a_trained_run_exports_with_torchs_outputs_and_its_metadata(tiny_run, tmp_path):
    result = export_model(tiny_run, tmp_path / "run.onnx")
    best = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)
    info = read_model_info(result.path)
    assert info == result.info
    assert ModelInfo.from_json(info.to_json()) == info
    assert (info.name, info.architecture, info.licence, info.precision) == ("run-fcn05", "FCN05", "unknown", "fp32")
    assert info.source == f"mde train run {tiny_run}"
    assert info.tag_names == tuple(best["tag_names"]) and info.metrics == best["valid"]
    assert info.outputs == {"embedding": 64, "tags": len(best["tag_names"])}
    assert max(result.torch_deltas.values()) < 1e-4

    inputs = [example_inputs(info, batch, seed=3) for batch in (1, 5)]  # the batch axis is dynamic
    _assert_onnx_matches_torch(result.path, "fcn05", best, inputs, {"embedding", "tags"})
    model = onnx.load(str(result.path))
    assert max(opset.version for opset in model.opset_import if opset.domain in ("", "ai.onnx")) >= 17
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)  # BASIC: portable ops only


@pytest.fixture(scope="module")
def tiny_musicnn_run(tmp_path_factory) -> Path:
    """musicnn (the registry model: mel patches, variable length) trained 1 epoch on 16 synthesized 3 s
    clips."""
    from mde.trainer.config import TrainConfig
    from mde.trainer.data.synth import synthesize_corpus
    from mde.trainer.loop import train

    root = tmp_path_factory.mktemp("tiny-musicnn-run")
    manifest = synthesize_corpus(root / "synth", 16, engine="numpy", seconds=3)
    train(TrainConfig(model="musicnn", dataset="manifest", data=str(manifest), out=str(root / "run-musicnn"),
                      epochs=1, batch_size=8, device="cpu", eval_crops=1, seed=0))
    return root / "run-musicnn"


def test_a_musicnn_training_run_exports_as_mel_patches_with_torchs_outputs(tiny_musicnn_run, shared_data,
                                                                           tmp_path):

    result = export_model(tiny_musicnn_run, tmp_path / "musicnn.onnx")
    best = torch.load(tiny_musicnn_run / "checkpoints" / "best.pt", weights_only=True)
    info = read_model_info(result.path)
    assert info == result.info
    assert (info.architecture, info.framing, info.precision) == ("musicnn", "mel_patches", "fp32")
    assert info.patch_frames == 187 and info.window_samples == 187 * info.frontend.hop_length
    assert info.variable_length and info.embedding_output == "penultimate"
    assert info.outputs == {"penultimate": 200, "tags": len(best["tag_names"])}
    assert max(result.torch_deltas.values()) < 1e-4

    full = example_inputs(info, 2, seed=5)
    inputs = [full[:1], full, np.ascontiguousarray(full[:, :, :120])]  # dynamic batch and frames
    _assert_onnx_matches_torch(result.path, "musicnn", best, inputs, {"penultimate", "tags"})
    embedded = load_model(result.path).embed(shared_data / MTAT_CLIP)
    assert embedded.embedding.shape[1] == 200 and np.isfinite(embedded.embedding).all()


def test_metadata_without_precision_reads_as_fp32(tiny_run, tmp_path):
    info = export_model(tiny_run, tmp_path / "run.onnx").info
    data = json.loads(info.to_json())
    del data["precision"]
    assert ModelInfo.from_json(json.dumps(data)).precision == "fp32"


def _three_precisions(source, out: Path, calib: Path, hop: float, name: str) -> dict[str, object]:
    """fp32 from ``source``, then fp16 and int8 from that fp32 file (the ONNX-source path)."""
    fp32 = export_model(source, out / f"{name}-fp32.onnx", calib=calib)
    return {
        "fp32": fp32,
        "fp16": export_model(fp32.path, out / f"{name}-fp16.onnx", fp16=True, calib=calib),
        "int8": export_model(fp32.path, out / f"{name}-int8.onnx", int8=True, calib=calib, calib_hop=hop),
    }


@pytest.fixture(scope="module")
def seed_exports(shared_data, tmp_path_factory) -> dict[str, dict[str, object]]:
    """FCN05 in three precisions (0.5 s windows, hop 0.25 s: ~230 calibration windows) and FCN29 in fp32 and
    fp16. FCN29's int8 needs 100 calibration windows of 29 s (26 s of export here, as long as the rest of
    this file): benchmarks/bench_precision.py measures it, and FCN05 runs the same int8 path in CI."""
    out = tmp_path_factory.mktemp("seed-exports")
    audio = shared_data / "audio"
    fcn29 = export_model(shared_data / FCN29_CKPT, out / "fcn29-fp32.onnx")
    return {
        "fcn05": _three_precisions(shared_data / FCN05_CKPT, out, audio, 0.25, "fcn05"),
        "fcn29": {"fp32": fcn29, "fp16": export_model(fcn29.path, out / "fcn29-fp16.onnx", fp16=True, calib=audio)},
    }


@pytest.fixture(scope="module")
def musicnn_exports(tmp_path_factory, shared_data, musicnn_home) -> dict[str, object]:
    """MTT_musicnn from the session's store (imported once), exported from the stored fp32 file."""
    stored = musicnn_home / "models" / "MTT_musicnn.onnx"
    return _three_precisions(stored, tmp_path_factory.mktemp("musicnn-exports"), shared_data / "audio", 0.5,
                             "musicnn")


def _check_precisions(results: dict[str, object], clip: Path, int8_min_cosine: float) -> None:
    """fp16 (and int8, when ``results`` has it) against fp32: the export's agreement figures, the precision
    the files declare, and the runtime's embeddings and tags of ``clip``."""
    fp16 = results["fp16"].agreement
    assert fp16.cosine_min >= 0.999 and fp16.tags_max_delta <= 1e-2
    if "int8" in results:
        int8 = results["int8"].agreement
        assert int8.cosine_min >= int8_min_cosine and int8.windows >= 100 and int8.top5_agreement >= 0.5
    assert {key: read_model_info(result.path).precision for key, result in results.items()} == {
        key: key for key in results}
    embedded = {key: load_model(result.path).embed(clip) for key, result in results.items()}
    reference = embedded["fp32"]
    for key, tolerance in (("fp16", 1e-2), ("int8", 0.15)):
        if key not in embedded:
            continue
        result = embedded[key]
        assert result.embedding.dtype == np.float32 and result.tags.dtype == np.float32
        assert result.embedding.shape == reference.embedding.shape
        np.testing.assert_allclose(result.tags, reference.tags, atol=tolerance)
        assert abs(result.mean_tags() - reference.mean_tags()).max() < tolerance / 2


@pytest.mark.parametrize("model", ["fcn05", "fcn29"])
def test_seed_models_in_fp16_and_int8_agree_with_fp32(seed_exports, shared_data, model):
    results = seed_exports[model]
    assert max(results["fp32"].torch_deltas.values()) < 1e-3
    _check_precisions(results, shared_data / MTAT_CLIP, 0.99)


def test_mtt_musicnn_in_fp16_and_int8_agrees_with_fp32(musicnn_exports, shared_data):
    assert musicnn_exports["fp32"].torch_deltas == {}  # an ONNX source: no torch network to compare
    assert musicnn_exports["fp32"].info.precision == "fp32"
    _check_precisions(musicnn_exports, shared_data / MSD_CLIP, 0.98)


def test_bad_inputs_give_one_line_errors(tiny_run, tmp_path):
    """Too little calibration audio through the command (one line, nothing written); the other refusals in
    process (MdeError, whose one-line form test_cli checks once)."""
    from mde.errors import MdeError

    with pytest.raises(MdeError, match="no-such-run"):
        export_model(tmp_path / "no-such-run", tmp_path / "x.onnx")
    with pytest.raises(MdeError, match="--int8 needs --calib"):
        export_model(tiny_run, tmp_path / "x.onnx", int8=True)
    clip = next((tiny_run.parent / "synth" / "clips").glob("*.wav"))  # 2 s: 94 windows of 0.5 s 16 ms apart
    fp32 = export_model(tiny_run, tmp_path / "run.onnx").path
    few = run_mde("export", fp32, "-o", tmp_path / "x.onnx", "--int8", "--calib", clip, cwd=tmp_path, home=tmp_path)
    assert_one_line_error(few, "at least 100 windows of 0.5 s; 1 usable file(s) (2.0 s of audio) give 94 at the "
                               "finest hop (0.016 s): add at least 0.6 s of audio in one more file")
    assert not (tmp_path / "x.onnx").exists()


def test_export_lays_out_a_triton_repository_and_refuses_tensorrt_without_it(tiny_run, tmp_path):
    proc = run_mde("export", tiny_run, "-o", tmp_path / "m.onnx", "--triton", tmp_path / "repo", "--max-batch", "8",
                   cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [folder] = (tmp_path / "repo").iterdir()
    config = (folder / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in config and 'platform: "onnxruntime_onnx"' in config
    assert (folder / "1" / "model.onnx").read_bytes() == (tmp_path / "m.onnx").read_bytes()
    if importlib.util.find_spec("tensorrt") is None:
        proc = run_mde("export", tiny_run, "-o", tmp_path / "t.onnx", "--tensorrt", cwd=tmp_path, home=tmp_path)
        assert_one_line_error(proc, "tensorrt", "mde's 'gpu' extra")
        assert not (tmp_path / "t.onnx").exists()
