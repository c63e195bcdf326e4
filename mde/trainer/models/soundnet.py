"""SoundNet-8 (Aytar, Vondrick & Torralba 2016, "SoundNet: learning sound representations from unlabeled
video"), the layer table of cvondrick/soundnet ``main_train.lua`` as KMASAHIRO/music2vec
(``music2vec/music2vec.py``, ``build_model``) rebuilds it, and ``soundnet``, a tagger on top of it.

Input: mono audio at 22,050 Hz times 256 (:data:`~mde.runtime.input_transform.SOUNDNET_GAIN`, so full
scale is [-256, 256]), (batch, samples). Each layer zero-pads both ends, convolves without further
padding, then BatchNorm -> ReLU (all but conv8_2) and an optional max pool (window = stride, floor):

  layer    channels  kernel  stride  padding  max pool
  conv1          16      64       2       32         8
  conv2          32      32       2       16         8
  conv3          64      16       2        8         -
  conv4         128       8       2        4         -
  conv5         256       4       2        2         4
  conv6         512       4       2        2         -
  conv7        1024       4       2        2         -
  conv8_2       401       8       2        0         -   (no BatchNorm, no ReLU: SoundNet's 401 Places2 scores)

Steps per layer: (steps + 2 padding - kernel) // stride + 1, then // pool. conv8_2 needs at least 8 conv7
steps, so at least 209,374 samples (9.5 s); SoundNet's own training crop, 20 s (441,000 samples), gives
conv7 15 steps and conv8_2 4 (one per 5 s video frame, as SoundNet's teacher labels).

The ``soundnet`` tagger (our choice; SoundNet itself was trained against image-network teachers, not
tags) takes those 20 s windows. Its embedding is conv7 averaged over time (1024-d); ``conv8_2`` is
conv8_2 averaged over time (401-d); logits = a linear layer on ``conv8_2`` and tags = sigmoid(logits).
So the tagging loss trains every layer of the table, as in SoundNet's fine-tuning (``main_finetune.lua``),
where a convolution over the last conv7 steps scores the classes.

Initialisation is SoundNet's (``main_train.lua``): conv weights N(0, 0.01) and zero biases, BatchNorm
scales N(1, 0.02) and zero shifts; BatchNorm uses torch's epsilon and momentum (torch7's, SoundNet's).
The tag head keeps torch's default initialisation (torch7's, as in SoundNet's fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mde.runtime.input_transform import SOUNDNET_GAIN
from mde.trainer.models.registry import register

SOUNDNET_RATE = 22050
"""SoundNet's input rate in Hz."""
SOUNDNET_SAMPLES = 20 * SOUNDNET_RATE
"""Samples of SoundNet's training crop (20 s at 22,050 Hz, ``main_train.lua`` ``fineSize``)."""


@dataclass(frozen=True)
class SoundNetLayer:
    """One row of the layer table: output channels, kernel, stride and zero padding (each end) in
    steps, the max pool after it (1: none), and whether BatchNorm -> ReLU follow the convolution."""

    name: str
    channels: int
    kernel: int
    stride: int
    padding: int
    pool: int = 1
    norm_relu: bool = True


SOUNDNET8 = (
    SoundNetLayer("conv1", 16, 64, 2, 32, pool=8),
    SoundNetLayer("conv2", 32, 32, 2, 16, pool=8),
    SoundNetLayer("conv3", 64, 16, 2, 8),
    SoundNetLayer("conv4", 128, 8, 2, 4),
    SoundNetLayer("conv5", 256, 4, 2, 2, pool=4),
    SoundNetLayer("conv6", 512, 4, 2, 2),
    SoundNetLayer("conv7", 1024, 4, 2, 2),
    SoundNetLayer("conv8_2", 401, 8, 2, 0, norm_relu=False),
)
"""SoundNet-8 up to its Places2 head, as music2vec uses it."""


def soundnet_steps(samples: int) -> dict[str, int]:
    """Output steps of each SoundNet-8 layer for an input of ``samples`` (0 or less: too short)."""
    steps, lengths = samples, {}
    for layer in SOUNDNET8:
        steps = ((steps + 2 * layer.padding - layer.kernel) // layer.stride + 1) // layer.pool
        lengths[layer.name] = steps
    return lengths


class SoundNetConv(nn.Module):
    """One table row: conv (with the row's zero padding) [-> BatchNorm -> ReLU] [-> max pool]."""

    def __init__(self, in_channels: int, layer: SoundNetLayer) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, layer.channels, layer.kernel, stride=layer.stride,
                              padding=layer.padding)
        self.bn = nn.BatchNorm1d(layer.channels) if layer.norm_relu else None
        self.pool = nn.MaxPool1d(layer.pool) if layer.pool > 1 else None
        assert self.conv.bias is not None  # convs here have biases
        nn.init.normal_(self.conv.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv.bias)
        if self.bn is not None:
            nn.init.normal_(self.bn.weight, 1.0, 0.02)
            nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = torch.relu(self.bn(x))
        return self.pool(x) if self.pool is not None else x


class SoundNet8(nn.Module):
    """The eight layers of :data:`SOUNDNET8` as submodules named after them.

    ``forward`` takes (batch, samples) at 22,050 Hz, already times 256, and returns every layer's output
    by name, each (batch, channels, steps).
    """

    def __init__(self) -> None:
        super().__init__()
        in_channels = 1
        for layer in SOUNDNET8:
            self.add_module(layer.name, SoundNetConv(in_channels, layer))
            in_channels = layer.channels

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        x, outputs = waveform.unsqueeze(1), {}
        for layer in SOUNDNET8:
            x = getattr(self, layer.name)(x)
            outputs[layer.name] = x
        return outputs


class SoundNetTagger(nn.Module):
    """SoundNet-8 with a linear tag head on conv8_2 averaged over time.

    ``forward`` takes (batch, samples) and returns {'embedding': (batch, 1024) conv7 averaged over time,
    'conv8_2': (batch, 401) conv8_2 averaged over time, 'logits': (batch, n_tags) pre-sigmoid scores,
    'tags': (batch, n_tags) probabilities}.
    """

    def __init__(self, n_tags: int = 50) -> None:
        super().__init__()
        self.soundnet = SoundNet8()
        self.dense = nn.Linear(SOUNDNET8[-1].channels, n_tags)

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        layers = self.soundnet(waveform)
        embedding = layers["conv7"].mean(dim=2)
        places = layers["conv8_2"].mean(dim=2)
        logits = self.dense(places)
        return {"embedding": embedding, "conv8_2": places, "logits": logits, "tags": torch.sigmoid(logits)}


PRECISE_BN_WINDOWS = 256
"""Training windows over which the SoundNet families recompute BatchNorm's statistics after each epoch
(``TrainConfig.precise_bn``): not in the sources, which start from pretrained layers whose statistics come
with them; from SoundNet's own initialisation, torch's running averages lag far behind (see
:mod:`mde.trainer.batchnorm`)."""

SOUNDNET_RECIPE = {
    "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "none", "batch_size": 64, "epochs": 50,
    "crops_per_clip": 1, "precise_bn": PRECISE_BN_WINDOWS,
}
"""SoundNet's recipe: Adam at 1e-3 (beta1 0.9), no weight decay, a constant rate (``main_train.lua`` and
``main_finetune.lua``), batch 64 (``main_train.lua``, whose 20 s crops these are), 50 epochs
(``main_finetune.lua``), one crop per clip; BatchNorm's statistics recomputed after each epoch
(:data:`PRECISE_BN_WINDOWS`, ours)."""


@register("soundnet", architecture="SoundNet8", input_length=SOUNDNET_SAMPLES, waveform_rate=SOUNDNET_RATE,
          input_transform=SOUNDNET_GAIN, embedding_dim=SOUNDNET8[-2].channels, recipe=SOUNDNET_RECIPE,
          layers=("conv8_2",))
def soundnet(**kwargs) -> SoundNetTagger:
    """SoundNet-8 tagger on 20 s windows (441,000 samples at 22,050 Hz, times 256)."""
    return SoundNetTagger(**kwargs)
