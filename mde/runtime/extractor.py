"""From audio to frame embeddings and tags: ``load_model(name).embed(path_or_array)``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from mde.audio import check_samples, load_audio, pad_to_length, resample
from mde.errors import MdeError, ModelError
from mde.runtime import store
from mde.runtime.backends.factory import make_backend
from mde.runtime.chunker import FrameGrid, cut_frames, frame_grid
from mde.runtime.defaults import default_model_path
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.package import ModelInfo

AudioInput = Union[str, os.PathLike, np.ndarray]

DEFAULT_BATCH_SIZE = 8
MAX_CALL_SECONDS = 30.0
"""The most audio (seconds of windows) per inference call. Larger batches of long windows only grow ONNX
Runtime's memory arena without running faster (MTT_musicnn on 29 s windows: 4.1 GB peak at batch 8,
0.5 GB at batch 1, same speed)."""


class ClipTooShort(MdeError):
    """The clip is shorter than one window and padding was turned off."""


@dataclass
class EmbeddingResult:
    """Frame embeddings of one clip.

    timestamps: start of each frame in seconds (float64, frames).
    embedding: (frames, dim) float32, the model's embedding layer (or the requested ``layer``).
    tags: (frames, n_tags) float32 tag probabilities, or None for models without tags.
    padded: True when the clip was shorter than one window and was zero-padded to one.
    duration: length of the clip in seconds, before any padding.
    """

    timestamps: np.ndarray
    embedding: np.ndarray
    tags: Optional[np.ndarray]
    tag_names: tuple[str, ...]
    info: ModelInfo
    layer: str
    padded: bool = False
    duration: float = 0.0
    source: Optional[str] = None

    @property
    def model(self) -> str:
        return self.info.name

    def mean_tags(self) -> np.ndarray:
        """Clip-level tag probabilities: the mean over frames."""
        if self.tags is None:
            raise ModelError(f"model {self.model!r} has no tags")
        return self.tags.mean(axis=0)

    def top_tags(self, k: int = 5, frame: Optional[int] = None) -> list[tuple[str, float]]:
        """The ``k`` most probable tags of the clip (mean over frames) or of one frame."""
        scores = self.mean_tags() if frame is None else self.tags[frame]  # type: ignore[index]
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.tag_names[i], float(scores[i])) for i in order]


class Model:
    """A loaded model file: its metadata, its front end and an inference backend.

    threads: threads for inference and the front end (None: the backend's default).
    batch_size: windows per inference call.
    backend: 'ort' (ONNX Runtime), 'tensorrt' or 'torch'; device: 'cpu' or 'cuda'
      (see :func:`mde.runtime.backends.factory.make_backend`).
    """

    def __init__(self, path: str | Path, threads: Optional[int] = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 backend: str = "ort", device: str = "cpu"):
        self.backend = make_backend(path, backend=backend, device=device, threads=threads)
        self.info: ModelInfo = self.backend.info
        self.path = Path(path)
        self.batch_size = batch_size
        if self.info.input_kind != "logmel" or self.info.frontend is None:
            raise ModelError(f"{self.info.name}: input kind {self.info.input_kind!r} is not supported yet")
        self.frontend = MelSpectrogram.from_config(self.info.frontend, threads=threads or 1)

    @property
    def name(self) -> str:
        return self.info.name

    def embed(
        self,
        audio: AudioInput,
        sr: Optional[int] = None,
        hop: Optional[float] = None,
        pad: bool = True,
        layer: Optional[str] = None,
        window: Optional[float] = None,
    ) -> EmbeddingResult:
        """Embed a file (path) or a mono float array.

        sr: the array's sample rate in Hz (default: the model's rate); for a path, the file's own
          rate is used and ``sr`` must be None.
        hop: seconds between frame starts (default: the model's hop).
        pad: zero-pad a clip shorter than one frame to one frame (else raise ClipTooShort).
        layer: which output to return as ``embedding`` (default: the model's embedding output).
        window: frame length in seconds, for models that take any length (default: the model's).
        """
        grid = frame_grid(self.info, window=window, hop=hop)
        layer = layer or self.info.embedding_output
        outputs = self.output_names(layer)
        samples, source = self._samples(audio, sr)
        duration = len(samples) / self.info.sample_rate
        samples, padded = self._padded(samples, grid, pad, source)
        starts, values = self._run_frames(samples, grid, outputs)
        tags_name = self.info.tags_output
        return EmbeddingResult(
            timestamps=starts * grid.unit_seconds,
            embedding=values[layer],
            tags=values.get(tags_name) if tags_name else None,
            tag_names=self.info.tag_names,
            info=self.info,
            layer=layer,
            padded=padded,
            duration=duration,
            source=source,
        )

    def _samples(self, audio: AudioInput, sr: Optional[int]) -> tuple[np.ndarray, Optional[str]]:
        rate = self.info.sample_rate
        if isinstance(audio, np.ndarray):
            samples = np.ascontiguousarray(audio, dtype=np.float32)
            if samples.ndim != 1:
                raise MdeError(f"expected a mono (samples,) array, got shape {samples.shape}")
            check_samples(samples, "array")
            return resample(samples, sr or rate, rate), None
        if sr is not None:
            raise MdeError("sr applies to arrays only; a file is read at its own rate")
        samples, _ = load_audio(audio, sr=rate)
        return samples, os.fspath(audio)

    def _padded(
        self, samples: np.ndarray, grid: FrameGrid, pad: bool, source: Optional[str]
    ) -> tuple[np.ndarray, bool]:
        if len(samples) >= grid.min_samples:
            return samples, False
        if not pad:
            seconds = len(samples) / self.info.sample_rate
            raise ClipTooShort(
                f"{source or 'array'}: {seconds:.2f} s is shorter than the "
                f"{grid.window_seconds:g} s window of {self.name}"
            )
        return pad_to_length(samples, grid.min_samples)

    def output_names(self, layer: str) -> list[str]:
        """The outputs to run for ``layer`` (ModelError if the model has none): it, then the tags."""
        check_request(self.info, layer=layer)
        names = [layer]
        if self.info.tags_output and self.info.tags_output != layer:
            names.append(self.info.tags_output)
        return names

    def _run_frames(
        self, samples: np.ndarray, grid: FrameGrid, outputs: list[str]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Frame starts (in grid units) and the stacked outputs for every frame."""
        starts, batches = frame_inputs(samples, grid, self.frontend, frames_per_call(grid, self.batch_size))
        parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        for batch in batches:
            for name, value in self.backend.run(batch, outputs).items():
                parts[name].append(value)
        values = {
            name: np.concatenate(chunks) if chunks else np.zeros((0, self.info.outputs[name]), np.float32)
            for name, chunks in parts.items()
        }
        return starts, values


def frames_per_call(grid: FrameGrid, batch_size: int) -> int:
    """Frames per inference call: ``batch_size``, but no more than MAX_CALL_SECONDS of audio (at least 1)."""
    return max(1, min(batch_size, int(MAX_CALL_SECONDS // grid.window_seconds)))


def check_request(
    info: ModelInfo, layer: Optional[str] = None, window: Optional[float] = None, hop: Optional[float] = None
) -> None:
    """ModelError / MdeError unless the model has output ``layer`` and accepts ``window`` and ``hop`` (seconds)."""
    if layer is not None and layer not in info.outputs:
        raise ModelError(f"{info.name}: no layer {layer!r}; choose from {', '.join(sorted(info.outputs))}")
    frame_grid(info, window=window, hop=hop)


def frame_inputs(
    samples: np.ndarray, grid: FrameGrid, frontend: MelSpectrogram, batch_size: int
) -> tuple[np.ndarray, Iterator[np.ndarray]]:
    """Frame starts (in grid units) and the model inputs of those frames, ``batch_size`` at a time.

    Audio-window models get one log-mel per cut window; mel-patch models get patches cut from one
    log-mel over the whole signal. ``samples`` must already hold at least ``grid.min_samples``.
    """
    if grid.unit == "sample":
        source, starts = samples, grid.starts(len(samples))
    else:
        source = frontend(samples)  # one log-mel over the whole signal: (n_mels, frames)
        starts = grid.starts(source.shape[-1])

    def batches() -> Iterator[np.ndarray]:
        for first in range(0, len(starts), batch_size):
            frames = cut_frames(source, starts[first : first + batch_size], grid.length)
            yield model_inputs(frames, grid, frontend)

    return starts, batches()


def model_inputs(frames: np.ndarray, grid: FrameGrid, frontend: MelSpectrogram) -> np.ndarray:
    """The model inputs of cut frames: a log-mel per audio window, or mel patches as they are."""
    return frontend(frames) if grid.unit == "sample" else frames


def load_model(
    name_or_path: Optional[str | os.PathLike] = None,
    threads: Optional[int] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    backend: str = "ort",
    device: str = "cpu",
) -> Model:
    """Load a stored model by name, or a model file by path; None loads the default model
    (MTT_musicnn, imported from the installed musicnn package on first use). ``backend`` and ``device``
    choose how it runs (default: ONNX Runtime on the CPU)."""
    path = default_model_path() if name_or_path is None else store.resolve(name_or_path)
    return Model(path, threads=threads, batch_size=batch_size, backend=backend, device=device)
