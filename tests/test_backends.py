"""Inference backends: torch (the ONNX graph run by torch) matches ONNX Runtime; missing GPU pieces give
one-line errors; GPU paths (fp16 + CUDA graphs, TensorRT) run where a GPU is present."""

import importlib.util

import numpy as np
import pytest
from conftest import FCN05_CKPT, write_tone
from test_cli import assert_one_line_error, run_mde

from mde.errors import MdeError, MissingExtraError
from mde.runtime import store
from mde.runtime.backends.factory import check_backend, make_backend
from mde.runtime.extractor import load_model

torch = pytest.importorskip("torch")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def fcn05_path(shared_data, tmp_path_factory):
    """The seed's FCN05 checkpoint imported into a private store."""
    from mde.export.importers.seed import import_seed

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MDE_HOME", str(tmp_path_factory.mktemp("home")))
        path, _ = import_seed(shared_data / FCN05_CKPT)
    return path


def _compare(path, device="cpu", frames=None, atol=1e-5):
    ort_backend = make_backend(path, "ort", "cpu", threads=1)
    other = make_backend(path, "torch", device)
    info = ort_backend.info
    batch = np.random.default_rng(0).standard_normal(
        (5, info.frontend.n_mels, frames or info.window_samples // info.frontend.hop_length + 1)
    ).astype(np.float32)
    expected = ort_backend.run(batch, ort_backend.output_names)
    for _ in range(2):  # on CUDA: the first call captures the graph, the second replays it
        got = other.run(batch, other.output_names)
    assert other.output_names == ort_backend.output_names and other.info == info
    for name in expected:
        scale = float(np.abs(expected[name]).max())
        np.testing.assert_allclose(got[name], expected[name], atol=atol * max(scale, 1.0), err_msg=name)


def test_torch_backend_on_cpu_equals_ort_on_the_tiny_model(tiny_model):
    _compare(store.resolve(tiny_model), frames=31)


def test_torch_backend_on_cpu_equals_ort_on_fcn05(fcn05_path):
    _compare(fcn05_path)


def test_model_embeds_the_same_with_either_backend(tiny_model, tmp_path):
    path = write_tone(tmp_path / "tone.wav", seconds=1.7)
    ours = load_model(tiny_model, backend="torch").embed(path)
    reference = load_model(tiny_model).embed(path)
    np.testing.assert_allclose(ours.embedding, reference.embedding, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours.tags, reference.tags, rtol=1e-5, atol=1e-6)


def test_unknown_backend_or_device_is_refused():
    with pytest.raises(MdeError, match="unknown backend 'onnx'"):
        check_backend("onnx", "cpu")
    with pytest.raises(MdeError, match="unknown device 'tpu'"):
        check_backend("ort", "tpu")
    with pytest.raises(MdeError, match="CUDA only"):
        check_backend("tensorrt", "cpu")


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed")
def test_tensorrt_backend_without_tensorrt_names_the_extra(tiny_model, mde_home, tmp_path):
    with pytest.raises(MissingExtraError, match="mde's 'gpu' extra"):
        check_backend("tensorrt", "cuda")
    write_tone(tmp_path / "a.wav", 1.0)
    proc = run_mde("tag", tmp_path / "a.wav", "-m", tiny_model, "--backend", "tensorrt", "--device", "cuda",
                   cwd=tmp_path, home=mde_home)
    assert_one_line_error(proc, "'tensorrt' package", "mde's 'gpu' extra")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_device_without_cuda_is_a_one_line_error(tiny_model, mde_home, tmp_path):
    write_tone(tmp_path / "a.wav", 1.0)
    for backend, fragment in [("torch", "CUDA GPU"), ("ort", "onnxruntime-gpu")]:
        proc = run_mde("embed", tmp_path / "a.wav", "-m", tiny_model, "-o", tmp_path / "out", "--backend", backend,
                       "--device", "cuda", cwd=tmp_path, home=mde_home)
        assert_one_line_error(proc, fragment)


@needs_cuda
def test_torch_backend_fp16_cuda_graphs_match_ort(fcn05_path):
    _compare(fcn05_path, device="cuda", atol=2e-2)


@needs_cuda
@pytest.mark.skipif(not HAS_TENSORRT, reason="tensorrt is not installed")
def test_tensorrt_engine_builds_and_matches_ort(fcn05_path, tmp_path):
    from mde.runtime.backends.tensorrt_engine import build_engine, read_sidecar

    plan = build_engine(fcn05_path, max_batch=8, timing_cache=tmp_path / "cache")
    assert (tmp_path / "cache").is_file() and read_sidecar(plan)["max_batch"] == 8
    ort_backend = make_backend(fcn05_path)
    engine = make_backend(plan, "tensorrt", "cuda")
    batch = np.random.default_rng(0).standard_normal((11, 128, 32)).astype(np.float32)  # > max_batch: chunked
    expected, got = ort_backend.run(batch, ["embedding", "tags"]), engine.run(batch, ["embedding", "tags"])
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=2e-2 * max(float(np.abs(expected[name]).max()), 1))
