"""From audio to frame embeddings and tags: ``load_model(name).embed(path_or_array)``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from mde.audio import check_samples, check_span, fit_channels, load_audio, pad_to_length, resample, span_frames
from mde.errors import MdeError, ModelError
from mde.runtime import store
from mde.runtime.backends.factory import make_backend
from mde.runtime.chunker import FrameGrid, frame_grid
from mde.runtime.defaults import default_model_path
from mde.runtime.inputs import frame_inputs, input_stage
from mde.runtime.limits import DEFAULT_BATCH_SIZE, MAX_CALL_SECONDS
from mde.runtime.package import ModelInfo, check_seconds
from mde.runtime.tag_space import TagEncoder
from mde.runtime.text_space import TextSpace
from mde.tags import top_tags

AudioInput = Union[str, os.PathLike[str], np.ndarray]


class ClipTooShort(MdeError):
    """The clip is shorter than one window and padding was turned off."""


@dataclass
class EmbeddingResult:
    """Frame embeddings of one clip, as :meth:`Model.embed` returns them.

    Attributes
    ----------
    timestamps : np.ndarray, float64, shape (frames,)
        Start of each frame in seconds from the start of the file or array (``offset`` included when a
        span was embedded).
    embedding : np.ndarray, float32, shape (frames, dim)
        The model's embedding output, or the requested ``layer``.
    tags : np.ndarray, float32, shape (frames, n_tags), or None
        Tag probabilities in [0, 1]; None for models without a tag output.
    tag_names : tuple of str, length n_tags
        The name of each tag column.
    info : ModelInfo
        The model's metadata.
    layer : str
        The output held in ``embedding``.
    padded : bool, default False
        True when the clip was shorter than one window and was zero-padded to one.
    duration : float, default 0.0
        Length of the clip (the span embedded) in seconds, before any padding.
    source : str or None, default None
        The file embedded; None for an array.
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
        """Clip-level tag probabilities: the mean over frames, a float32 (n_tags,) array.

        Raises
        ------
        ModelError
            The model has no tag output.
        """
        mean: np.ndarray = self._tags().mean(axis=0)
        return mean

    def top_tags(self, k: int = 5, frame: Optional[int] = None) -> list[tuple[str, float]]:
        """The most probable tags of the clip or of one frame.

        Parameters
        ----------
        k : int, default 5
            How many tags to return.
        frame : int or None, default None
            Index of one frame (into ``timestamps``); None ranks the clip's mean over frames.

        Returns
        -------
        list of (str, float)
            Up to ``k`` (tag name, probability in [0, 1]) pairs, most probable first.

        Raises
        ------
        ModelError
            The model has no tag output.
        IndexError
            ``frame`` is not a frame of the clip.
        """
        scores = self.mean_tags() if frame is None else self._tags()[frame]
        return top_tags(scores, self.tag_names, k)

    def _tags(self) -> np.ndarray:
        if self.tags is None:
            raise ModelError(f"model {self.model!r} has no tags")
        return self.tags


class Model:
    """A loaded model file: its metadata, its input stage (the C log-mel front end, or a waveform model's
    input transform; see :mod:`mde.runtime.inputs`) and an inference backend.

    Usually made by :func:`load_model`; safe to call :meth:`embed` from several threads.

    Parameters
    ----------
    path : str or Path
        The model file (``.onnx`` with mde metadata).
    threads : int or None, default None
        Threads for inference and the front end (None: the backend's default).
    batch_size : int, default DEFAULT_BATCH_SIZE
        Windows per inference call (capped at MAX_CALL_SECONDS of audio per call).
    backend : {'ort', 'tensorrt', 'torch'}, default 'ort'
        ONNX Runtime, a TensorRT engine or the ONNX graph run by torch
        (see :func:`mde.runtime.backends.factory.make_backend`).
    device : {'cpu', 'cuda'}, default 'cpu'
        Where the backend runs.

    Raises
    ------
    ModelError
        The file is missing, not loadable, or its metadata does not match its graph.
    MdeError
        The backend or device cannot run here.
    """

    def __init__(self, path: str | Path, threads: Optional[int] = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 backend: str = "ort", device: str = "cpu"):
        self.backend = make_backend(path, backend=backend, device=device, threads=threads)
        self.info: ModelInfo = self.backend.info
        self.path = Path(path)
        self.preparer = ClipPreparer(self.info, threads, batch_size)
        self.inputs = self.preparer.inputs
        self._tag_encoder: Optional[TagEncoder] = None
        self._text_spaces: dict[str, TextSpace] = {}

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def batch_size(self) -> int:
        """Frames per inference call (capped at MAX_CALL_SECONDS of audio per call)."""
        return self.preparer.batch_size

    @property
    def has_tag_encoder(self) -> bool:
        """Whether :meth:`embed_tags` works: the model has a joint audio-tag space and its tag encoder."""
        return self.info.tag_encoder is not None

    @property
    def text_kinds(self) -> tuple[str, ...]:
        """The target spaces :meth:`embed_text` maps into ('tags', 'text'): those of a model trained on text
        targets (Schindler et al.), () for others."""
        return tuple(self.info.text_spaces)

    def embed_text(self, text: str | Sequence[str], kind: str = "text") -> np.ndarray:
        """The point of ``text`` (a string for 'text'; a tag set, a sequence of tags or one '|'-joined string,
        for 'tags') in the model's target space ``kind``: float32 (topics,), comparable by cosine with the
        ``target_<kind>`` layer of :meth:`embed` (``layer="target_text"``). Zero when no term of it is
        known to the space.

        Raises ModelError for a model without that space.
        """
        if kind not in self.info.text_spaces:
            have = ", ".join(self.text_kinds) or "none"
            raise ModelError(f"{self.name} has no {kind!r} text space (its spaces: {have}); a model trained with "
                             f"--targets {kind} has one")
        if kind not in self._text_spaces:
            self._text_spaces[kind] = TextSpace.from_base64(self.info.text_spaces[kind], f"{self.path}: {kind} space")
        point: np.ndarray = self._text_spaces[kind].transform([text])[0]
        return point

    def embed_tags(self, tags: Sequence[str]) -> np.ndarray:
        """The point of the tag set ``tags`` (words of ``info.tag_names``, e.g. ``["piano", "slow"]``) in the
        model's joint audio-tag space: float32 (width of the ``joint`` output,), unit norm, comparable by dot
        product with the ``joint`` layer of :meth:`embed` (``layer="joint"``).

        Raises ModelError for a model without a tag encoder, MdeError for no tag or an unknown one.
        """
        if self._tag_encoder is None:
            self._tag_encoder = TagEncoder(self.info, str(self.path))
        return self._tag_encoder.embed(tags)

    def embed(
        self,
        audio: AudioInput,
        sr: Optional[int] = None,
        hop: Optional[float] = None,
        pad: bool = True,
        layer: Optional[str] = None,
        window: Optional[float] = None,
        offset: float = 0.0,
        duration: Optional[float] = None,
    ) -> EmbeddingResult:
        """Embed a file or a float array, one vector (and tag probabilities) per frame.

        Parameters
        ----------
        audio : str, os.PathLike or np.ndarray
            A path to an audio file (decoded with :func:`mde.audio.load_audio` and resampled to the
            model's rate; mixed to mono, or kept stereo for a stereo model, a mono file repeated on both
            channels), or float samples at full scale [-1, 1]: mono (samples,), or for a stereo model
            also (samples, 2).
        sr : int or None, default None
            The array's sample rate in Hz (None: the model's rate); must be None for a path, which is
            read at its own rate.
        hop : float or None, default None
            Seconds between frame starts, above 0 and at most MAX_WINDOW_SECONDS (None: the model's
            hop, or the window when ``window`` is given).
        pad : bool, default True
            Zero-pad a clip shorter than one window to one window (False: raise ClipTooShort).
        layer : str or None, default None
            The output returned as ``embedding`` (None: the model's embedding output).
        window : float or None, default None
            Frame length in seconds, for models that take any length (None: the model's window).
        offset : float, default 0.0
            Seconds from the start of the file or array where the embedded span starts (a file is decoded
            from there on: see :func:`mde.audio.load_audio`); timestamps count from the start all the same.
        duration : float or None, default None
            Seconds of audio embedded from ``offset`` (None: to the end).

        Returns
        -------
        EmbeddingResult
            ``timestamps`` (frames,) in seconds, ``embedding`` (frames, dim) and ``tags``
            (frames, n_tags) or None.

        Raises
        ------
        AudioError
            The file cannot be decoded, or the samples hold NaN, infinity or absurd magnitudes.
        ModelError
            No output ``layer``, or the model gave NaN or infinity.
        MdeError
            ``window`` or ``hop`` out of bounds, ``sr`` given with a path, an array of another shape than
            the model takes, ``offset`` negative, at or past the end, or ``duration`` not above 0.
        ClipTooShort
            The clip is shorter than one window and ``pad`` is False.
        """
        return self.infer(self.preparer.prepare(audio, sr=sr, hop=hop, pad=pad, layer=layer, window=window,
                                                offset=offset, duration=duration))

    def infer(self, clip: PreparedClip) -> EmbeddingResult:
        """The second half of :meth:`embed`: run the network on a clip that :class:`ClipPreparer` (this
        model's, or one made from the same metadata in another process) prepared. ModelError for NaN or
        infinity in an output."""
        outputs = self.output_names(clip.layer)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        for batch in clip.batches:
            for name, value in self.backend.run(batch, outputs).items():
                parts[name].append(value)
        values = {
            name: np.concatenate(chunks) if chunks else np.zeros((0, self.info.outputs[name]), np.float32)
            for name, chunks in parts.items()
        }
        check_finite_outputs(values, clip.source or "array", self.name)
        tags_name = self.info.tags_output
        return EmbeddingResult(
            timestamps=clip.starts * clip.unit_seconds + clip.offset,
            embedding=values[clip.layer],
            tags=values.get(tags_name) if tags_name else None,
            tag_names=self.info.tag_names,
            info=self.info,
            layer=clip.layer,
            padded=clip.padded,
            duration=clip.duration,
            source=clip.source,
        )

    def output_names(self, layer: str) -> list[str]:
        """The outputs to run for ``layer`` (ModelError if the model has none): it, then the tags."""
        check_request(self.info, layer=layer)
        names = [layer]
        if self.info.tags_output and self.info.tags_output != layer:
            names.append(self.info.tags_output)
        return names


@dataclass(frozen=True)
class PreparedClip:
    """A clip made ready for the network by :meth:`ClipPreparer.prepare` (the first half of
    :meth:`Model.embed`; :meth:`Model.infer` is the second).

    starts: frame starts in grid units (samples, or log-mel frames for mel-patch models); ``unit_seconds``
      converts them to seconds.
    batches: the network inputs of the frames, at most ``frames_per_call`` frames per array, in frame order
      (computed lazily as they are iterated, unless made a list: see :meth:`materialized`).
    layer: the output returned as the embedding.
    duration: seconds of the decoded clip (before padding); padded: whether it was zero-padded to one window.
    source: the file's path, or None for an array.
    offset: seconds from the start of the file or array to the clip's start (added to the timestamps).
    """

    starts: np.ndarray
    unit_seconds: float
    batches: Iterable[np.ndarray]
    layer: str
    duration: float
    padded: bool
    source: Optional[str]
    offset: float = 0.0

    def materialized(self) -> PreparedClip:
        """The same clip with every batch computed now (to send it to another process)."""
        return dataclasses.replace(self, batches=list(self.batches))


class ClipPreparer:
    """Decoding, resampling, padding, framing and the input stage (the C front end or the input transform)
    of one model, everything :meth:`Model.embed` does before inference; needs only the model's metadata,
    no inference session (so that it can run in processes that hold none).

    threads: the front end's kernel threads (None: 1). batch_size: frames per inference call (capped at
    MAX_CALL_SECONDS of audio per call).
    """

    def __init__(self, info: ModelInfo, threads: Optional[int] = None, batch_size: int = DEFAULT_BATCH_SIZE):
        self.info = info
        self.batch_size = batch_size
        self.inputs = input_stage(info, threads=threads or 1)

    @property
    def name(self) -> str:
        return self.info.name

    def prepare(self, audio: AudioInput, sr: Optional[int] = None, hop: Optional[float] = None, pad: bool = True,
                layer: Optional[str] = None, window: Optional[float] = None, offset: float = 0.0,
                duration: Optional[float] = None) -> PreparedClip:
        """The clip ``audio`` ready for inference; arguments and errors (but the model's NaN) as :meth:`Model.embed`."""
        layer = layer or self.info.embedding_output
        grid = check_request(self.info, layer=layer, window=window, hop=hop)
        check_span(offset, duration)
        samples, source = self._samples(audio, sr, offset, duration)
        seconds = len(samples) / self.info.sample_rate
        samples, padded = self._padded(samples, grid, pad, source)
        starts, batches = frame_inputs(samples, grid, self.inputs, frames_per_call(grid, self.batch_size))
        return PreparedClip(starts, grid.unit_seconds, batches, layer, seconds, padded, source, offset)

    def _samples(self, audio: AudioInput, sr: Optional[int], offset: float = 0.0,
                 duration: Optional[float] = None) -> tuple[np.ndarray, Optional[str]]:
        rate, channels = self.info.sample_rate, self.info.channels
        if isinstance(audio, np.ndarray):
            samples = np.ascontiguousarray(audio, dtype=np.float32)
            if channels == 1 and samples.ndim != 1:
                raise MdeError(f"expected a mono (samples,) array, got shape {samples.shape}")
            if samples.ndim not in (1, 2):
                raise MdeError(f"expected a (samples,) or (samples, {channels}) array, got shape {samples.shape}")
            start, count = span_frames(sr or rate, offset, duration)
            if start and start >= len(samples):
                seconds = len(samples) / (sr or rate)
                raise MdeError(f"array: the offset {offset:g} s is at or past its end ({seconds:.2f} s)")
            samples = samples[start : None if count is None else start + count]
            check_samples(samples, "array", offset=start)
            return resample(fit_channels(samples, channels, "array"), sr or rate, rate), None
        if sr is not None:
            raise MdeError("sr applies to arrays only; a file is read at its own rate")
        samples, _ = load_audio(audio, sr=rate, channels=channels, offset=offset, duration=duration)
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


def check_finite_outputs(values: dict[str, np.ndarray], origin: str, model: str) -> None:
    """MdeError (one line starting with ``origin``) if any output holds NaN or infinity (never written)."""
    for name, value in values.items():
        if not np.isfinite(value).all():
            raise ModelError(f"{origin}: the model {model} gave NaN or infinity in its {name!r} output")


def frames_per_call(grid: FrameGrid, batch_size: int) -> int:
    """Frames per inference call: ``batch_size``, but no more than MAX_CALL_SECONDS of audio (at least 1)."""
    return max(1, min(batch_size, int(MAX_CALL_SECONDS // grid.window_seconds)))


def check_request(
    info: ModelInfo, layer: Optional[str] = None, window: Optional[float] = None, hop: Optional[float] = None
) -> FrameGrid:
    """The frame grid of a request, after the one check of its layer, window and hop.

    Parameters
    ----------
    info : ModelInfo
        The model's metadata.
    layer : str or None, default None
        An output name to embed (None: not checked).
    window, hop : float or None, default None
        Window length and step in seconds (None: the model's own).

    Returns
    -------
    FrameGrid
        Where the frames of such a request start (see :func:`mde.runtime.chunker.frame_grid`).

    Raises
    ------
    ModelError
        The model has no output ``layer``.
    MdeError
        ``window`` or ``hop`` is not finite, not above 0, longer than MAX_WINDOW_SECONDS, ``hop`` is shorter
        than one sample, or the model takes no other window.
    """
    if layer is not None and layer not in info.outputs:
        raise ModelError(f"{info.name}: no layer {layer!r}; choose from {', '.join(sorted(info.outputs))}")
    check_seconds(window, hop)
    if hop is not None and hop * info.sample_rate < 1:
        raise MdeError(f"hop {hop:g} s is shorter than one sample at {info.sample_rate} Hz")
    return frame_grid(info, window=window, hop=hop)


def load_model(
    name_or_path: Optional[str | os.PathLike[str]] = None,
    threads: Optional[int] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    backend: str = "ort",
    device: str = "cpu",
) -> Model:
    """Load a stored model by name, or a model file by path.

    Parameters
    ----------
    name_or_path : str, os.PathLike or None, default None
        A name in the model store (``$MDE_HOME/models``, see ``mde models``) or a path to an ``.onnx``
        model file; None loads the default model, MTT_musicnn (imported from the installed musicnn
        package on first use).
    threads : int or None, default None
        Threads for inference and the front end (None: the backend's default).
    batch_size : int, default DEFAULT_BATCH_SIZE
        Windows per inference call.
    backend : {'ort', 'tensorrt', 'torch'}, default 'ort'
        Inference backend (ONNX Runtime by default).
    device : {'cpu', 'cuda'}, default 'cpu'
        Where it runs.

    Returns
    -------
    Model
        The loaded model; ``Model.info`` holds its metadata (rate in Hz, window and hop in samples).

    Raises
    ------
    ModelNotFound
        No stored model of that name and no file at that path, or the default model cannot be imported.
    ModelError
        The file is not loadable or its metadata does not match its graph.
    MdeError
        A read-only MDE_HOME at the first-use import, or a backend or device that cannot run here.
    """
    path = default_model_path() if name_or_path is None else store.resolve(name_or_path)
    return Model(path, threads=threads, batch_size=batch_size, backend=backend, device=device)
