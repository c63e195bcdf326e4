"""Weights of stored models back into the registry's torch networks (mde.export.onnx_weights): the round trip
torch -> ONNX (the export of a run folder) -> torch for every registry family, the real imported models
(MTT_musicnn, the first seed's FCN05), and the one-line refusals."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import build_tiny_model, store_at  # noqa: E402
from torch import nn  # noqa: E402

import mde.export.export as export_module  # noqa: E402
import mde.export.onnx_export as onnx_export  # noqa: E402
from mde.errors import ModelError  # noqa: E402
from mde.export import onnx_weights  # noqa: E402
from mde.export.examples import example_inputs  # noqa: E402
from mde.export.onnx_weights import torch_network_from_model  # noqa: E402
from mde.runtime.band_norm import BandNorm  # noqa: E402
from mde.runtime.package import read_model_info  # noqa: E402
from mde.trainer.models import build_model, get_model_spec, registered_names  # noqa: E402
from mde.trainer.models.harmonic_cnn import HarmonicSTFT  # noqa: E402
from mde.trainer.models.registry import _REGISTRY  # noqa: E402
from mde.trainer.models.sincnet import MusicSinc  # noqa: E402

TAGS = ["a", "b", "c"]
TOPICS = {"tags": 7, "text": 5}


def _perturb(network: nn.Module) -> nn.Module:
    """Give every BatchNorm running statistics and affine parameters far from their fresh values (a fusion
    mapping that drops or misplaces any of them changes the outputs), every bias a non-zero value, and the
    computed front ends (sinc bands, harmonic Q) values off their initialisation."""
    generator = torch.Generator().manual_seed(1)

    def like(tensor, low, high):
        return torch.rand(tensor.shape, generator=generator) * (high - low) + low

    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(like(module.running_mean, -0.3, 0.3))
                module.running_var.copy_(like(module.running_var, 0.5, 2.0))
                module.weight.copy_(like(module.weight, 0.6, 1.6))
                module.bias.copy_(like(module.bias, -0.2, 0.2))
            elif isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and module.bias is not None:
                module.bias.copy_(like(module.bias, -0.05, 0.05))
            elif isinstance(module, nn.RNNBase):
                for name, value in module.named_parameters():
                    if name.startswith("bias"):
                        value.copy_(like(value, -0.1, 0.1))
            elif isinstance(module, MusicSinc):
                module.low_hz_.mul_(like(module.low_hz_, 0.8, 1.2))
                module.band_hz_.mul_(like(module.band_hz_, 0.8, 1.5))
            elif isinstance(module, HarmonicSTFT):
                module.bw_q.fill_(1.3)
    return network.eval()


def _export_run(name: str, tmp_path, joint: bool = True) -> tuple[nn.Module, object]:
    """A run folder holding the perturbed network of registry entry ``name`` as its best checkpoint (with a band
    normalisation where the family trains with one, and the joint space for JETATAG unless ``joint`` is False),
    exported by ``export_model``; returns the network and the model file. The export's own two parity checks
    are skipped (the tests compare the imported network with this one) and it traces a single window."""
    spec = get_model_spec(name)
    args = {"topics": TOPICS} if spec.objective == "similarity" else {}
    torch.manual_seed(0)
    network = _perturb(build_model(name, n_tags=len(TAGS), **args))
    run = tmp_path / f"run-{name}"
    (run / "checkpoints").mkdir(parents=True)
    payload = {"model": network.state_dict(), "architecture": name, "tag_names": TAGS, "valid": {},
               "network_args": args}
    if spec.band_norm:
        bands = spec.channels * spec.logmel_frontend.n_mels
        mean, std = np.linspace(-30.0, -10.0, bands).tolist(), np.linspace(5.0, 15.0, bands).tolist()
        payload["band_norm"] = BandNorm(tuple(mean), tuple(std), channels=spec.channels).to_dict()
    torch.save(payload, run / "checkpoints" / "best.pt")
    if name.startswith("jetatag"):
        (run / "config.json").write_text(json.dumps({"model": name, "joint_embedding": joint}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export_module, "EXAMPLE_WINDOWS", 1)
        for module in (export_module, onnx_export):
            patch.setattr(module, "check_parity", lambda *args, **kwargs: {})
        export_module.export_model(run, tmp_path / f"{name}.onnx")
    return network, tmp_path / f"{name}.onnx"


def _outputs(network: nn.Module, inputs: np.ndarray, names) -> dict[str, np.ndarray]:
    with torch.no_grad():
        result = network(torch.from_numpy(inputs))
    return {name: result[name].numpy() for name in names}


@pytest.mark.parametrize("name", registered_names())
def test_the_round_trip_torch_onnx_torch_gives_the_same_outputs(name, tmp_path):
    source, path = _export_run(name, tmp_path)
    imported = torch_network_from_model(path, windows=1)  # one window keeps the 29 s and 100 MB families quick
    info = read_model_info(path)
    assert imported.registry_name == name and imported.info == info and imported.spec.name == name
    assert not imported.network.training
    # the imported network computes what the source network computed, output by output
    inputs = example_inputs(info, 1, seed=3)  # not the check's own window
    want, got = _outputs(source, inputs, info.outputs), _outputs(imported.network, inputs, info.outputs)
    for output, expected in want.items():
        scale = float(np.abs(expected).max())
        assert scale > 0 and np.abs(got[output] - expected).max() <= 1e-4 + 1e-4 * scale, (output, scale)
    assert set(imported.deltas) == set(info.outputs)
    # every weight came from the file, except the training-only tag decoder of JETATAG
    assert all(key.startswith("tag_decoder.") for key in imported.fresh), imported.fresh
    assert bool(imported.fresh) == name.startswith("jetatag")
    if get_model_spec(name).band_norm:  # the standardisation to train with rides along in the metadata
        assert imported.info.band_norm is not None and imported.info.band_norm.n_bands == get_model_spec(
            name).logmel_frontend.n_mels
    if info.tag_encoder is not None:
        tags = torch.tensor([[1.0, 0.0, 1.0]])
        with torch.no_grad():
            assert torch.allclose(imported.network.embed_tags(tags), source.embed_tags(tags), atol=1e-5)


def test_a_fused_batch_norm_becomes_the_identity_plus_the_folded_bias(tmp_path):
    source, path = _export_run("fcn05", tmp_path)
    import onnx

    names = {node.name for node in onnx.load(str(path)).graph.node}
    assert "/module/layer1/conv/Conv" in names and "/module/layer1/bn/BatchNormalization" not in names  # folded
    network = torch_network_from_model(path, windows=1).network
    conv, bn, original = network.layer1.conv, network.layer1.bn, source.layer1.bn
    scale = (original.weight / torch.sqrt(original.running_var + original.eps)).detach()
    assert torch.allclose(conv.weight, source.layer1.conv.weight * scale[:, None, None, None], atol=1e-6)
    assert torch.equal(conv.bias, torch.zeros(64))
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.running_mean, torch.zeros(64))
    assert torch.allclose(bn.running_var + bn.eps, torch.ones(64))
    folded = (source.layer1.conv.bias - original.running_mean) * scale + original.bias
    assert torch.allclose(bn.bias, folded.detach(), atol=1e-6)
    # the unfused input BatchNorm keeps its own statistics
    assert torch.allclose(network.spec_bn.running_var, source.spec_bn.running_var)


def test_a_mapping_that_does_not_reproduce_the_graph_is_refused(tmp_path, monkeypatch):
    _, path = _export_run("fcn05", tmp_path)
    fused = onnx_weights._GraphMapper._fused

    def dropping_the_folded_bias(self, path, conv, bn, channels, bias, bias_name, label):
        fused(self, path, conv, bn, channels, None, None, label)  # every entry filled, the folded bias lost

    monkeypatch.setattr(onnx_weights._GraphMapper, "_fused", dropping_the_folded_bias)
    with pytest.raises(ModelError, match="network with the imported weights differs from the model") as error:
        torch_network_from_model(path, windows=1)
    assert "\n" not in str(error.value) and "max |delta|" in str(error.value)


@pytest.mark.parametrize("fault", ["sizes", "linear"])
def test_weights_that_do_not_map_give_one_line_counting_them(fault, tmp_path, monkeypatch):
    _, path = _export_run("fcn05", tmp_path)
    if fault == "sizes":  # a network with 5 tags: the dense layer's (3, 64) weight and (3,) bias do not fit
        monkeypatch.setattr(onnx_weights, "network_args", lambda spec, info: {"n_tags": 5})
        expected = r"2 that do not fit \(module\.dense\.bias \(3,\) does not fit dense\.bias \(5,\)"
    else:  # Gemm nodes left unmapped: the dense layer's two entries stay unfilled
        monkeypatch.setattr(onnx_weights._GraphMapper, "_gemm", lambda self, path, node: None)
        expected = r"2 of the network's 42 state entries found no initializer \(dense\.bias, dense\.weight\)"
    with pytest.raises(ModelError, match=expected) as error:
        torch_network_from_model(path, windows=1)
    assert "\n" not in str(error.value) and "does not map onto the network" in str(error.value)


def test_a_jetatag_model_without_its_joint_space_leaves_those_heads_fresh(tmp_path):
    source, path = _export_run("jetatag_sc", tmp_path, joint=False)
    imported = torch_network_from_model(path, windows=1)
    assert "joint" not in imported.info.outputs and imported.info.tag_encoder is None
    assert {key.split(".")[0] for key in imported.fresh} == {"projector", "tag_encoder", "tag_decoder"}
    assert not any(key.startswith(("encoder.", "classifier.")) for key in imported.fresh)
    state = imported.network.state_dict()
    assert not torch.equal(state["projector.layers.0.0.weight"], source.state_dict()["projector.layers.0.0.weight"])


def test_entries_sharing_an_architecture_name_are_told_apart_by_the_weights_function(tmp_path, monkeypatch):
    _, path = _export_run("fcn05", tmp_path)
    from mde.trainer.models.fcn import FCN

    # a twin with the same weights' shapes that pools in another order, tried first (its name sorts first)
    twin = dataclasses.replace(get_model_spec("fcn05"), name="fcn04_twin",
                               factory=lambda n_tags=50: FCN(((2, 2), (4, 2), (2, 2), (2, 2), (3, 2)), n_tags=n_tags))
    monkeypatch.setitem(_REGISTRY, "fcn04_twin", twin)
    assert [s.name for s in onnx_weights.registry_candidates(read_model_info(path), "x")] == ["fcn04_twin", "fcn05"]
    assert torch_network_from_model(path, windows=1).registry_name == "fcn05"


def test_imported_musicnn_loads_into_torch_and_matches_onnx_runtime(musicnn_home):
    from mde.export.importers.musicnn import load_musicnn

    with store_at(musicnn_home):
        imported = torch_network_from_model("MTT_musicnn")
    assert (imported.registry_name, imported.info.architecture, imported.fresh) == ("musicnn", "musicnn", ())
    assert max(imported.deltas.values()) < 1e-3
    original = load_musicnn("MTT_musicnn")  # the TF checkpoint's port: the same weights, BatchNorms unfused
    state = imported.network.state_dict()
    for key, value in original.state_dict().items():
        assert torch.allclose(state[key].float(), value.float(), atol=1e-6), key


def test_a_first_seed_fcn05_loads_into_torch_and_matches_onnx_runtime(seed_models):
    imported = torch_network_from_model(seed_models["fcn05"])
    assert (imported.registry_name, len(imported.info.tag_names), imported.fresh) == ("fcn05", 50, ())
    info = imported.info
    inputs = example_inputs(info, 3, seed=5)
    import onnxruntime as ort

    session = ort.InferenceSession(str(seed_models["fcn05"]), providers=["CPUExecutionProvider"])
    want = dict(zip(info.outputs, session.run(list(info.outputs), {"logmel": inputs})))
    got = _outputs(imported.network, inputs, info.outputs)
    for output in info.outputs:
        assert np.abs(got[output] - want[output]).max() <= 1e-4 * (1 + np.abs(want[output]).max()), output


def test_an_architecture_outside_the_registry_gives_one_line(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(build_tiny_model())
    with pytest.raises(ModelError) as error:
        torch_network_from_model(path)
    message = str(error.value)
    assert "\n" not in message and "'tiny-test'" in message and "not in the model registry" in message
    assert "FCN05" in message and "musicnn" in message  # the known architectures


def test_a_quantized_model_is_refused_in_one_line(tmp_path):
    from mde.export.onnx_export import read_metadata, with_metadata

    info = read_metadata(build_tiny_model())
    path = tmp_path / "tiny-int8.onnx"
    path.write_bytes(with_metadata(build_tiny_model(), dataclasses.replace(info, precision="int8")))
    with pytest.raises(ModelError, match="int8 model") as error:
        torch_network_from_model(path)
    assert "\n" not in str(error.value)
