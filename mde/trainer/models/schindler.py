"""The audio network of the third seed (Schindler et al.; slychief/music_representation_from_text_and_labels,
``7_Experiment.ipynb``, ``NetKim2019``), written in torch after the source's layer list.

Input: (batch, 2 channels, 128 mels, frames), a stereo log-mel crop (216 frames in training, ~2.5 s at
22,050 Hz with a hop of 256). Shapes below are (channels, mels, frames) for a 216-frame crop; every
convolution is 'same'-padded and followed by a ReLU, every pool is a 2 x 2 max pool:

  conv 16 (5 x 5, stride 2 along time) -> pool:   16 x 64 x 54
  conv 32 (3 x 3) -> pool:                         32 x 32 x 27
  conv 64 (3 x 3) -> pool:                         64 x 16 x 13
  conv 64 (3 x 3) -> pool:                         64 x 8 x 6
  conv 128 (3 x 3) -> pool:                        128 x 4 x 3
  conv 128 (3 x 3) -> conv 256 (3 x 3):            256 x 4 x 3
  global max pool -> Dense 256 + ReLU -> dropout 0.5 -> Dense 128 + sigmoid: the 128-d embedding.

The source's Keras sketch of the same model (``kim2019.py``) ends in a global average pool and an ELU; its
experiments ran this torch one, which is what we follow. Multi-task training adds one linear head per
target space (:class:`TargetHeads`), from the embedding to that space's topics, regressed by cosine.
"""

from __future__ import annotations

import torch
from torch import nn

N_MELS = 128
CHANNELS = 2
CROP_FRAMES = 216
"""Frames of one training crop (the source's random crop of its 880-frame, 11 s window)."""
EMBEDDING_DIM = 128
FEATURE_DIM = 256


def _conv_relu(in_channels: int, out_channels: int, kernel: int, stride: tuple[int, int] = (1, 1)) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2), nn.ReLU())


class SchindlerCNN(nn.Module):
    """The network above. ``forward`` takes (batch, 2, n_mels, frames) (any number of frames from 32) and
    returns (batch, 128), the embedding, each value in (0, 1)."""

    def __init__(self, channels: int = CHANNELS, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_relu(channels, 16, 5, stride=(1, 2)), nn.MaxPool2d(2)]
        for in_channels, out_channels in ((16, 32), (32, 64), (64, 64), (64, 128)):
            layers += [_conv_relu(in_channels, out_channels, 3), nn.MaxPool2d(2)]
        layers += [_conv_relu(128, 128, 3), _conv_relu(128, FEATURE_DIM, 3), nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc_feature = nn.Sequential(nn.Linear(FEATURE_DIM, FEATURE_DIM), nn.ReLU(), nn.Dropout(0.5))
        self.fc_output = nn.Linear(FEATURE_DIM, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc_output(self.fc_feature(self.features(x))))


class TargetHeads(nn.Module):
    """One linear map per target space, from the embedding to its topics: {name: (batch, topics)}."""

    def __init__(self, topics: dict[str, int], embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(embedding_dim, n) for name, n in topics.items()})

    def forward(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(embedding) for name, head in self.heads.items()}
