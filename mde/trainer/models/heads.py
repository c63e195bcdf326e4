"""A new tag head on a pretrained network (``mde train --init MODEL --head linear|mlp``).

:class:`HeadedNetwork` keeps a registry network whole as its ``backbone`` (front end weights, convolutions and
its own old classifier, which no output uses any more) and reads the backbone's embedding output
(``ModelSpec.embedding_output``: FCN's 64-d pool, musicnn's 200-d penultimate, ...) into a fresh ``head``
for the new dataset's tags. Its outputs are the backbone's (embedding and further layers) with ``logits``
and ``tags`` replaced by the head's, so the trainer, evaluation and export treat it as any tagger.

A checkpoint describes the wrap as ``payload['head']`` = {'kind': 'linear' | 'mlp', 'backbone_tags': n,
and 'backbone_head' when the backbone was itself a headed network} (n: the tag count the backbone was
built with, so its state dict loads); :func:`build_network` is the one
place that builds a network from a spec and that description. An exported model carries the same
description in its metadata's lineage (``ModelInfo.lineage['head']``), so that its weights can be imported
back (:mod:`mde.export.onnx_weights`).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from mde.errors import MdeError
from mde.trainer.config import HEADS
from mde.trainer.models.registry import ModelSpec

MLP_DROPOUT = 0.5
REPLACED_OUTPUTS = ("logits", "tags")
"""The backbone outputs that the head's replace."""


def build_head(kind: str, width: int, n_tags: int) -> nn.Module:
    """A fresh head of ``kind`` from a ``width``-wide embedding to ``n_tags`` logits: 'linear' is one Linear
    layer; 'mlp' is Linear (width -> width), ReLU, dropout 0.5, Linear (-> n_tags)."""
    if kind == "linear":
        return nn.Linear(width, n_tags)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(MLP_DROPOUT), nn.Linear(width, n_tags))
    raise MdeError(f"--head must be one of {', '.join(HEADS)}, got {kind!r}")


class HeadedNetwork(nn.Module):
    """``backbone`` (a registry network) with ``head`` on its ``embedding_output``.

    ``forward`` takes what the backbone takes and returns its outputs but for 'logits' (the head's, on the
    embedding) and 'tags' (their sigmoid).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, embedding_output: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.embedding_output = embedding_output

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {k: v for k, v in self.backbone(x).items() if k not in REPLACED_OUTPUTS}
        logits = self.head(outputs[self.embedding_output])
        return {**outputs, "logits": logits, "tags": torch.sigmoid(logits)}


def build_network(spec: ModelSpec, n_tags: int, network_args: Optional[dict[str, Any]] = None,
                  head: Optional[dict[str, Any]] = None) -> nn.Module:
    """A fresh network of ``spec`` for ``n_tags`` tags: the registry's (``network_args`` go to its factory),
    or with ``head`` ({'kind', 'backbone_tags'[, 'backbone_head']}) a new head on the network built for
    ``backbone_tags`` tags (itself headed by ``backbone_head`` when it was fine-tuned before)."""
    args = dict(network_args or {})
    if head is None:
        return spec.factory(n_tags=n_tags, **args)
    backbone = build_network(spec, int(head["backbone_tags"]), args, head.get("backbone_head"))
    return HeadedNetwork(backbone, build_head(head["kind"], spec.embedding_dim, n_tags),
                         spec.embedding_output)

