"""Short-chunk CNN with residual connections (Won et al. 2020, "Evaluation of CNN-based automatic music
tagging models"), as in minzwon/sota-music-tagging-models and the first seed's FCN037 (3.7 s windows).

Seven residual blocks of stride 2 (channels 1 -> c -> c -> 2c -> 2c -> 2c -> 2c -> 4c, c = 128) take the
128 mel x 231 frame grid to 1 x 2; a global max pool over what is left gives the 4c = 512-d embedding;
tags are sigmoid(dense2(dropout(relu(bn(dense1(embedding)))))).
"""

from __future__ import annotations

import torch
from torch import nn

from mde.runtime.frontend_config import SEED_FCN
from mde.trainer.models.registry import register


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


class ShortChunkCNNRes(nn.Module):
    """ShortChunkCNN_Res on a dB log-mel (batch, n_mels, frames).

    ``forward`` returns {'embedding': (batch, 4 * n_channels), 'tags': (batch, n_tags) probabilities}.
    """

    def __init__(self, n_channels: int = 128, n_tags: int = 50) -> None:
        super().__init__()
        self.spec_bn = nn.BatchNorm2d(1)
        c = n_channels
        widths = (1, c, c, 2 * c, 2 * c, 2 * c, 2 * c, 4 * c)
        self.n_blocks = len(widths) - 1
        for index in range(self.n_blocks):
            self.add_module(f"layer{index + 1}", ResBlock(widths[index], widths[index + 1], stride=2))
        self.dense1 = nn.Linear(4 * c, 4 * c)
        self.bn = nn.BatchNorm1d(4 * c)
        self.dense2 = nn.Linear(4 * c, n_tags)
        self.dropout = nn.Dropout(0.5)
        self.relu = nn.ReLU()

    def forward(self, logmel: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.spec_bn(logmel.unsqueeze(1))
        for index in range(1, self.n_blocks + 1):
            x = getattr(self, f"layer{index}")(x)
        embedding = x.amax(dim=(2, 3))  # global max pool over the remaining 1 x frames grid
        hidden = self.dropout(self.relu(self.bn(self.dense1(embedding))))
        tags = torch.sigmoid(self.dense2(hidden))
        return {"embedding": embedding, "tags": tags}


@register("shortchunk_res", architecture="ShortChunkCNN_Res", input_length=59049, frontend=SEED_FCN,
          embedding_dim=512)
def shortchunk_res(**kwargs) -> ShortChunkCNNRes:
    """ShortChunkCNN_Res on 3.7 s windows (59049 samples at 16 kHz, 231 frames)."""
    return ShortChunkCNNRes(**kwargs)
