"""The multi-scale CNN (mde.trainer.models.multiscale) against the source's layer list: each stage's shape,
the parameter count worked out by hand, and the pools and dropout the source declares."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mde.trainer.models.multiscale import MultiScaleCNN  # noqa: E402

STAGES = {  # module -> (channels, mels, frames) it gives for one 128 x 628 input
    "branch1": (70, 16, 19), "subsample1": (1, 64, 157), "branch2": (70, 16, 19), "subsample2": (1, 32, 39),
    "branch3": (70, 16, 19), "last": (70, 8, 9),
}
PARAMETERS = {  # weights + biases, layer by layer, from the source's list
    "conv 1.1": 1 * 50 * 3 * 7 + 50, "conv 1.2": 50 * 100 * 3 * 5 + 100, "conv 1.3": 100 * 70 * 3 * 3 + 70,
    "conv 2.1": 1 * 100 * 3 * 5 + 100, "conv 2.2": 100 * 70 * 3 * 3 + 70, "conv 3.1": 1 * 70 * 3 * 3 + 70,
    "conv last 1": 210 * 70 * 3 * 3 + 70, "conv last 2": 70 * 70 * 3 * 3 + 70,
    "batchnorm": 2 * 5040, "dense 500": 5040 * 500 + 500, "top": 500 * 50 + 50,
}


def test_every_stage_has_the_source_shape_and_the_outputs_are_named():
    net = MultiScaleCNN().eval()
    shapes = {}
    for name in STAGES:
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o.shape[1:]))
    with torch.no_grad():
        out = net(torch.randn(2, 128, 628))
    assert {k: tuple(v) for k, v in shapes.items()} == STAGES
    assert net.features == 5040
    assert {k: tuple(v.shape) for k, v in out.items()} == {"embedding": (2, 500), "logits": (2, 50), "tags": (2, 50)}
    assert torch.allclose(out["tags"], torch.sigmoid(out["logits"])) and (out["embedding"] >= 0).all()


def test_parameters_pools_and_dropout_are_the_sources():
    net = MultiScaleCNN()
    assert sum(p.numel() for p in net.parameters()) == sum(PARAMETERS.values()) == 2_936_810
    assert isinstance(net.subsample1, torch.nn.AvgPool2d) and isinstance(net.subsample2, torch.nn.AvgPool2d)
    assert isinstance(net.branch3[1], torch.nn.MaxPool2d)
    assert net.dropout.p == pytest.approx(0.4)  # the source's 0.6 is the probability of keeping a unit
