"""JETATAG (jaehwlee/jetatag, ``training/model.py`` and ``training/solver.py`` at b6a1aac): a waveform
encoder whose 1024-d features, projected, land where a tag autoencoder puts the clip's tags, and a
classifier that tags from the encoder's features. Built from scratch in torch after its layer list.

Input: a window of 16 kHz mono audio, peak-normalised then mu-law companded with mu 255
(:data:`~mde.runtime.input_transform.MULAW_PEAK`), (batch, samples): 80,000 samples (5 s) for the
Harmonic CNN, 59,049 (3.69 s) for Sample-CNN and Music-SincNet. Then:

  encoder   'hc' Harmonic CNN (:mod:`~mde.trainer.models.harmonic_cnn`), 'ms' Music-SincNet
            (:mod:`~mde.trainer.models.sincnet`) or 'sc' Sample-CNN with a block type
            (:mod:`~mde.trainer.models.samplecnn`): 1024 features (the 'embedding' output)
  projector Dense 128 -> LeakyReLU 0.3 -> Dense 128 -> LeakyReLU 0.3 -> unit norm: 'joint' (128)
  classifier Dense 256 -> LeakyReLU -> Dense 256 -> LeakyReLU -> unit norm -> dropout 0.5 -> Dense n_tags:
            'logits', and their sigmoid 'tags'
  tag encoder (multi-hot tags) Dense 128 -> LeakyReLU -> Dense 128 -> LeakyReLU -> unit norm (128)
  tag decoder Dense 128 -> LeakyReLU -> Dense n_tags -> sigmoid

The tag encoder and decoder see tags, not audio; :meth:`Jetatag.embed_tags` maps tag sets into the joint
space. Dense layers start as Keras' (Glorot-uniform, zero bias); the source builds a BatchNorm inside its
Dense+LeakyReLU layer and never calls it, so there is none here.

The joint-embedding loss (:func:`joint_loss`), stage 1 of the source: the tag decoder's mean squared
error on the clip's tags, plus ``(1 - cos(z_tags, z_audio)) + (1 - cos(1 - z_tags, 1 - z_audio))``,
weights 1:1. Where we differ: the source passes Keras' ``CosineSimilarity`` loss, which is already the
negative cosine, so its ``1 - loss`` is ``1 + cos`` and pushes the two embeddings apart; we implement the
alignment it intends. Unit norms divide by max(norm, 1e-12) (the source divides by the bare norm).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from mde.runtime.input_transform import MULAW_PEAK
from mde.trainer.models.harmonic_cnn import HC_FEATURES, HC_RATE, HC_SAMPLES, HarmonicCNN
from mde.trainer.models.keras_init import keras_dense
from mde.trainer.models.registry import register
from mde.trainer.models.samplecnn import BLOCK_MODELS, SAMPLECNN_SAMPLES, SampleCNNEncoder
from mde.trainer.models.sincnet import MS_SAMPLES, MusicSincNet
from mde.trainer.models.soundnet import PRECISE_BN_WINDOWS

FEATURES = HC_FEATURES
"""Size of every encoder's feature vector (the 'embedding' output)."""
JOINT_DIM = 128
"""Size of the joint (tag-space) embedding, the source's latent for MagnaTagATune."""
CLASSIFIER_DIM = 256
LEAKY_SLOPE = 0.3
CLASSIFIER_DROPOUT = 0.5
ENCODERS = ("hc", "ms", "sc")
"""``--encoder`` values: Harmonic CNN, Music-SincNet, Sample-CNN (with ``--block``)."""


def dense_leaky(in_features: int, out_features: int) -> nn.Sequential:
    """The source's DenseLeakyReluLayer: Dense (Keras' initialisation) -> LeakyReLU 0.3."""
    return nn.Sequential(keras_dense(in_features, out_features), nn.LeakyReLU(LEAKY_SLOPE))


def unit_norm(x: torch.Tensor) -> torch.Tensor:
    """Each row divided by its Euclidean norm (at least 1e-12)."""
    return nn.functional.normalize(x, dim=1)


class TagEncoder(nn.Module):
    """Multi-hot tags (batch, n_tags) -> unit-norm joint embeddings (batch, ``dim``)."""

    def __init__(self, n_tags: int, dim: int = JOINT_DIM) -> None:
        super().__init__()
        self.layers = nn.Sequential(dense_leaky(n_tags, dim), dense_leaky(dim, dim))

    def forward(self, tags: torch.Tensor) -> torch.Tensor:
        return unit_norm(self.layers(tags))


class TagDecoder(nn.Module):
    """Joint embeddings (batch, ``dim``) -> tag logits (batch, n_tags); the tags are their sigmoid. The
    hidden layer has ``dim`` units (the source's MagnaTagATune latent, 128)."""

    def __init__(self, n_tags: int, dim: int = JOINT_DIM) -> None:
        super().__init__()
        self.layers = nn.Sequential(dense_leaky(dim, dim), keras_dense(dim, n_tags))

    def forward(self, joint: torch.Tensor) -> torch.Tensor:
        return self.layers(joint)


class Projector(nn.Module):
    """Encoder features (batch, 1024) -> unit-norm joint embeddings (batch, ``dim``)."""

    def __init__(self, features: int = FEATURES, dim: int = JOINT_DIM) -> None:
        super().__init__()
        self.layers = nn.Sequential(dense_leaky(features, dim), dense_leaky(dim, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return unit_norm(self.layers(features))


class Classifier(nn.Module):
    """Encoder features (batch, 1024) -> tag logits (batch, n_tags)."""

    def __init__(self, n_tags: int, features: int = FEATURES) -> None:
        super().__init__()
        self.hidden = nn.Sequential(dense_leaky(features, CLASSIFIER_DIM), dense_leaky(CLASSIFIER_DIM, CLASSIFIER_DIM))
        self.dropout = nn.Dropout(CLASSIFIER_DROPOUT)
        self.dense = keras_dense(CLASSIFIER_DIM, n_tags)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.dense(self.dropout(unit_norm(self.hidden(features))))


def build_encoder(encoder: str, block: str = "basic") -> nn.Module:
    """The waveform encoder ``encoder`` ('hc', 'ms' or 'sc'; ``block`` for 'sc'): (batch, samples) ->
    (batch, 1024)."""
    if encoder == "hc":
        return HarmonicCNN()
    if encoder == "ms":
        return MusicSincNet()
    if encoder == "sc":
        return SampleCNNEncoder(block)
    raise ValueError(f"unknown JETATAG encoder {encoder!r}; known: {', '.join(ENCODERS)}")


class Jetatag(nn.Module):
    """The encoder, projector, classifier and tag autoencoder of JETATAG (see the module docstring).
    ``encoder`` names one of :data:`ENCODERS` (``block`` for 'sc'), or is a module giving (batch,
    ``features``) itself.

    ``forward`` takes (batch, samples), mu-law companded, and returns {'embedding': (batch, 1024) the
    encoder's features, 'joint': (batch, 128) their unit-norm projection into the tag space, 'logits':
    (batch, n_tags) the classifier's pre-sigmoid scores, 'tags': (batch, n_tags) their sigmoid}.
    """

    def __init__(self, encoder: str | nn.Module = "sc", block: str = "basic", n_tags: int = 50,
                 features: int = FEATURES) -> None:
        super().__init__()
        self.encoder = build_encoder(encoder, block) if isinstance(encoder, str) else encoder
        self.projector = Projector(features)
        self.classifier = Classifier(n_tags, features)
        self.tag_encoder = TagEncoder(n_tags)
        self.tag_decoder = TagDecoder(n_tags)

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encoder(waveform)
        logits = self.classifier(features)
        return {"embedding": features, "joint": self.projector(features), "logits": logits,
                "tags": torch.sigmoid(logits)}

    def embed_tags(self, tags: torch.Tensor) -> torch.Tensor:
        """Multi-hot (or weighted) tag vectors (batch, n_tags) -> their joint embeddings (batch, 128)."""
        return self.tag_encoder(tags)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - the cosine similarity of each row pair, averaged over the batch."""
    return 1.0 - nn.functional.cosine_similarity(a, b, dim=1).mean()


def joint_loss(net: Jetatag, joint: torch.Tensor, tags: torch.Tensor) -> dict[str, torch.Tensor]:
    """Stage 1's loss for the audio's joint embeddings ``joint`` (batch, 128) and the clips' multi-hot
    ``tags`` (batch, n_tags): {'reconstruction': the tag decoder's mean squared error, 'alignment':
    (1 - cos(z_tags, joint)) + (1 - cos(1 - z_tags, 1 - joint)), 'total': their sum}."""
    z_tags = net.tag_encoder(tags)
    reconstruction = nn.functional.mse_loss(torch.sigmoid(net.tag_decoder(z_tags)), tags)
    alignment = cosine_distance(z_tags, joint) + cosine_distance(1.0 - z_tags, 1.0 - joint)
    return {"reconstruction": reconstruction, "alignment": alignment, "total": reconstruction + alignment}


JETATAG_RECIPE = {
    "optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "batch_size": 16, "epochs": 200,
    "schedule": "adam_then_sgd", "switch_epoch": 60, "switch_lr": 1e-3, "milestones": [80, 100], "gamma": 0.1,
    "crops_per_clip": 1, "joint_embedding": True, "stage1_epochs": 100, "precise_bn": PRECISE_BN_WINDOWS,
}
"""The source's training (``solver.py``): batch 16 (``main.py``), each stage from its own first epoch on
Adam at 1e-4 for 60 epochs, then SGD with Nesterov momentum 0.9 at 1e-3 for 20, then 1e-4 for 20: that is
the joint stage (100 epochs); the classifier stage (and noJE's joint training of encoder and classifier)
goes on at 1e-5 for 100 more (200 in all). No weight decay (the Sample-CNN convs declare an L2
regulariser, but the source's own training step never adds it to the loss); one random crop per clip per
epoch. The source's stage 2 carries stage 1's Adam state on; ours starts a fresh optimizer. Ours too:
BatchNorm's statistics recomputed after each epoch of the stages that train the encoder (as the SoundNet
families do, :data:`~mde.trainer.models.soundnet.PRECISE_BN_WINDOWS`): the Harmonic CNN keeps Keras'
momentum 0.99, whose running averages need far more steps than a small corpus gives."""


def _registered(name: str, architecture: str, input_length: int):
    """``register`` with what the JETATAG variants share."""
    return register(name, architecture=architecture, input_length=input_length, waveform_rate=HC_RATE,
                    input_transform=MULAW_PEAK, embedding_dim=FEATURES, recipe=JETATAG_RECIPE, layers=("joint",))


def jetatag_model(encoder: str, block: Optional[str]) -> str:
    """The registry name of JETATAG with ``encoder`` (and Sample-CNN's ``block``): jetatag_hc,
    jetatag_ms, jetatag_sc, jetatag_sc_se, jetatag_sc_res, jetatag_sc_rese."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown JETATAG encoder {encoder!r}; known: {', '.join(ENCODERS)}")
    if encoder != "sc":
        if block is not None:
            raise ValueError("--block applies to the sc encoder only (ms always uses rese blocks)")
        return f"jetatag_{encoder}"
    block = block or "basic"
    if block not in BLOCK_MODELS:
        raise ValueError(f"unknown Sample-CNN block {block!r}; known: {', '.join(BLOCK_MODELS)}")
    return "jetatag_sc" if block == "basic" else f"jetatag_sc_{block}"


@_registered("jetatag_hc", "JETATAG_HarmonicCNN", HC_SAMPLES)
def jetatag_hc(**kwargs) -> Jetatag:
    """JETATAG with the Harmonic CNN on 5 s windows (80,000 samples at 16 kHz, mu-law)."""
    return Jetatag("hc", **kwargs)


@_registered("jetatag_ms", "JETATAG_MusicSincNet", MS_SAMPLES)
def jetatag_ms(**kwargs) -> Jetatag:
    """JETATAG with Music-SincNet on 3.69 s windows (59,049 samples at 16 kHz, mu-law)."""
    return Jetatag("ms", **kwargs)


def _sample_cnn_variant(block: str):
    def factory(**kwargs) -> Jetatag:
        return Jetatag("sc", block=block, **kwargs)

    factory.__doc__ = f"JETATAG with Sample-CNN ({block} blocks) on 3.69 s windows (59,049 samples at 16 kHz, mu-law)."
    return factory


for _block in BLOCK_MODELS:
    _registered(jetatag_model("sc", _block), f"JETATAG_SampleCNN_{_block}", SAMPLECNN_SAMPLES)(
        _sample_cnn_variant(_block))
