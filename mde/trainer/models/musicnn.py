"""musicnn (Pons & Serra 2019, "musicnn: pre-trained convolutional neural networks for music audio
tagging") and its VGG baseline, ported from the TensorFlow code of the ``musicnn`` package 0.1.0
(``models.py``: ``build_musicnn``, ``frontend``, ``midend``, ``backend``, ``vgg``).

Both take a log10(1 + 10000 x) log-mel patch (batch, 96 mel, frames); musicnn's own layout is
(batch, frames, 96), so the TF "height" axis is time and "width" is mel. Inside, torch tensors are
(batch, channels, time, mel) or (batch, channels, time). Batch norms are ``tf.layers`` ones: epsilon 1e-3,
momentum 0.99 (torch momentum 0.01). TF zero padding is reproduced exactly, with the extra row at the end
when the total is odd ('same' convolution), and max pools are 'valid' (floor).

MusiCNN, any number of frames:
  input BN -> front end: timbral convs 7 x 38 and 7 x 67 mel (204 filters each, time padded 3 + 3,
  'valid' over mel) and temporal convs 128, 64, 32 x 1 (51 filters each, 'same'), each
  conv -> ReLU -> BN -> max over mel; concatenated: 561 channels per frame
  -> mid end: three 1-d convs over time (kernel 7 frames, padding 3 + 3, 64 filters), each conv -> ReLU
  -> BN, the 2nd and 3rd with a residual; front end + the three outputs: 753 channels per frame
  -> back end: max and mean over time (``max_pool``, ``mean_pool``, 753 each), interleaved as TF
  flattens them ([max_0, mean_0, max_1, ...], 1506) -> BN -> dropout -> dense 200 -> ReLU -> BN
  (``penultimate``) -> dropout -> dense n_tags -> sigmoid (``tags``).

VGG, 187 frames only (its classifier sees a fixed 2 x 1 x 128 grid):
  input BN -> five blocks conv 3 x 3 'same' (128 filters) -> ReLU -> BN -> max pool, with pools
  (time, mel) 4 x 1 stride 2 x 2, then 2 x 2 / 2 three times, then 4 x 4 / 4 (dropout 0.25 between
  blocks) -> flatten in TF order (time, mel, channel) (``pool5``, 256) -> dropout -> dense n_tags ->
  sigmoid (``tags``). The TF model has no penultimate layer; ``pool5`` is its deepest feature. The
  larger pool1..pool4 maps of the original extractor are not returned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mde.runtime.frontend_config import MUSICNN as MUSICNN_FRONTEND
from mde.trainer.models.registry import register

N_MELS = 96
PATCH_FRAMES = 187
"""Frames of a 3 s training patch (librosa.time_to_frames(3 s) + 1 at 16 kHz, hop 256)."""
PATCH_SAMPLES = (PATCH_FRAMES - 1) * MUSICNN_FRONTEND.hop_length
"""Samples whose centred log-mel has exactly PATCH_FRAMES frames (47616 at 16 kHz)."""

TF_BN_EPS = 1e-3
TF_BN_MOMENTUM = 0.01  # torch convention for tf.layers' momentum 0.99

TIMBRAL_WIDTHS = (int(0.4 * N_MELS), int(0.7 * N_MELS))  # mel bins: 38, 67
TEMPORAL_LENGTHS = (128, 64, 32)  # frames
MIDEND_KERNEL = 7  # frames


def tf_batch_norm(channels: int, dims: int) -> nn.Module:
    """A BatchNorm with tf.layers' epsilon and momentum."""
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return norm(channels, eps=TF_BN_EPS, momentum=TF_BN_MOMENTUM)


def same_padding(kernel: int) -> tuple[int, int]:
    """TF 'same' padding (before, after) of a stride-1 axis: k - 1 in total, the odd one at the end."""
    return (kernel - 1) // 2, kernel // 2


def to_time_mel(logmel: torch.Tensor) -> torch.Tensor:
    """(batch, n_mels, frames) -> (batch, 1, frames, n_mels), the layout of the TF convolutions."""
    if logmel.dim() != 3 or logmel.shape[1] != N_MELS:
        raise ValueError(f"expected a log-mel of shape (batch, {N_MELS}, frames), got {tuple(logmel.shape)}")
    return logmel.transpose(1, 2).unsqueeze(1)


class FrontendBranch(nn.Module):
    """conv over (time, mel) -> ReLU -> BN -> max over the remaining mel bins: (batch, filters, frames).

    ``time_padding`` (before, after) in frames keeps the output as long as the input.
    """

    def __init__(self, filters: int, kernel: tuple[int, int], time_padding: tuple[int, int]) -> None:
        super().__init__()
        self.time_padding = time_padding
        self.conv = nn.Conv2d(1, filters, kernel)
        self.bn = tf_batch_norm(filters, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, *self.time_padding))
        return self.bn(F.relu(self.conv(x))).amax(dim=3)


class MidendLayer(nn.Module):
    """1-d conv over time (kernel 7 frames, zero padding 3 + 3) -> ReLU -> BN."""

    def __init__(self, in_channels: int, filters: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, filters, MIDEND_KERNEL, padding=MIDEND_KERNEL // 2)
        self.bn = tf_batch_norm(filters, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class MusiCNN(nn.Module):
    """musicnn on a log-mel patch (batch, 96, frames) of any length.

    ``forward`` returns {'tags': (batch, n_tags) probabilities, 'logits': (batch, n_tags) the pre-sigmoid
    scores, 'penultimate': (batch, units),
    'mean_pool', 'max_pool': (batch, 561 + 3 * midend_filters) time-pooled mid-end features}.
    """

    def __init__(self, n_tags: int = 50, midend_filters: int = 64, backend_units: int = 200,
                 frontend_scale: float = 1.6) -> None:
        super().__init__()
        self.input_bn = tf_batch_norm(1, 2)
        timbral_filters = int(frontend_scale * 128)
        temporal_filters = int(frontend_scale * 32)
        self.timbral = nn.ModuleList(
            FrontendBranch(timbral_filters, (7, width), (3, 3)) for width in TIMBRAL_WIDTHS
        )
        self.temporal = nn.ModuleList(
            FrontendBranch(temporal_filters, (length, 1), same_padding(length)) for length in TEMPORAL_LENGTHS
        )
        frontend_channels = len(TIMBRAL_WIDTHS) * timbral_filters + len(TEMPORAL_LENGTHS) * temporal_filters
        self.midend = nn.ModuleList([
            MidendLayer(frontend_channels, midend_filters),
            MidendLayer(midend_filters, midend_filters),
            MidendLayer(midend_filters, midend_filters),
        ])
        pool_channels = frontend_channels + 3 * midend_filters
        self.pool_bn = tf_batch_norm(2 * pool_channels, 1)
        self.dense = nn.Linear(2 * pool_channels, backend_units)
        self.dense_bn = tf_batch_norm(backend_units, 1)
        self.classifier = nn.Linear(backend_units, n_tags)
        self.dropout = nn.Dropout(0.5)

    def forward(self, logmel: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.input_bn(to_time_mel(logmel))
        frontend = torch.cat([branch(x) for branch in (*self.timbral, *self.temporal)], dim=1)
        first = self.midend[0](frontend)
        second = self.midend[1](first) + first
        third = self.midend[2](second) + second
        features = torch.cat([frontend, first, second, third], dim=1)  # (batch, 753, frames)
        max_pool = features.amax(dim=2)
        mean_pool = features.mean(dim=2)
        flat = torch.stack([max_pool, mean_pool], dim=2).flatten(1)
        penultimate = self.dense_bn(F.relu(self.dense(self.dropout(self.pool_bn(flat)))))
        logits = self.classifier(self.dropout(penultimate))
        return {"tags": torch.sigmoid(logits), "logits": logits, "penultimate": penultimate,
                "mean_pool": mean_pool, "max_pool": max_pool}


VGG_POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))
"""(kernel, stride) of each block's max pool, as (time, mel)."""


class VGGBlock(nn.Module):
    """conv 3 x 3 'same' -> ReLU -> BN -> max pool ('valid')."""

    def __init__(self, in_channels: int, filters: int, pool: tuple[int, int], stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, filters, 3, padding=1)
        self.bn = tf_batch_norm(filters, 2)
        self.pool = nn.MaxPool2d(pool, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn(F.relu(self.conv(x))))


class VGG(nn.Module):
    """musicnn's VGG baseline on a log-mel patch (batch, 96, 187); other lengths raise ValueError.

    ``forward`` returns {'tags': (batch, n_tags) probabilities, 'logits': (batch, n_tags) the pre-sigmoid
    scores, 'pool5': (batch, 2 * 1 * filters) the last
    pooled map flattened as TF flattens it (time, mel, channel)}.
    """

    def __init__(self, n_tags: int = 50, filters: int = 128) -> None:
        super().__init__()
        self.input_bn = tf_batch_norm(1, 2)
        widths = (1,) + (filters,) * len(VGG_POOLS)
        self.blocks = nn.ModuleList(
            VGGBlock(widths[i], widths[i + 1], pool, stride) for i, (pool, stride) in enumerate(VGG_POOLS)
        )
        self.block_dropout = nn.Dropout(0.25)
        self.dropout = nn.Dropout(0.5)
        self.classifier = nn.Linear(2 * filters, n_tags)

    def forward(self, logmel: torch.Tensor) -> dict[str, torch.Tensor]:
        x = to_time_mel(logmel)
        if x.shape[2] != PATCH_FRAMES:
            raise ValueError(f"the VGG models take {PATCH_FRAMES}-frame (3 s) patches, got {x.shape[2]} frames")
        x = self.input_bn(x)
        for index, block in enumerate(self.blocks):
            x = block(self.block_dropout(x) if index else x)
        pool5 = x.permute(0, 2, 3, 1).flatten(1)
        logits = self.classifier(self.dropout(pool5))
        return {"tags": torch.sigmoid(logits), "logits": logits, "pool5": pool5}


@register("musicnn", architecture="musicnn", input_length=PATCH_SAMPLES, frontend=MUSICNN_FRONTEND,
          embedding_dim=200, framing="mel_patches", embedding_output="penultimate", variable_length=True)
def musicnn(**kwargs) -> MusiCNN:
    """musicnn with 3 s (187-frame) patches by default; it accepts any patch length."""
    return MusiCNN(**kwargs)


@register("musicnn_vgg", architecture="musicnn_vgg", input_length=PATCH_SAMPLES, frontend=MUSICNN_FRONTEND,
          embedding_dim=256, framing="mel_patches", embedding_output="pool5")
def musicnn_vgg(**kwargs) -> VGG:
    """musicnn's VGG baseline on 3 s (187-frame) patches only."""
    return VGG(**kwargs)
