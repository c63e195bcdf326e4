"""Short-chunk CNNs (Won et al. 2020, "Evaluation of CNN-based automatic music tagging models"), as in
minzwon/sota-music-tagging-models (``ShortChunkCNN``, ``ShortChunkCNN_Res``); the residual one is the
first seed's FCN037. Both take 3.7 s windows (59049 samples at 16 kHz: 128 mel x 231 frames, dB).

Seven blocks (channels 1 -> c -> c -> 2c -> 2c -> 2c -> 2c -> 4c, c = 128), each halving both axes, take
the 128 x 231 grid to 1 x 1 (1 x 2 for the residual one); a global max pool over what is left gives the
4c = 512-d embedding; logits = dense2(dropout(relu(bn(dense1(embedding))))) and tags = sigmoid(logits).

ShortChunkCNN's blocks are conv 3x3 -> BN -> ReLU -> max pool 2x2 (the FCN's ConvBlock);
ShortChunkCNN_Res's are two strided 3x3 convs with a conv shortcut (``ResBlock``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mde.runtime.frontend_config import SEED_FCN
from mde.trainer.models.fcn import ConvBlock
from mde.trainer.models.registry import register

SHORTCHUNK_SAMPLES = 59049
"""Samples per window (3.69 s at 16 kHz, 231 frames), sota's ``input_length`` for the short-chunk models."""


class ResBlock(nn.Module):
    """Two 3x3 convs (the first strided) with BatchNorm, plus a strided conv+BN shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn_1 = nn.BatchNorm2d(out_channels)
        self.conv_2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn_2 = nn.BatchNorm2d(out_channels)
        self.projects = stride != 1 or in_channels != out_channels
        if self.projects:
            self.conv_3 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
            self.bn_3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn_2(self.conv_2(self.relu(self.bn_1(self.conv_1(x)))))
        shortcut = self.bn_3(self.conv_3(x)) if self.projects else x
        return self.relu(shortcut + out)


class ShortChunkTagger(nn.Module):
    """The short-chunk body and head around seven blocks built by ``make_block(in_channels, out_channels)``.

    ``forward`` takes a dB log-mel (batch, n_mels, frames) and returns {'embedding': (batch, 4 * n_channels),
    'logits': (batch, n_tags) pre-sigmoid scores, 'tags': (batch, n_tags) probabilities}.
    """

    def __init__(self, make_block: Callable[[int, int], nn.Module], n_channels: int = 128,
                 n_tags: int = 50) -> None:
        super().__init__()
        self.spec_bn = nn.BatchNorm2d(1)
        c = n_channels
        widths = (1, c, c, 2 * c, 2 * c, 2 * c, 2 * c, 4 * c)
        self.n_blocks = len(widths) - 1
        for index in range(self.n_blocks):
            self.add_module(f"layer{index + 1}", make_block(widths[index], widths[index + 1]))
        self.dense1 = nn.Linear(4 * c, 4 * c)
        self.bn = nn.BatchNorm1d(4 * c)
        self.dense2 = nn.Linear(4 * c, n_tags)
        self.dropout = nn.Dropout(0.5)
        self.relu = nn.ReLU()

    def forward(self, logmel: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.spec_bn(logmel.unsqueeze(1))
        for index in range(1, self.n_blocks + 1):
            x = getattr(self, f"layer{index}")(x)
        embedding = x.amax(dim=(2, 3))  # global max pool over the remaining mel x frames grid
        hidden = self.dropout(self.relu(self.bn(self.dense1(embedding))))
        logits = self.dense2(hidden)
        return {"embedding": embedding, "logits": logits, "tags": torch.sigmoid(logits)}


class ShortChunkCNNRes(ShortChunkTagger):
    """ShortChunkCNN_Res: residual blocks of stride 2 (128 x 231 -> 1 x 2 before the global max pool)."""

    def __init__(self, n_channels: int = 128, n_tags: int = 50) -> None:
        super().__init__(lambda cin, cout: ResBlock(cin, cout, stride=2), n_channels, n_tags)


class ShortChunkCNN(ShortChunkTagger):
    """ShortChunkCNN: plain conv blocks with 2x2 max pools (128 x 231 -> 1 x 1 before the global max pool)."""

    def __init__(self, n_channels: int = 128, n_tags: int = 50) -> None:
        super().__init__(lambda cin, cout: ConvBlock(cin, cout, (2, 2)), n_channels, n_tags)


@register("shortchunk_res", architecture="ShortChunkCNN_Res", input_length=SHORTCHUNK_SAMPLES,
          frontend=SEED_FCN, embedding_dim=512)
def shortchunk_res(**kwargs) -> ShortChunkCNNRes:
    """ShortChunkCNN_Res on 3.7 s windows (59049 samples at 16 kHz, 231 frames)."""
    return ShortChunkCNNRes(**kwargs)


@register("shortchunk", architecture="ShortChunkCNN", input_length=SHORTCHUNK_SAMPLES, frontend=SEED_FCN,
          embedding_dim=512)
def shortchunk(**kwargs) -> ShortChunkCNN:
    """ShortChunkCNN on 3.7 s windows (59049 samples at 16 kHz, 231 frames)."""
    return ShortChunkCNN(**kwargs)
