"""Importing the first seed's checkpoints into the model store (checkpoint -> torch -> ONNX + metadata)."""

from __future__ import annotations

import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from conftest import FCN05_CKPT, FCN29_CKPT

from mde.errors import CheckpointError, ModelError
from mde.runtime.frontend_config import SEED_FCN
from mde.runtime.package import read_model_info
from mde.tags import MTAT_TOP50

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from mde.export.examples import example_windows  # noqa: E402
from mde.export.importers.checkpoint import read_checkpoint, state_dict_from_checkpoint  # noqa: E402
from mde.export.importers.seed import (  # noqa: E402
    config_architecture,
    file_name_architecture,
    import_seed,
)
from mde.runtime.frontend import MelSpectrogram  # noqa: E402
from mde.trainer.models import build_model  # noqa: E402


def _run(path: Path, logmel: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"logmel": logmel})))


def _save_lightning_like(path: Path, weights: dict, window: np.ndarray, filterbank: np.ndarray) -> Path:
    """A Lightning-style checkpoint: 'model.'-prefixed weights plus the torchaudio front-end buffers."""
    state = OrderedDict({"model.spec.spectrogram.window": torch.from_numpy(np.array(window)),
                         "model.spec.mel_scale.fb": torch.from_numpy(np.array(filterbank))})
    state.update({f"model.{k}": torch.as_tensor(v) for k, v in weights.items()})
    torch.save({"epoch": 0, "state_dict": state, "hyper_parameters": {"learning_rate": 0.01}}, path)
    return path


@pytest.mark.parametrize("ckpt, reference, name, arch, window, metrics", [
    (FCN05_CKPT, "joram_fcn05.npz", "fcn05-mtat", "FCN05", 8000, {"roc_auc": 0.8552, "pr_auc": 0.3344}),
    (FCN29_CKPT, "joram_fcn29.npz", "fcn29-mtat", "FCN", 464000, {"roc_auc": 0.9025, "pr_auc": 0.4342}),
])
def test_real_checkpoint_imports_with_parity(shared_data, mde_home, ckpt, reference, name, arch, window,
                                             metrics):
    path, info = import_seed(shared_data / ckpt)
    assert path == mde_home / "models" / f"{name}.onnx" and path.is_file()
    assert read_model_info(path) == info
    assert (info.name, info.architecture, info.sample_rate) == (name, arch, 16000)
    assert info.window_samples == info.hop_samples == window
    assert (info.input_kind, info.framing, info.frontend) == ("logmel", "audio_windows", SEED_FCN)
    assert info.embedding_dim == 64
    assert info.outputs == {"embedding": 64, "tags": 50} and info.metrics == metrics
    assert info.licence == "unknown (first seed's checkpoint)" and Path(ckpt).name in info.source

    ref = np.load(shared_data / "reference" / reference)
    assert info.tag_names == MTAT_TOP50 == tuple(ref["tag_names"])
    out = _run(path, ref["logmel_first"][None])
    assert np.abs(out["embedding"][0] - ref["embedding"][0]).max() <= 2e-3
    assert np.abs(out["tags"][0] - ref["tags"][0]).max() <= 1e-4


def test_fcn05_and_fcn29_are_told_apart_by_their_training_config(shared_data, tmp_path):
    assert config_architecture(read_checkpoint(shared_data / FCN05_CKPT)) == "fcn05"
    assert config_architecture(read_checkpoint(shared_data / FCN29_CKPT)) == "fcn"
    assert file_name_architecture("FCN05-roc_auc=0.8552-pr_auc=0.3344.ckpt") == "fcn05"
    assert file_name_architecture("FCN29-roc_auc=0.9025-pr_auc=0.4342.ckpt") == "fcn"
    assert file_name_architecture("ShortChunkCNN037-roc_auc=0.8948-pr_auc=0.4039.ckpt") == "shortchunk_res"
    assert file_name_architecture("weights.ckpt") is None


def test_renamed_checkpoint_is_still_recognised(shared_data, mde_home, tmp_path):
    renamed = shutil.copy(shared_data / FCN05_CKPT, tmp_path / "weights.ckpt")
    path, info = import_seed(renamed, name="renamed")
    assert info.architecture == "FCN05" and info.metrics == {} and path.stem == "renamed"


@pytest.fixture(scope="module")
def seed_frontend() -> MelSpectrogram:
    return MelSpectrogram.from_config(SEED_FCN)


def test_fcn_weights_without_config_need_a_hint(mde_home, tmp_path, seed_frontend):
    weights = build_model("fcn05").state_dict()
    plain = _save_lightning_like(tmp_path / "weights.ckpt", weights, seed_frontend.window,
                                 seed_frontend.filterbank)
    with pytest.raises(CheckpointError, match="--arch"):
        import_seed(plain)
    _, info = import_seed(plain, arch="fcn05")
    assert info.architecture == "FCN05"
    named = shutil.copy(plain, tmp_path / "FCN05-mine.ckpt")  # the file name is a hint too (FCN29 -> fcn: above)
    with pytest.raises(ModelError, match="already exists"):
        import_seed(named, name="fcn05-mtat")
    path, info = import_seed(named, name="fcn05-mtat", overwrite=True)
    assert info.architecture == "FCN05" and "FCN05-mine.ckpt" in read_model_info(path).source


def test_synthesized_shortchunk_checkpoint_imports(mde_home, tmp_path, seed_frontend):
    torch.manual_seed(0)
    network = build_model("shortchunk_res").eval()
    ckpt = _save_lightning_like(tmp_path / "random-weights.ckpt", network.state_dict(),
                                seed_frontend.window, seed_frontend.filterbank)
    path, info = import_seed(ckpt)
    assert path.name == "shortchunk-res-mtat.onnx" and read_model_info(path) == info
    assert (info.architecture, info.window_samples, info.embedding_dim) == ("ShortChunkCNN_Res", 59049, 512)
    assert info.outputs == {"embedding": 512, "tags": 50}

    logmel = seed_frontend(example_windows(59049, 16000, 2, seed=7))
    with torch.no_grad():
        want = network(torch.from_numpy(logmel))
    got = _run(path, logmel)
    for key in ("embedding", "tags"):
        scale = float(want[key].abs().max())
        assert np.abs(got[key] - want[key].numpy()).max() <= 1e-4 * max(scale, 1.0), key


@pytest.mark.parametrize("buffer", ["spec.mel_scale.fb", "spec.spectrogram.window"])
def test_tampered_frontend_buffer_is_refused(shared_data, mde_home, tmp_path, buffer):
    state = state_dict_from_checkpoint(shared_data / FCN05_CKPT)
    window, filterbank = state.pop("spec.spectrogram.window"), state.pop("spec.mel_scale.fb")
    tampered = {"spec.spectrogram.window": window.copy(), "spec.mel_scale.fb": filterbank.copy()}
    tampered[buffer][10:12] *= 1.05
    ckpt = _save_lightning_like(tmp_path / "FCN05-tampered.ckpt", state, tampered["spec.spectrogram.window"],
                                tampered["spec.mel_scale.fb"])
    with pytest.raises(CheckpointError, match=buffer.replace(".", r"\.")):
        import_seed(ckpt)
    assert not (mde_home / "models").exists()


def test_unrecognised_state_dict_is_refused(mde_home, tmp_path, seed_frontend):
    weights = {"encoder.weight": np.ones((4, 4), np.float32), "encoder.bias": np.zeros(4, np.float32)}
    ckpt = _save_lightning_like(tmp_path / "FCN05-other.ckpt", weights, seed_frontend.window,
                                seed_frontend.filterbank)
    with pytest.raises(CheckpointError, match="matches none"):
        import_seed(ckpt)
    with pytest.raises(CheckpointError, match="do not fit"):
        import_seed(ckpt, arch="fcn05")


def test_unknown_arch_override_is_refused(shared_data, mde_home):
    with pytest.raises(CheckpointError, match="not a seed architecture"):
        import_seed(shared_data / FCN05_CKPT, arch="musicnn")


def test_example_windows_are_deterministic_and_music_like():
    a = example_windows(8000, 16000, 3)
    assert a.shape == (3, 8000) and a.dtype == np.float32
    np.testing.assert_array_equal(a, example_windows(8000, 16000, 3))
    assert 0.05 < float(np.abs(a).max()) <= 1.0 and float(a.std()) > 0.01


def test_export_parity_failure_names_each_output_and_its_tolerance(seed_frontend):
    from mde.errors import ParityError
    from mde.export.importers.seed import seed_model_info
    from mde.export.onnx_export import check_parity, export_onnx
    from mde.trainer.models import get_model_spec

    torch.manual_seed(0)
    network = build_model("fcn05")
    logmel = seed_frontend(example_windows(8000, 16000, 2))
    onnx_bytes = export_onnx(network, logmel, seed_model_info(get_model_spec("fcn05"), "x.ckpt", "x"))
    deltas = check_parity(onnx_bytes, network, logmel)
    assert set(deltas) == {"embedding", "tags"} and max(deltas.values()) < 1e-4
    with torch.no_grad():
        network.dense.bias += 1.0
    with pytest.raises(ParityError, match=r"tags max \|delta\| .* \(tolerance .*\)") as caught:
        check_parity(onnx_bytes, network, logmel)
    assert "embedding" not in str(caught.value)
