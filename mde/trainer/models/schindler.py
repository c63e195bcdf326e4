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
experiments ran this torch one, which is what we follow, with one difference: the weights start He-normal
(fan-in, ReLU gain; biases zero) instead of torch's default uniform init in the layers a ReLU follows (the
sigmoid output layer keeps torch's). Without batch normalisation the default init shrinks the activations
layer by layer (their std at the global pool is about 1e-3 for standardised input), and on the small corpora
we can train here the embedding then collapses to a constant whose heads predict the mean target (the training
loss stalls at the mean predictor's); He-normal starts with activations of unit scale and trains past it (see
the README). Multi-task training adds one linear head per
target space (:class:`TargetHeads`), from the embedding to that space's topics, regressed by cosine.
"""

from __future__ import annotations

from typing import Optional, cast

import torch
from torch import nn

from mde.runtime.frontend_config import SCHINDLER
from mde.runtime.package import TARGET_PREFIX
from mde.trainer.models.registry import register

N_MELS = 128
CHANNELS = 2
CROP_FRAMES = 216
"""Frames of one training crop (the source's random crop of its 880-frame, 11 s window)."""
CROP_SAMPLES = (CROP_FRAMES - 1) * SCHINDLER.hop_length
"""Samples at 22,050 Hz whose centred log-mel has CROP_FRAMES frames (2.5 s)."""

SCHINDLER_RECIPE = {
    "optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-5, "schedule": "none", "batch_size": 1000, "epochs": 100,
    "crops_per_clip": 1, "loss": "triplet", "targets": "tags", "topics": 340, "triplet_aggregation": "hardest",
}
"""The source's training settings (``7_Experiment.ipynb``): its ``OnlineTripletLoss`` (batch-hard, margin 1.0,
positives above a target cosine of 0.9), Adam at 1e-4 with weight decay 1e-5, batches of 1000 tracks, one random
216-frame crop per track per epoch, 100 epochs (its default), 340-topic target spaces. (The cosine regression of
the multi-task CBMI 2019 paper is ``--loss cosine``.)"""
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
        for module in [*self.features.modules(), *self.fc_feature.modules()]:  # (the layers a ReLU follows)
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(cast(torch.Tensor, module.bias))  # (every layer here has one)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc_output(self.fc_feature(self.features(x))))


class TargetHeads(nn.Module):
    """One linear map per target space, from the embedding to its topics: {name: (batch, topics)}."""

    def __init__(self, topics: dict[str, int], embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(embedding_dim, n) for name, n in topics.items()})

    def forward(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(embedding) for name, head in self.heads.items()}


class Schindler(nn.Module):
    """The audio network with its target heads: (batch, 2, n_mels, frames) -> {'embedding': (batch, 128),
    'target_<kind>': (batch, topics) for each target space in ``topics``}."""

    def __init__(self, topics: dict[str, int]) -> None:
        super().__init__()
        self.audio = SchindlerCNN()
        self.heads = TargetHeads(topics)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = self.audio(x)
        return {"embedding": embedding,
                **{TARGET_PREFIX + name: out for name, out in self.heads(embedding).items()}}


@register("schindler", architecture="SchindlerCNN", input_length=CROP_SAMPLES, frontend=SCHINDLER,
          embedding_dim=EMBEDDING_DIM, channels=CHANNELS, n_tags=0, variable_length=True, band_norm=True,
          recipe=SCHINDLER_RECIPE, objective="similarity")
def schindler(n_tags: int = 0, topics: Optional[dict[str, int]] = None) -> Schindler:
    """The network; ``n_tags`` is ignored (it has no tag output), ``topics`` {kind: size} sizes its heads
    (default: one 'tags' head of 340 topics)."""
    return Schindler(topics or {"tags": 340})
