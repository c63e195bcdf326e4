"""music2vec, the SoundNet + stacked-LSTM genre classifier of KMASAHIRO/music2vec (``music2vec/music2vec.py``,
``create_model``; after Rajat Hebbar's music2vec article), from scratch.

Input: 675,808 samples of mono audio at 22,050 Hz (30.65 s; a 30 s GTZAN clip zero-padded at the end),
times 256 (:data:`~mde.runtime.input_transform.SOUNDNET_GAIN`), (batch, samples). Then:

  SoundNet-8 (:mod:`mde.trainer.models.soundnet`) -> conv8_2: 8 steps x 401
  -> LSTM 200 -> LSTM 200, both returning every step: 8 x 200
  -> flatten (step-major, as Keras flattens (steps, features)): 1600
  -> Dense 400 -> Dense 100 (both linear) -> Dense n_tags with softmax (10 genres in the source).

Outputs: 'embedding' (batch, 3208) the flattened SoundNet output, step-major like Keras' (the layer the
source's PCA / t-SNE plots show); 'dense100' (batch, 100) the Dense 100 output; 'logits' (batch, n_tags)
pre-softmax scores; 'tags' (batch, n_tags) their softmax.

Differences from the source: it starts SoundNet from pretrained weights (``sound8.npy``), here it starts
from SoundNet's own initialisation (see the soundnet module); torch's LSTM keeps two bias vectors per layer
where Keras keeps one (their sum plays its part), so each LSTM has 800 more parameters (1,600 in all).
The head is initialised as Keras does: Glorot-uniform kernels, orthogonal recurrent kernels, zero biases
but 1 for the LSTMs' forget gates.
"""

from __future__ import annotations

import torch
from torch import nn

from mde.runtime.input_transform import SOUNDNET_GAIN
from mde.trainer.models.keras_init import keras_dense, keras_lstm_init
from mde.trainer.models.registry import register
from mde.trainer.models.soundnet import PRECISE_BN_WINDOWS, SOUNDNET8, SOUNDNET_RATE, SoundNet8, soundnet_steps

MUSIC2VEC_SAMPLES = 675808
"""Samples per input (30.65 s at 22,050 Hz), what the source zero-pads every clip to."""
MUSIC2VEC_EMBEDDING = soundnet_steps(MUSIC2VEC_SAMPLES)["conv8_2"] * SOUNDNET8[-1].channels
"""Size of the flattened SoundNet output: 8 steps x 401."""
LSTM_UNITS = 200
DENSE_UNITS = (400, 100)
GTZAN_GENRES = 10


class Music2Vec(nn.Module):
    """SoundNet-8, two LSTMs over its steps, then three dense layers (see the module docstring).

    ``input_length`` (samples) fixes the number of SoundNet steps the flatten sees, hence the first dense
    layer's size; the network takes inputs of that length only.
    """

    def __init__(self, n_tags: int = GTZAN_GENRES, input_length: int = MUSIC2VEC_SAMPLES) -> None:
        super().__init__()
        steps = soundnet_steps(input_length)["conv8_2"]
        if steps < 1:
            raise ValueError(f"{input_length} samples are too short for SoundNet-8's conv8_2")
        self.steps = steps
        self.soundnet = SoundNet8()
        self.lstm1 = nn.LSTM(SOUNDNET8[-1].channels, LSTM_UNITS, batch_first=True)
        self.lstm2 = nn.LSTM(LSTM_UNITS, LSTM_UNITS, batch_first=True)
        for lstm in (self.lstm1, self.lstm2):
            keras_lstm_init(lstm)
        self.dense400 = keras_dense(steps * LSTM_UNITS, DENSE_UNITS[0])
        self.dense100 = keras_dense(*DENSE_UNITS)
        self.dense = keras_dense(DENSE_UNITS[1], n_tags)

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        places = self.soundnet(waveform)["conv8_2"].transpose(1, 2)  # (batch, steps, 401), Keras' layout
        sequence, _ = self.lstm1(places)
        sequence, _ = self.lstm2(sequence)
        hidden = self.dense100(self.dense400(sequence.flatten(1)))
        logits = self.dense(hidden)
        return {"embedding": places.flatten(1), "dense100": hidden, "logits": logits,
                "tags": torch.softmax(logits, dim=1)}


MUSIC2VEC_RECIPE = {
    "optimizer": "rmsprop", "lr": 1e-3, "weight_decay": 0.0, "schedule": "none", "batch_size": 25, "epochs": 20,
    "crops_per_clip": 1, "single_label": True, "eval_crops": None, "precise_bn": PRECISE_BN_WINDOWS,
}
"""The source's training: Keras 'rmsprop' (its default rate 1e-3; the source states none), categorical
cross-entropy, batch 25, 20 epochs, each clip once per epoch as one zero-padded input (so one crop per
clip, and one window per clip at evaluation). Ours: BatchNorm's statistics are recomputed after each
epoch (:data:`~mde.trainer.models.soundnet.PRECISE_BN_WINDOWS`), standing in for the pretrained ones the
source starts with."""


@register("music2vec", architecture="music2vec", input_length=MUSIC2VEC_SAMPLES, waveform_rate=SOUNDNET_RATE,
          input_transform=SOUNDNET_GAIN, embedding_dim=MUSIC2VEC_EMBEDDING, n_tags=GTZAN_GENRES,
          recipe=MUSIC2VEC_RECIPE, layers=("dense100",))
def music2vec(**kwargs) -> Music2Vec:
    """music2vec on 30.65 s inputs (675,808 samples at 22,050 Hz, times 256), 10 genres by default."""
    return Music2Vec(**kwargs)
