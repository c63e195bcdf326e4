"""Keras' default initialisations, for families whose source is a Keras model: Glorot-uniform kernels,
orthogonal recurrent kernels, zero biases (1 for an LSTM's forget gate)."""

from __future__ import annotations

from torch import nn


def keras_lstm_init(lstm: nn.LSTM) -> None:
    """Keras' LSTM initialisation: Glorot-uniform input kernels, orthogonal recurrent kernels, zero
    biases except 1 for the forget gate (torch's gate order i, f, g, o is Keras' i, f, c, o)."""
    units = lstm.hidden_size
    for name, weight in lstm.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.xavier_uniform_(weight)
        elif name.startswith("weight_hh"):
            nn.init.orthogonal_(weight)
        else:
            nn.init.zeros_(weight)
            if name.startswith("bias_ih"):
                nn.init.ones_(weight[units:2 * units])


def keras_dense(in_features: int, out_features: int) -> nn.Linear:
    """A Linear layer initialised as Keras' Dense: Glorot-uniform weights, zero bias."""
    dense = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(dense.weight)
    nn.init.zeros_(dense.bias)
    return dense
