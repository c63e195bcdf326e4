"""One vector per clip of a dataset split, from a training checkpoint (in torch) or a model file (the runtime),
for the evaluations that compare embeddings: ``mde viz``'s maps and ``mde eval --retrieval``.

A checkpoint's clip vector is the mean of its evaluation windows' outputs (``n_crops`` evenly spaced, or all,
as in training); a model file's the mean of its frames' outputs over the whole file. Outputs wider than one
axis per window are flattened first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from mde.errors import MdeError
from mde.trainer.data.dataset import TaggingDataset

ClipCallback = Optional[Callable[[int, int], None]]
"""``(done, total)`` after each clip."""


class RunNetwork:
    """A checkpoint's network (its architecture built for its tags, the weights loaded, in eval mode) and
    the architecture's input stage, on ``device``."""

    def __init__(self, payload: dict[str, Any], device: Any) -> None:
        from mde.trainer.evaluate import checkpoint_network

        self.spec, self.net, self.frontend = checkpoint_network(payload, device)
        self.device = device

    def outputs(self, windows: Any) -> dict[str, Any]:
        """The network's outputs for waveform windows (n, [channels,] samples), in batches of the evaluation's
        size."""
        import torch

        from mde.trainer.evaluate import window_outputs

        with torch.no_grad():
            return window_outputs(self.net, self.frontend, windows.to(self.device))

    def check_layer(self, layer: Optional[str], origin: str) -> str:
        """``layer`` (default: the architecture's embedding) if the network outputs it, else a one-line error
        starting with ``origin``."""
        import torch

        layer = layer or self.spec.embedding_output
        channels = () if self.spec.channels == 1 else (self.spec.channels,)
        available = self.outputs(torch.zeros(1, *channels, self.spec.input_length))
        if layer not in available:
            raise MdeError(f"{origin}: no layer {layer!r}; choose from {', '.join(sorted(available))}")
        return layer


def run_clip_embeddings(network: RunNetwork, ds: TaggingDataset, split: str, layer: str, n_crops: Optional[int],
                        on_clip: ClipCallback = None) -> np.ndarray:
    """float64 (clips, width): each clip's ``layer`` output per evaluation window, averaged over its windows."""
    from mde.trainer.data.loading import EvalClips

    spec = network.spec
    clips = EvalClips(ds, split, spec.input_length, n_crops=n_crops, sample_rate=spec.sample_rate,
                      channels=spec.channels)
    rows = []
    for i in range(len(clips)):
        windows, _ = clips[i]
        rows.append(network.outputs(windows)[layer].flatten(1).double().mean(dim=0).cpu().numpy())
        if on_clip:
            on_clip(i + 1, len(clips))
    return np.stack(rows)


def model_clip_embeddings(model: Any, ds: TaggingDataset, split: str, layer: Optional[str] = None,
                          on_clip: ClipCallback = None) -> np.ndarray:
    """float64 (clips, width): each file's ``layer`` output (None: the model's embedding) averaged over its
    frames, from a loaded model file (:class:`mde.runtime.extractor.Model`)."""
    clips = ds.split(split)
    rows = []
    for i, clip in enumerate(clips):
        frames = model.embed(clip.path, layer=layer).embedding
        rows.append(frames.reshape(len(frames), -1).astype(np.float64).mean(axis=0))
        if on_clip:
            on_clip(i + 1, len(clips))
    return np.stack(rows)
