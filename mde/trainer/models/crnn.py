"""CRNN (Choi et al. 2017, "Convolutional recurrent neural networks for music classification"), as in
minzwon/sota-music-tagging-models (``CRNN``), on 29 s windows (464000 samples at 16 kHz).

Four blocks conv 3x3 -> BatchNorm2d -> ReLU -> MaxPool2d (the FCN's ConvBlock), channels 1 -> 64 -> 128 ->
128 -> 128, pools (mel, frame) 2x2, 3x3, 4x4, 4x4, after a BatchNorm2d(1) on the dB log-mel. sota uses 96
mels (96 -> 48 -> 16 -> 4 -> 1); here the seed's 128-mel front end (SEED_FCN) also ends at one mel row
(128 -> 64 -> 21 -> 5 -> 1, floor pooling drops the top rows), and 1813 frames become 18 time steps.
A 2-layer GRU (32 hidden units) runs over those steps; the embedding is the top layer's output at the
last step (32-d, the input of the dense layer before dropout); logits = dense(dropout(embedding)) and
tags = sigmoid(logits). The weights do not depend on n_mels, so sota's 96-mel checkpoints load.
"""

from __future__ import annotations

import torch
from torch import nn

from mde.runtime.frontend_config import SEED_FCN
from mde.trainer.models.fcn import ConvBlock
from mde.trainer.models.registry import register

CRNN_SAMPLES = 464000
"""Samples per window (29 s at 16 kHz, 1813 frames), sota's ``input_length`` for the CRNN."""
CRNN_POOLING = ((2, 2), (3, 3), (4, 4), (4, 4))
"""(mel, frame) max-pooling per conv block: 128 x 1813 -> 1 x 18."""
CRNN_CHANNELS = (64, 128, 128, 128)
GRU_HIDDEN = 32
GRU_LAYERS = 2


class CRNN(nn.Module):
    """Conv blocks then a GRU over time, on a dB log-mel (batch, n_mels, frames).

    ``forward`` returns {'embedding': (batch, 32) the last GRU output, 'logits': (batch, n_tags)
    pre-sigmoid scores, 'tags': (batch, n_tags) probabilities}. The conv blocks must pool the mel axis
    to one row, which holds for 96 to 191 mels; other sizes raise ValueError.
    """

    def __init__(self, n_tags: int = 50) -> None:
        super().__init__()
        self.spec_bn = nn.BatchNorm2d(1)
        widths = (1, *CRNN_CHANNELS)
        for index, pool in enumerate(CRNN_POOLING):
            self.add_module(f"layer{index + 1}", ConvBlock(widths[index], widths[index + 1], pool))
        self.n_blocks = len(CRNN_POOLING)
        self.layer5 = nn.GRU(CRNN_CHANNELS[-1], GRU_HIDDEN, GRU_LAYERS, batch_first=True)
        self.dropout = nn.Dropout(0.5)
        self.dense = nn.Linear(GRU_HIDDEN, n_tags)

    def forward(self, logmel: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.spec_bn(logmel.unsqueeze(1))
        for index in range(1, self.n_blocks + 1):
            x = getattr(self, f"layer{index}")(x)
        if x.shape[2] != 1:
            raise ValueError(f"a log-mel of {logmel.shape[1]} mels leaves {x.shape[2]} mel rows after the "
                             "conv blocks; the GRU needs 1 (use 96 to 191 mels)")
        sequence, _ = self.layer5(x.squeeze(2).transpose(1, 2))  # (batch, steps, hidden)
        embedding = sequence[:, -1]  # the top GRU layer at the last time step
        logits = self.dense(self.dropout(embedding))
        return {"embedding": embedding, "logits": logits, "tags": torch.sigmoid(logits)}


@register("crnn", architecture="CRNN", input_length=CRNN_SAMPLES, frontend=SEED_FCN, embedding_dim=GRU_HIDDEN)
def crnn(**kwargs) -> CRNN:
    """CRNN on 29 s windows (464000 samples at 16 kHz, 1813 frames)."""
    return CRNN(**kwargs)
