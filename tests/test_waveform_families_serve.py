"""The real waveform families (not test-only networks) export from a run folder and serve real music: the
export's own parity check against torch, then `embed` of the MTAT clip through ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from conftest import MTAT_CLIP  # noqa: E402

from mde.export.export import export_model  # noqa: E402
from mde.runtime.extractor import load_model  # noqa: E402
from mde.trainer.models import build_model, get_model_spec  # noqa: E402

TAGS = ["a", "b", "c"]


LAYERS = {"soundnet": {"conv8_2": 401}, "music2vec": {"dense100": 100}, "samplecnn_se": {},
          "jetatag_sc": {"joint": 128}, "jetatag_hc": {"joint": 128}}
"""Each family's exported layers beside the embedding and the tags, with their widths. JETATAG's Music-SincNet
(40 s here: 39 GMAC a window) is its Sample-CNN rese behind the sinc bank, whose export test_sincnet checks."""


@pytest.mark.parametrize("name", list(LAYERS))
def test_a_waveform_family_exports_from_a_run_and_embeds_real_music(name, shared_data, tmp_path):
    spec = get_model_spec(name)
    torch.manual_seed(0)
    network = build_model(name, n_tags=len(TAGS)).eval()
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"model": network.state_dict(), "architecture": name, "tag_names": TAGS, "valid": {}},
               tmp_path / "run" / "checkpoints" / "best.pt")
    joint = "joint" in LAYERS[name]
    if joint:  # a withJE run: its joint output and tag encoder are exported
        (tmp_path / "run" / "config.json").write_text(json.dumps({"model": name, "joint_embedding": True}))
    result = export_model(tmp_path / "run", tmp_path / f"{name}.onnx")
    info = result.info
    assert (info.input_kind, info.frontend, info.sample_rate, info.window_samples) == (
        "waveform", None, spec.sample_rate, spec.input_length)
    assert info.input_transform == spec.input_transform and info.embedding_dim == spec.embedding_dim
    # the export checked every output against torch within 1e-4 of its largest value (untrained, Music-SincNet's
    # embedding reaches ~600); the tags are probabilities
    assert set(result.torch_deltas) == set(info.outputs) and result.torch_deltas["tags"] < 1e-4, result.torch_deltas
    embedded = load_model(result.path, threads=1).embed(shared_data / MTAT_CLIP)
    frames = max(1, int(embedded.duration * spec.sample_rate) // spec.input_length)
    assert embedded.embedding.shape == (frames, spec.embedding_dim) and np.isfinite(embedded.embedding).all()
    assert embedded.tags.shape == (frames, len(TAGS)) and embedded.padded == (embedded.duration < spec.input_seconds)
    assert info.outputs == {spec.embedding_output: spec.embedding_dim, **LAYERS[name], "tags": len(TAGS)}
    for layer, width in LAYERS[name].items():
        rows = load_model(result.path, threads=1).embed(shared_data / MTAT_CLIP, layer=layer).embedding
        assert rows.shape == (frames, width) and np.isfinite(rows).all()
        if layer == "joint":  # JETATAG's projection into the tag space is unit-norm
            assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    if joint:  # the tag encoder, through ONNX Runtime, against the network's own
        point = load_model(result.path, threads=1).embed_tags(["a", "c"])
        with torch.no_grad():
            want = network.embed_tags(torch.tensor([[1.0, 0.0, 1.0]]))[0].numpy()
        assert point.shape == (128,) and np.abs(point - want).max() < 1e-5


def test_mde_models_names_a_waveform_models_input(mde_home, tmp_path):
    from test_cli import run_mde

    from mde.runtime import store

    torch.manual_seed(0)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"model": build_model("soundnet", n_tags=3).state_dict(), "architecture": "soundnet",
                "tag_names": TAGS, "valid": {}}, tmp_path / "run" / "checkpoints" / "best.pt")
    export_model(tmp_path / "run", store.models_dir() / "sn.onnx")
    [row] = json.loads(run_mde("models", "--json", cwd=tmp_path, home=mde_home).stdout)
    assert (row["input_kind"], row["channels"], row["input_transform"]["gain"]) == ("waveform", 1, 256.0)
    assert "waveform x256" in run_mde("models", cwd=tmp_path, home=mde_home).stdout
