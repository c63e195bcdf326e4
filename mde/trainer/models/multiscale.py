"""The multi-scale CNN of the fourth seed (Dabral et al.; many-facedgod/Music-Tagger, ``src/trainer.py``
``get_model``, Theano), written in torch after the source's layer list, registered as ``multiscale``.

Input: (batch, 128 mels, 628 frames), the natural-log mel power at 11,025 Hz
(:data:`~mde.runtime.frontend_config.MULTISCALE`; 321,024 samples, ~29.1 s), standardised per band by the
training split's statistics (``band_norm``; the source's are over the whole dataset, test included).
Shapes below are (channels, mels, frames); every convolution has 'same' padding and a ReLU, every pool is
a max pool dropping what does not fill a window, unless 'avg':

  branch 1: conv 50 (3, 7) -> pool (2, 4) -> conv 100 (3, 5) -> pool (2, 4) -> conv 70 (3, 3) -> pool (2, 2)
            1 x 128 x 628 -> 50 x 64 x 157 -> 100 x 32 x 39 -> 70 x 16 x 19
  branch 2: avg pool (2, 4) of the input -> conv 100 (3, 5) -> pool (2, 4) -> conv 70 (3, 3) -> pool (2, 2)
            1 x 64 x 157 -> 100 x 32 x 39 -> 70 x 16 x 19
  branch 3: avg pool (2, 4) of branch 2's pooled input -> conv 70 (3, 3) -> pool (2, 2)
            1 x 32 x 39 -> 70 x 16 x 19
  the three concatenated (210 x 16 x 19) -> conv 70 (3, 3) -> conv 70 (3, 3) -> pool (2, 2): 70 x 8 x 9
  -> flatten (5,040) -> BatchNorm -> dropout -> Dense 500 + ReLU (the embedding) -> Dense n_tags, sigmoid.

The source's dropout layer takes 0.6 as the probability of keeping a unit: ours drops 0.4. The source
names no BatchNorm constants; torch's are kept (epsilon 1e-5, momentum 0.1). A public PyTorch port
differs (a max pool in branch 3, inverted dropout, other BatchNorm momentum); this follows the original.
"""

from __future__ import annotations

import torch
from torch import nn

from mde.runtime.frontend_config import MULTISCALE
from mde.trainer.models.registry import register

MULTISCALE_MELS = 128
MULTISCALE_FRAMES = 628
"""Frames of one input: 29.1 s at 11,025 Hz with a hop of 512 samples (centred frames)."""
MULTISCALE_SAMPLES = (MULTISCALE_FRAMES - 1) * MULTISCALE.hop_length
"""Samples of one input window at 11,025 Hz: 321,024 (~29.1 s) give 628 centred frames."""
EMBEDDING_DIM = 500
KEEP_PROBABILITY = 0.6
"""The source's dropout argument: the probability of keeping a unit."""


def conv_relu(in_channels: int, out_channels: int, kernel: tuple[int, int]) -> nn.Sequential:
    """A 'same'-padded convolution (odd kernel sides) and its ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=(kernel[0] // 2, kernel[1] // 2)),
                         nn.ReLU())


class MultiScaleCNN(nn.Module):
    """The three-branch network (see the module docstring). ``forward`` takes (batch, n_mels, frames) and
    returns {'embedding': (batch, 500), 'logits': (batch, n_tags) pre-sigmoid scores, 'tags': their sigmoid}.
    ``n_mels`` and ``frames`` fix the width of the flattened features (5,040 for 128 x 628)."""

    def __init__(self, n_tags: int = 50, n_mels: int = MULTISCALE_MELS, frames: int = MULTISCALE_FRAMES) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(
            conv_relu(1, 50, (3, 7)), nn.MaxPool2d((2, 4)),
            conv_relu(50, 100, (3, 5)), nn.MaxPool2d((2, 4)),
            conv_relu(100, 70, (3, 3)), nn.MaxPool2d((2, 2)))
        self.subsample1 = nn.AvgPool2d((2, 4))
        self.branch2 = nn.Sequential(
            conv_relu(1, 100, (3, 5)), nn.MaxPool2d((2, 4)),
            conv_relu(100, 70, (3, 3)), nn.MaxPool2d((2, 2)))
        self.subsample2 = nn.AvgPool2d((2, 4))
        self.branch3 = nn.Sequential(conv_relu(1, 70, (3, 3)), nn.MaxPool2d((2, 2)))
        self.last = nn.Sequential(conv_relu(210, 70, (3, 3)), conv_relu(70, 70, (3, 3)), nn.MaxPool2d((2, 2)))
        mels, steps = n_mels // 2 // 2 // 2 // 2, frames // 4 // 4 // 2 // 2
        self.features = 70 * mels * steps
        self.bn = nn.BatchNorm1d(self.features)
        self.dropout = nn.Dropout(1.0 - KEEP_PROBABILITY)
        self.dense = nn.Sequential(nn.Linear(self.features, EMBEDDING_DIM), nn.ReLU())
        self.top = nn.Linear(EMBEDDING_DIM, n_tags)

    def forward(self, logmel: torch.Tensor) -> dict[str, torch.Tensor]:
        x = logmel.unsqueeze(1)
        half = self.subsample1(x)
        quarter = self.subsample2(half)
        joined = torch.cat([self.branch1(x), self.branch2(half), self.branch3(quarter)], dim=1)
        embedding = self.dense(self.dropout(self.bn(self.last(joined).flatten(1))))
        logits = self.top(embedding)
        return {"embedding": embedding, "logits": logits, "tags": torch.sigmoid(logits)}


MULTISCALE_RECIPE = {
    "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 32, "epochs": 40,
    "schedule": "step", "milestones": [20, 30, 35], "gamma": 0.1, "crops_per_clip": 1,
    "merge_synonyms": True, "mtat_split": "random",
}
"""The source's training (``src/trainer.py``): Adam at 1e-3 without L2, batch 32, 40 epochs, the learning rate
divided by 10 after epochs 20, 30 and 35; on MagnaTagATune its synonyms merged before the top 50 tags and
its seeded random split (18,000 train, 2,000 valid, the rest test). The test figure is that of the best
validation epoch, as the source reports it. The source trains on one whole 628-frame spectrogram per clip;
ours on one random window of 628 frames per clip per epoch (the same for a 29.1 s MTAT clip)."""


@register("multiscale", architecture="MultiScaleCNN", input_length=MULTISCALE_SAMPLES, frontend=MULTISCALE,
          embedding_dim=EMBEDDING_DIM, recipe=MULTISCALE_RECIPE, band_norm=True)
def multiscale(n_tags: int = 50) -> MultiScaleCNN:
    return MultiScaleCNN(n_tags=n_tags)
