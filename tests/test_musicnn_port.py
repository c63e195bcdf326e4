"""The torch ports of musicnn's pretrained models against the TensorFlow package's own outputs.

Reference: ``reference/joram_musicnn.npz`` (see the shared data README): the exact model input ``logmel``
(frames x 96) and, per model and patch length, the TF outputs of non-overlapping patches from frame 0.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mde.errors import CheckpointError
from mde.export.importers import musicnn as importer
from mde.export.importers.musicnn import MUSICNN_MODELS, find_musicnn_dir, load_musicnn, musicnn_state_dict
from mde.runtime.frontend_config import MUSICNN as MUSICNN_FRONTEND
from mde.trainer.models.musicnn import PATCH_FRAMES, VGG, MusiCNN, same_padding
from mde.trainer.models.registry import build_model, get_model_spec

MUSICNN_MISSING = "musicnn not installed (pip install --no-deps musicnn==0.1.0)"
PATCHES = {"0.5s": 31, "3s": 187, "29s": 1812}  # frames
# Pools are pre-BN features up to ~110 in size, sums of up to 7 x 561 float32 products: float32
# rounding alone moves them by ~1e-6 relative (observed: <= 3e-4 absolute, 3e-6 relative).
POOL_RTOL, POOL_ATOL = 1e-4, 1e-3


@pytest.fixture(scope="module")
def musicnn_dir() -> Path:
    if importlib.util.find_spec("musicnn") is None:
        pytest.skip(MUSICNN_MISSING)
    return find_musicnn_dir()


@pytest.fixture(scope="module")
def reference(shared_data: Path) -> dict[str, np.ndarray]:
    path = shared_data / "reference" / "joram_musicnn.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with np.load(path) as data:
        return dict(data)


@pytest.fixture(scope="module")
def models(musicnn_dir: Path) -> dict[str, torch.nn.Module]:
    return {name: load_musicnn(name, musicnn_dir) for name in MUSICNN_MODELS}


def patches(logmel: np.ndarray, starts: np.ndarray, frames: int) -> torch.Tensor:
    """Patches logmel[s:s+frames] as the (batch, 96, frames) input of mde models."""
    return torch.from_numpy(np.stack([logmel[s:s + frames] for s in starts])).transpose(1, 2).contiguous()


@pytest.mark.parametrize("length", list(PATCHES))
@pytest.mark.parametrize("name", ["MTT_musicnn", "MSD_musicnn"])
def test_musicnn_matches_tensorflow(name: str, length: str, models: dict, reference: dict) -> None:
    key = f"{name}_{length}"
    starts = reference[f"{key}_start_frames"]
    with torch.no_grad():
        out = models[name](patches(reference["logmel"], starts, PATCHES[length]))
    got = {k: v.numpy() for k, v in out.items()}
    np.testing.assert_allclose(got["tags"], reference[f"{key}_tags"], rtol=0, atol=2e-3)
    np.testing.assert_allclose(got["penultimate"], reference[f"{key}_penultimate"], rtol=0, atol=5e-3)
    for pool in ("mean_pool", "max_pool"):
        np.testing.assert_allclose(got[pool], reference[f"{key}_{pool}"], rtol=POOL_RTOL, atol=POOL_ATOL)


@pytest.mark.parametrize("dataset", ["MTT", "MSD"])
def test_vgg_runs_on_3s_patches_and_agrees_with_musicnn(dataset: str, models: dict, reference: dict) -> None:
    model = models[f"{dataset}_vgg"]
    starts = reference[f"{dataset}_musicnn_3s_start_frames"]
    with torch.no_grad():
        out = model(patches(reference["logmel"], starts, PATCH_FRAMES))
    tags = out["tags"].numpy()
    assert tags.shape == (len(starts), 50) and out["pool5"].shape == (len(starts), 256)
    assert ((tags > 0) & (tags < 1)).all()
    assert (tags.sum(axis=1) > 0.5).all() and (tags.sum(axis=1) < 15).all()
    # Another architecture trained on the same tags: the clip's average tag profiles agree closely
    # (0.98 MTT, 0.88 MSD; a mis-ordered flatten gives far less).
    musicnn_tags = reference[f"{dataset}_musicnn_3s_tags"]
    assert np.corrcoef(tags.mean(axis=0), musicnn_tags.mean(axis=0))[0, 1] > 0.8


@pytest.mark.parametrize("frames", [31, 186, 188, 1812])
def test_vgg_refuses_other_lengths(frames: int) -> None:
    with pytest.raises(ValueError, match="187-frame"):
        VGG().eval()(torch.zeros(1, 96, frames))


@pytest.mark.parametrize("architecture, frames", [(MusiCNN, 40), (VGG, PATCH_FRAMES)])
def test_forward_backward_on_a_tiny_batch(architecture: type, frames: int) -> None:
    model = architecture().train()
    out = model(torch.randn(2, 96, frames))
    assert out["tags"].shape == (2, 50)
    sum(value.sum() for value in out.values()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_musicnn_takes_any_length_and_checks_layout() -> None:
    model = MusiCNN().eval()
    with torch.no_grad():
        for frames in (1, 7, 300):
            assert model(torch.randn(1, 96, frames))["penultimate"].shape == (1, 200)
    with pytest.raises(ValueError, match="96"):
        model(torch.randn(1, frames, 96))


def test_tf_same_padding_puts_the_odd_row_at_the_end() -> None:
    assert same_padding(128) == (63, 64) and same_padding(7) == (3, 3) and same_padding(32) == (15, 16)


def test_registry_entries() -> None:
    for name, arch_class, embedding in (("musicnn", MusiCNN, 200), ("musicnn_vgg", VGG, 256)):
        spec = get_model_spec(name)
        assert spec.framing == "mel_patches" and spec.frontend == MUSICNN_FRONTEND
        assert spec.sample_rate == 16000 and spec.n_frames == PATCH_FRAMES
        model = build_model(name).eval()
        assert isinstance(model, arch_class) and spec.embedding_dim == embedding
        with torch.no_grad():
            out = model(torch.zeros(1, 96, spec.n_frames))
        assert out[spec.embedding_output].shape == (1, spec.embedding_dim)
    assert get_model_spec("musicnn").variable_length and not get_model_spec("musicnn_vgg").variable_length


def test_state_dict_fills_every_entry(musicnn_dir: Path) -> None:
    for name, model in MUSICNN_MODELS.items():
        state = musicnn_state_dict(musicnn_dir / name, model.arch)
        assert set(state) == set(build_model(model.arch).state_dict())


def test_mapping_reports_missing_and_unused_variables(musicnn_dir: Path) -> None:
    from mde.export.importers.tf_checkpoint import read_tf_checkpoint

    variables = read_tf_checkpoint(musicnn_dir / "MTT_vgg")
    del variables["3CNN/bias"]
    variables["6CNN/kernel"] = np.zeros((3, 3, 128, 128), np.float32)
    expected = build_model("musicnn_vgg").state_dict()
    expected_error = r"unused TF variables: 6CNN/kernel.*unfilled torch entries: blocks\.2\.conv\.bias"
    with pytest.raises(CheckpointError, match=expected_error):
        importer._map_variables("musicnn_vgg", variables, expected, "test")


def test_wrong_architecture_for_checkpoint(musicnn_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="not a musicnn checkpoint"):
        musicnn_state_dict(musicnn_dir / "MTT_vgg", "musicnn")


def test_find_musicnn_dir_does_not_import_the_package(musicnn_dir: Path) -> None:
    assert (find_musicnn_dir() / "MTT_musicnn" / ".index").is_file()
    assert "musicnn" not in sys.modules and "tensorflow" not in sys.modules


def test_find_musicnn_dir_explains_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError, match=r"pip install --no-deps musicnn==0\.1\.0"):
        find_musicnn_dir(tmp_path)
    monkeypatch.setattr(importer.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match=r"not installed: pip install --no-deps musicnn==0\.1\.0"):
        find_musicnn_dir()


def test_tag_names_match_the_package(musicnn_dir: Path) -> None:
    tree = ast.parse((musicnn_dir / "configuration.py").read_text())
    labels = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id.endswith("_LABELS")
    }
    for name, model in MUSICNN_MODELS.items():
        assert model.tag_names == tuple(labels[f"{name[:3]}_LABELS"])
