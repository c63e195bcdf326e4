"""Recomputing BatchNorm's running statistics from training batches ("precise BatchNorm", Wu & Johnson
2021, "Rethinking 'Batch' in BatchNorm").

BatchNorm normalises by batch statistics while training and by running averages at evaluation. The
averages start at mean 0 and variance 1 and move 10 % of the way to each batch's statistics per step
(torch's momentum 0.1), so a run of few steps evaluates with averages that still remember their start.
That matters for networks started from scratch whose source started from pretrained ones: SoundNet's
initialisation, N(0, 0.01) weights, gives deep activations of variance around 0.03, and after the few
steps of an epoch on a small corpus the evaluated network divides by nearly 1 where training divided by
0.03, and predicts one class. Recomputing the averages over some training windows after each epoch gives
the evaluation the statistics the network trained with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def batchnorm_layers(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``net`` that keep running statistics."""
    return [m for m in net.modules() if isinstance(m, NORMS) and m.track_running_stats]


@torch.no_grad()
def recompute_batchnorm_stats(net: nn.Module, batches: Iterable[torch.Tensor],
                              forward: Callable[[torch.Tensor], object], windows: int) -> int:
    """Replace the running mean and variance of every BatchNorm layer of ``net`` by their plain average
    over the training ``batches`` (each passed through ``forward``), stopping once ``windows`` windows
    have been seen; every other layer runs in evaluation mode (no dropout, no random draws). Returns the
    windows used (0: ``net`` has no BatchNorm layer, nothing is run). ``net`` is left in evaluation mode.
    """
    norms = batchnorm_layers(net)
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    net.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, each weighted alike
        m.train()
    seen = 0
    try:
        for batch in batches:
            forward(batch)
            seen += len(batch)
            if seen >= windows:
                break
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        net.eval()
    return seen
