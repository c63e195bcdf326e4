"""FCN (Choi et al. 2016, "Automatic tagging using deep convolutional neural networks") as in the first
seed (seungheondoh/Music_DeepEmbedding_Extractor, model/net.py and model/ops.py).

Five blocks conv 3x3 (padding 1, bias) -> BatchNorm2d -> ReLU -> MaxPool2d, channels 1 -> 64 -> 128 ->
128 -> 128 -> 64, after a BatchNorm2d(1) on the dB log-mel. The pooling sizes (mel, frame) reduce the
window's 128 mel x frames grid to 1 x 1, so the embedding is the flattened 64-channel output of the last
block (taken before dropout); logits are dense(dropout(embedding)) and tags sigmoid(logits).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mde.runtime.frontend_config import SEED_FCN
from mde.trainer.models.registry import register

FCN29_POOLING = ((2, 4), (2, 4), (2, 4), (3, 5), (4, 4))
"""(mel, frame) max-pooling per block of the 29 s FCN: 128 x 1813 -> 1 x 1."""
FCN05_POOLING = ((4, 2), (2, 2), (2, 2), (2, 2), (3, 2))
"""(mel, frame) max-pooling per block of the 0.5 s FCN05: 128 x 32 -> 1 x 1."""
FCN_CHANNELS = (64, 128, 128, 128, 64)


class ConvBlock(nn.Module):
    """conv 3x3 (same padding) -> BatchNorm2d -> ReLU -> MaxPool2d(pooling)."""

    def __init__(self, in_channels: int, out_channels: int, pooling: tuple[int, ...]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.mp = nn.MaxPool2d(pooling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mp(self.relu(self.bn(self.conv(x))))


class FCN(nn.Module):
    """Fully convolutional tagger on a dB log-mel (batch, n_mels, frames).

    ``forward`` returns {'embedding': (batch, 64), 'logits': (batch, n_tags) pre-sigmoid scores,
    'tags': (batch, n_tags) probabilities}.
    """

    def __init__(self, pooling: Sequence[tuple[int, int]], n_tags: int = 50,
                 channels: Sequence[int] = FCN_CHANNELS) -> None:
        super().__init__()
        if len(pooling) != len(channels):
            raise ValueError(f"{len(channels)} blocks need {len(channels)} pooling sizes, got {len(pooling)}")
        self.spec_bn = nn.BatchNorm2d(1)
        widths = (1, *channels)
        for index, pool in enumerate(pooling):
            self.add_module(f"layer{index + 1}", ConvBlock(widths[index], widths[index + 1], tuple(pool)))
        self.n_blocks = len(pooling)
        self.dense = nn.Linear(channels[-1], n_tags)
        self.dropout = nn.Dropout(0.5)

    def forward(self, logmel: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.spec_bn(logmel.unsqueeze(1))
        for index in range(1, self.n_blocks + 1):
            x = getattr(self, f"layer{index}")(x)
        embedding = x.flatten(1)
        logits = self.dense(self.dropout(embedding))
        return {"embedding": embedding, "logits": logits, "tags": torch.sigmoid(logits)}


@register("fcn", architecture="FCN", input_length=464000, frontend=SEED_FCN, embedding_dim=64)
def fcn29(**kwargs) -> FCN:
    """FCN on 29 s windows (464000 samples at 16 kHz, 1813 frames)."""
    return FCN(FCN29_POOLING, **kwargs)


@register("fcn05", architecture="FCN05", input_length=8000, frontend=SEED_FCN, embedding_dim=64)
def fcn05(**kwargs) -> FCN:
    """FCN05 on 0.5 s windows (8000 samples at 16 kHz, 32 frames)."""
    return FCN(FCN05_POOLING, **kwargs)
