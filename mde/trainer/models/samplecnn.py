"""Sample-CNN (Lee et al. 2017) with the block types of Kim, Lee & Nam 2018 ("Sample-level CNN architectures
for music auto-tagging using raw waveforms"): the layer table of tae-jun/resemul (``model.py``, ``resemul``
with multi-level feature aggregation), at the 16 kHz of minzwon/sota-music-tagging-models.

Input: 59,049 = 3^10 samples of mono audio at 16 kHz (3.69 s), as they are, (batch, samples).

  conv0: conv 128, kernel 3, stride 3, no padding -> BatchNorm -> ReLU: 19,683 steps
  layer1..layer9: blocks ending in a max pool of 3 (19,683 -> 6,561 -> ... -> 1 step), channels 128, 128,
    256, 256, 256, 256, 256, 256, 512
  the maximum over steps of each of the last three blocks' outputs, concatenated: 256 + 256 + 512 = 1024
  -> dense1 1024 -> BatchNorm -> ReLU (the embedding) -> dropout 0.5 -> dense2 n_tags -> sigmoid (tags)

Blocks (kernel-3 convs with one step of zero padding each side):

  basic  conv -> BN -> ReLU -> max pool 3
  se     basic, then each channel times its squeeze-excitation gain
  res    conv -> BN -> ReLU -> dropout 0.2 -> conv -> BN, plus the input (through a 1x1 conv -> BN where the
         channels change) -> ReLU -> max pool 3
  rese   res, with the squeeze-excitation on the second BN's output before the sum

Squeeze-excitation with amplifying ratio 16: the mean over steps -> dense 16 C -> ReLU -> dense C ->
sigmoid, one gain per channel.

Initialisation is resemul's: He-uniform kernel-3 convs, Glorot-uniform 1x1 shortcuts and dense layers,
zero biases. BatchNorm keeps torch's epsilon and momentum (sota's PyTorch blocks), not Keras' (1e-3, 0.99).

sota-music-tagging-models' own SampleCNN (``training/model.py``) is another table: a tenth block (1x1
conv 512) after the nine, no multi-level aggregation, dense 512 -> n_tags, and its SampleCNNSE's ResSE_1d
blocks use kernel-3 shortcut convs and a squeeze-excitation of ratio 1. These four block types are
resemul's; its MagnaTagATune segments are at 22,050 Hz, sota's (and ours) at 16 kHz.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from mde.errors import MdeError
from mde.trainer.models.registry import register

SAMPLECNN_RATE = 16000
"""Input rate in Hz (sota-music-tagging-models')."""
SAMPLECNN_WIDTHS = (128, 128, 256, 256, 256, 256, 256, 256, 512)
"""Output channels of the nine blocks (the first conv has 128 too)."""
AGGREGATED_BLOCKS = 3
"""How many of the last blocks' global max pools are concatenated (multi-level aggregation)."""
AMPLIFYING_RATIO = 16
"""The squeeze-excitation's hidden width over its channels (resemul's ``--alpha``)."""
RES_DROPOUT = 0.2
HEAD_DROPOUT = 0.5
BLOCK_MODELS = {"basic": "samplecnn", "se": "samplecnn_se", "res": "samplecnn_res", "rese": "samplecnn_rese"}
"""``mde train --block`` value -> the registry name of Sample-CNN with that block."""


def input_samples(n_blocks: int) -> int:
    """Samples that a Sample-CNN of ``n_blocks`` blocks takes down to one step: 3 ** (n_blocks + 1)."""
    return 3 ** (n_blocks + 1)


SAMPLECNN_SAMPLES = input_samples(len(SAMPLECNN_WIDTHS))
"""59,049 samples per window (3.69 s at 16 kHz)."""


def samplecnn_model(model: str, block: Optional[str]) -> str:
    """The registry name ``mde train --model MODEL --block BLOCK`` trains: ``model`` itself without a block;
    with one, Sample-CNN's variant of that block (MdeError unless ``model`` is 'samplecnn')."""
    if block is None:
        return model
    if model != "samplecnn":
        raise MdeError(f"--block applies to --model samplecnn only, not {model!r}")
    if block not in BLOCK_MODELS:
        raise MdeError(f"--block must be one of {', '.join(BLOCK_MODELS)}, got {block!r}")
    return BLOCK_MODELS[block]


def he_conv(in_channels: int, out_channels: int, stride: int = 1, padding: int = 1) -> nn.Conv1d:
    """A kernel-3 conv initialised as resemul's: He-uniform weights, zero bias."""
    conv = nn.Conv1d(in_channels, out_channels, 3, stride=stride, padding=padding)
    assert conv.bias is not None  # built with one
    nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return conv


def glorot(layer: nn.Conv1d | nn.Linear) -> nn.Module:
    """``layer`` with Glorot-uniform weights and a zero bias (Keras' default)."""
    assert layer.bias is not None  # built with one
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class SqueezeExcitation(nn.Module):
    """(batch, C, steps) -> the same times a gain per channel: sigmoid(dense(relu(dense(mean over steps))))."""

    def __init__(self, channels: int, ratio: int = AMPLIFYING_RATIO) -> None:
        super().__init__()
        self.dense1 = glorot(nn.Linear(channels, channels * ratio))
        self.dense2 = glorot(nn.Linear(channels * ratio, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gains = torch.sigmoid(self.dense2(torch.relu(self.dense1(x.mean(dim=2)))))
        return x * gains.unsqueeze(2)


class BasicBlock(nn.Module):
    """conv -> BN -> ReLU -> max pool 3, then the squeeze-excitation with ``excite`` (the 'se' block)."""

    def __init__(self, in_channels: int, out_channels: int, excite: bool = False) -> None:
        super().__init__()
        self.conv = he_conv(in_channels, out_channels)
        self.bn = nn.BatchNorm1d(out_channels)
        self.mp = nn.MaxPool1d(3)
        self.se = SqueezeExcitation(out_channels) if excite else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mp(torch.relu(self.bn(self.conv(x))))
        return self.se(x) if self.se is not None else x


class ResidualBlock(nn.Module):
    """conv -> BN -> ReLU -> dropout 0.2 -> conv -> BN [-> squeeze-excitation with ``excite``, the 'rese'
    block], plus the input or its 1x1 conv -> BN, -> ReLU -> max pool 3."""

    def __init__(self, in_channels: int, out_channels: int, excite: bool = False) -> None:
        super().__init__()
        self.conv_1 = he_conv(in_channels, out_channels)
        self.bn_1 = nn.BatchNorm1d(out_channels)
        self.dropout = nn.Dropout(RES_DROPOUT)
        self.conv_2 = he_conv(out_channels, out_channels)
        self.bn_2 = nn.BatchNorm1d(out_channels)
        self.se = SqueezeExcitation(out_channels) if excite else None
        self.projects = in_channels != out_channels
        if self.projects:
            self.conv_3 = glorot(nn.Conv1d(in_channels, out_channels, 1))
            self.bn_3 = nn.BatchNorm1d(out_channels)
        self.mp = nn.MaxPool1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn_2(self.conv_2(self.dropout(torch.relu(self.bn_1(self.conv_1(x))))))
        if self.se is not None:
            out = self.se(out)
        shortcut = self.bn_3(self.conv_3(x)) if self.projects else x
        return self.mp(torch.relu(shortcut + out))


def make_block(block: str, in_channels: int, out_channels: int) -> nn.Module:
    """A block of type 'basic', 'se', 'res' or 'rese'."""
    if block in ("basic", "se"):
        return BasicBlock(in_channels, out_channels, excite=block == "se")
    if block in ("res", "rese"):
        return ResidualBlock(in_channels, out_channels, excite=block == "rese")
    raise ValueError(f"unknown Sample-CNN block {block!r}; known: {', '.join(BLOCK_MODELS)}")


class SampleCNN(nn.Module):
    """Sample-CNN with multi-level aggregation; ``widths`` are the blocks' channels (the first conv has
    ``widths[0]``), so the input is :func:`input_samples` (len(widths)) long.

    ``forward`` takes (batch, samples) (or (batch, ``in_channels``, steps) when ``in_channels`` > 1, as
    Music-SincNet feeds it its filter outputs) and returns {'embedding': (batch, sum of the last three
    widths) the ReLU output of dense1 -> BN, 'logits': (batch, n_tags) pre-sigmoid scores, 'tags': (batch,
    n_tags) probabilities}; with ``n_tags`` None there is no tag head (see :class:`SampleCNNEncoder`).
    """

    def __init__(self, block: str = "basic", n_tags: Optional[int] = 50, widths: Sequence[int] = SAMPLECNN_WIDTHS,
                 in_channels: int = 1) -> None:
        super().__init__()
        if len(widths) < AGGREGATED_BLOCKS:
            raise ValueError(f"Sample-CNN needs at least {AGGREGATED_BLOCKS} blocks, got {len(widths)}")
        self.in_channels = in_channels
        self.conv0 = he_conv(in_channels, widths[0], stride=3, padding=0)
        self.bn0 = nn.BatchNorm1d(widths[0])
        self.n_blocks = len(widths)
        for index, (cin, cout) in enumerate(zip((widths[0], *widths), widths)):
            self.add_module(f"layer{index + 1}", make_block(block, cin, cout))
        aggregated = sum(widths[-AGGREGATED_BLOCKS:])
        self.dense1 = glorot(nn.Linear(aggregated, aggregated))
        self.bn = nn.BatchNorm1d(aggregated)
        if n_tags is not None:
            self.dropout = nn.Dropout(HEAD_DROPOUT)
            self.dense2 = glorot(nn.Linear(aggregated, n_tags))

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """The embedding (batch, sum of the last three widths) of (batch, samples) or (batch, in_channels, steps)."""
        x = waveform.unsqueeze(1) if self.in_channels == 1 else waveform
        x = torch.relu(self.bn0(self.conv0(x)))
        pooled = []
        for index in range(1, self.n_blocks + 1):
            x = getattr(self, f"layer{index}")(x)
            if index > self.n_blocks - AGGREGATED_BLOCKS:
                pooled.append(x.amax(dim=2))
        return torch.relu(self.bn(self.dense1(torch.cat(pooled, dim=1))))

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = self.features(waveform)
        logits = self.dense2(self.dropout(embedding))
        return {"embedding": embedding, "logits": logits, "tags": torch.sigmoid(logits)}


class SampleCNNEncoder(SampleCNN):
    """Sample-CNN without its tag head, as JETATAG's encoders use it: ``forward`` returns the embedding
    (batch, sum of the last three widths), 1024 for the standard widths."""

    def __init__(self, block: str = "basic", widths: Sequence[int] = SAMPLECNN_WIDTHS, in_channels: int = 1) -> None:
        super().__init__(block, n_tags=None, widths=widths, in_channels=in_channels)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.features(waveform)


SAMPLECNN_RECIPE = {
    "optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "batch_size": 16, "epochs": 200,
    "schedule": "adam_then_sgd", "switch_epoch": 80, "switch_lr": 1e-3, "milestones": [100, 120], "gamma": 0.1,
    "crops_per_clip": 1,
}
"""sota-music-tagging-models' training (``training/main.py``, ``solver.py``): batch 16, 200 epochs, Adam at
1e-4 with weight decay 1e-4; after 80 epochs SGD (Nesterov, momentum 0.9, weight decay 1e-4) at 1e-3, then
1e-4 after epoch 100 and 1e-5 after 120; one random crop per clip per epoch, 16 crops per clip at evaluation."""


def _registered(block: str, architecture: str):
    """``register`` with what the four Sample-CNN variants share."""
    return register(BLOCK_MODELS[block], architecture=architecture, input_length=SAMPLECNN_SAMPLES,
                    waveform_rate=SAMPLECNN_RATE, embedding_dim=sum(SAMPLECNN_WIDTHS[-AGGREGATED_BLOCKS:]),
                    recipe=SAMPLECNN_RECIPE)


@_registered("basic", "SampleCNN")
def samplecnn(**kwargs) -> SampleCNN:
    """Sample-CNN with basic blocks on 3.69 s windows (59,049 samples at 16 kHz)."""
    return SampleCNN("basic", **kwargs)


@_registered("se", "SampleCNN_SE")
def samplecnn_se(**kwargs) -> SampleCNN:
    """Sample-CNN with SE blocks on 3.69 s windows (59,049 samples at 16 kHz)."""
    return SampleCNN("se", **kwargs)


@_registered("res", "SampleCNN_Res")
def samplecnn_res(**kwargs) -> SampleCNN:
    """Sample-CNN with residual blocks on 3.69 s windows (59,049 samples at 16 kHz)."""
    return SampleCNN("res", **kwargs)


@_registered("rese", "SampleCNN_ReSE")
def samplecnn_rese(**kwargs) -> SampleCNN:
    """Sample-CNN with residual SE blocks on 3.69 s windows (59,049 samples at 16 kHz)."""
    return SampleCNN("rese", **kwargs)
