"""Schindler et al.'s audio network against the source's layer list (NetKim2019 in 7_Experiment.ipynb)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mde.trainer.models.schindler import CROP_FRAMES, SchindlerCNN, TargetHeads  # noqa: E402

LAYERS = {  # (weight shape, bias) in torch's (out, in, mel, time) order, from the source's layer list
    "conv1": ((16, 2, 5, 5), 16), "conv2": ((32, 16, 3, 3), 32), "conv3": ((64, 32, 3, 3), 64),
    "conv4": ((64, 64, 3, 3), 64), "conv5": ((128, 64, 3, 3), 128), "conv6a": ((128, 128, 3, 3), 128),
    "conv6b": ((256, 128, 3, 3), 256), "fc_feature": ((256, 256), 256), "fc_output": ((128, 256), 128),
}


def test_layers_shapes_and_parameters_are_the_sources():
    net = SchindlerCNN().eval()
    weights = [tuple(p.shape) for name, p in net.named_parameters() if name.endswith("weight")]
    assert weights == [shape for shape, _ in LAYERS.values()]
    expected = sum(torch.Size(shape).numel() + bias for shape, bias in LAYERS.values())
    assert sum(p.numel() for p in net.parameters()) == expected == 676_176
    shapes = []
    x = torch.zeros(3, 2, 128, CROP_FRAMES)
    for layer in net.features:
        x = layer(x)
        if isinstance(layer, torch.nn.MaxPool2d):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(16, 64, 54), (32, 32, 27), (64, 16, 13), (64, 8, 6), (128, 4, 3)]
    with torch.no_grad():
        embedding = net(torch.randn(3, 2, 128, CROP_FRAMES))
    assert embedding.shape == (3, 128) and ((embedding > 0) & (embedding < 1)).all()


def test_one_head_per_target_space():
    heads = TargetHeads({"tags": 40, "text": 12})
    out = heads(torch.rand(5, 128))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"tags": (5, 40), "text": (5, 12)}


def test_the_registered_network_gives_the_embedding_and_a_head_per_target_and_trains_end_to_end():
    from mde.trainer.models import build_model

    torch.manual_seed(0)
    net = build_model("schindler", topics={"tags": 11, "text": 40}).train()
    out = net(torch.randn(3, 2, 128, CROP_FRAMES))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"embedding": (3, 128), "target_tags": (3, 11),
                                                          "target_text": (3, 40)}
    sum(v.square().mean() for v in out.values()).backward()
    assert not [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    with torch.no_grad():
        features = net.audio.features(torch.randn(8, 2, 128, CROP_FRAMES))  # He-normal: activations of unit scale
    assert 0.1 < float(features.std()) < 10
