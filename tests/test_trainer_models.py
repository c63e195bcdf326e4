"""Every registered architecture trains: forward + backward on a tiny batch of its own input shape."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mde.trainer.models import build_model, get_model_spec, registered_names  # noqa: E402

NEW_SPECS = {
    # name: (architecture, input samples, frames, mels, embedding size)
    "shortchunk": ("ShortChunkCNN", 59049, 231, 128, 512),
    "crnn": ("CRNN", 464000, 1813, 128, 32),
}


@pytest.mark.parametrize("name", [n for n in registered_names() if get_model_spec(n).input_kind == "logmel"
                                  and get_model_spec(n).objective == "tagging"])
def test_forward_backward_gives_embedding_logits_and_tags(name):
    spec = get_model_spec(name)
    torch.manual_seed(0)
    network = build_model(name).train()
    logmel = torch.randn(2, spec.frontend.n_mels, spec.n_frames) * 10 - 30
    out = network(logmel)

    assert out[spec.embedding_output].shape == (2, spec.embedding_dim)
    assert out["tags"].shape == out["logits"].shape == (2, spec.n_tags)
    assert bool(((out["tags"] > 0) & (out["tags"] < 1)).all())
    torch.testing.assert_close(torch.sigmoid(out["logits"]), out["tags"], rtol=0, atol=1e-6)

    (out["logits"].square().mean() + out[spec.embedding_output].mean()).backward()
    first = next(p for p in network.parameters() if p.dim() > 1)  # the first layer's weights
    assert first.grad is not None and bool(torch.isfinite(first.grad).all()) and first.grad.abs().sum() > 0
    missing = [n for n, p in network.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name", sorted(NEW_SPECS))
def test_new_architectures_are_registered_as_in_sota(name):
    architecture, samples, frames, mels, dim = NEW_SPECS[name]
    spec = get_model_spec(name)
    assert (spec.architecture, spec.input_length, spec.n_frames, spec.frontend.n_mels, spec.embedding_dim) == (
        architecture, samples, frames, mels, dim)
    assert spec.n_tags == 50 and spec.framing == "audio_windows" and spec.embedding_output == "embedding"


def test_shortchunk_pools_to_one_cell_and_keeps_sota_parameter_names():
    network = build_model("shortchunk").eval()
    names = set(network.state_dict())
    for index in range(1, 8):
        assert {f"layer{index}.conv.weight", f"layer{index}.bn.running_mean"} <= names
    assert {"spec_bn.weight", "dense1.weight", "bn.weight", "dense2.weight"} <= names
    x = torch.randn(1, 1, 128, 231)
    for index in range(1, 8):
        x = getattr(network, f"layer{index}")(x)
    assert x.shape == (1, 512, 1, 1)


def test_crnn_keeps_sota_parameter_names_and_takes_96_mels():
    network = build_model("crnn").eval()
    names = set(network.state_dict())
    assert {"spec_bn.weight", "layer4.conv.weight", "layer5.weight_ih_l1", "dense.weight"} <= names
    assert network.layer5.hidden_size == 32 and network.layer5.num_layers == 2
    with torch.no_grad():
        assert network(torch.randn(1, 96, 200))["embedding"].shape == (1, 32)
        with pytest.raises(ValueError, match="mel rows"):
            network(torch.randn(1, 200, 200))


def test_shortchunk_res_parameters_are_unchanged():
    """The residual model still loads the first seed's FCN037 layout (161 tensors, 12.1 M parameters)."""
    network = build_model("shortchunk_res")
    assert len(network.state_dict()) == 161
    assert sum(p.numel() for p in network.parameters()) == 12_104_244
