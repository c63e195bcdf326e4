"""Recomputed BatchNorm statistics (mde.trainer.batchnorm, TrainConfig.precise_bn): the running averages
become the plain statistics of the training windows, and nothing else in the network changes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mde.errors import MdeError
from mde.trainer.batchnorm import recompute_batchnorm_stats
from mde.trainer.config import TrainConfig


def test_running_statistics_become_those_of_the_windows() -> None:
    torch.manual_seed(0)
    norm = nn.BatchNorm1d(3)
    net = nn.Sequential(nn.Dropout(0.5), norm)
    batches = [torch.randn(4, 3, 10) * 0.2 + 5.0 for _ in range(5)]
    seen = recompute_batchnorm_stats(net, iter(batches), net, windows=12)
    assert seen == 12  # stops after the batch that reaches the count: 3 batches of 4
    used = torch.cat(batches[:3])
    # the plain average of each batch's statistics (torch keeps each batch's unbiased variance)
    expected_mean = torch.stack([b.mean((0, 2)) for b in batches[:3]]).mean(0)
    expected_var = torch.stack([b.var((0, 2)) for b in batches[:3]]).mean(0)
    assert torch.allclose(norm.running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(norm.running_var, expected_var, atol=1e-5)
    assert torch.allclose(norm.running_mean, used.mean((0, 2)), atol=1e-5)  # equal batches: the overall mean
    assert norm.momentum == 0.1 and not net.training and not norm.training
    # evaluation now normalises the windows as training did: about zero mean and unit variance
    out = net(used)
    assert out.mean().abs() < 1e-3 and abs(out.var().item() - 1) < 0.05


def test_dropout_is_off_while_the_statistics_are_gathered() -> None:
    """Dropout ahead of the norm would scale what it sees by 1 / (1 - p) on the kept half."""
    norm = nn.BatchNorm1d(1)
    net = nn.Sequential(nn.Dropout(0.5), norm)
    batch = torch.ones(8, 1, 4)
    state = torch.get_rng_state()
    recompute_batchnorm_stats(net, [batch], net, windows=8)
    assert norm.running_mean.item() == pytest.approx(1.0)
    assert norm.running_var.item() == pytest.approx(0.0)
    assert torch.equal(torch.get_rng_state(), state)  # no random draw: resume stays exact


def test_a_network_without_batchnorm_runs_nothing() -> None:
    calls = []
    assert recompute_batchnorm_stats(nn.Linear(2, 2), [torch.zeros(1, 2)], calls.append, windows=4) == 0
    assert calls == []


def test_the_setting_is_checked_and_the_soundnet_recipes_carry_it() -> None:
    places = {"dataset": "gtzan", "data": "d", "out": "o"}
    with pytest.raises(MdeError, match="precise BatchNorm"):
        TrainConfig(model="fcn", precise_bn=-1, **places)
    assert TrainConfig(model="fcn", **places).precise_bn == 0
    for model in ("music2vec", "soundnet"):
        assert TrainConfig.for_model(model, **places).precise_bn == 256
    assert TrainConfig.for_model("music2vec", precise_bn=0, **places).precise_bn == 0
