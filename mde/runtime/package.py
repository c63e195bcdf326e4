"""The model file: one ``.onnx`` whose metadata carries everything the runtime needs.

The metadata is a JSON object stored under the ONNX ``metadata_props`` key ``mde``. It is read here with
ONNX Runtime alone (no ``onnx`` import), so the runtime stays light.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional

from mde.errors import FrontendError, MdeError, ModelError
from mde.runtime.band_norm import BandNorm
from mde.runtime.frontend_config import FrontendConfig
from mde.runtime.input_transform import IDENTITY, InputTransform

METADATA_KEY = "mde"
FORMAT_VERSION = 1

MODEL_RATES = (1000, 384000)
"""The lowest and highest sample rate (Hz) a model may declare."""
_RENAMED_KEYS = {"window": "window_samples", "hop": "hop_samples"}
"""Metadata keys of earlier files -> today's field names (read both, write today's)."""
MAX_WINDOW_SECONDS = 3600.0
"""The longest analysis window or hop, in seconds, that a model may declare or a request may ask for."""
MODEL_CHANNELS = (1, 2)
"""The audio channels a model may take: 1 (mono) or 2 (stereo)."""
TARGET_PREFIX = "target_"
"""Outputs named ``target_<kind>`` hold a window's point in that target space (a similarity network's head)."""
DISTILL_SOURCE_PREFIX = "mde distill"
"""How the ``source`` of a distilled student's model file starts (its run folder's name and the teacher follow)."""
JOINT_OUTPUT = "joint"
"""The output holding each window's point in a joint audio-tag space (JETATAG), which a tag encoder shares."""
TAG_ENCODER_INPUT = "tags"
"""The tag encoder graph's input: (batch, n_tags) multi-hot tag vectors; its one output is JOINT_OUTPUT."""

InputKind = Literal["logmel", "waveform"]
Framing = Literal["audio_windows", "mel_patches"]
Precision = Literal["fp32", "fp16", "int8"]


@dataclass(frozen=True)
class ModelInfo:
    """What a model file declares about itself.

    window_samples, hop_samples: the analysis window and its default step, in samples at ``sample_rate``
      (for mel-patch models, patch_frames and the patch step times the front end's hop_length); the
      same in seconds are ``window_seconds`` and ``hop_seconds``. Metadata written before these names
      (keys ``window`` and ``hop``) is still read.
    input_kind: 'logmel' (the graph takes (batch, n_mels, frames) from the C front end, or (batch, channels,
      n_mels, frames) for stereo) or 'waveform' (the graph takes the samples of each window: (batch,
      window_samples) for mono, (batch, channels, window_samples) for stereo, after ``input_transform``).
    channels: audio channels the graph takes: 1 (mono) or 2 (stereo: decoded without mixdown, a mono file
      repeated on both; a stereo log-mel model cuts audio windows, whose channels share one dB peak).
    input_transform: what the runtime does to each cut window of a waveform model before the graph
      (:mod:`mde.runtime.input_transform`); None for log-mel models, IDENTITY when a waveform model's
      metadata names none.
    framing: 'audio_windows' cuts audio windows and computes a log-mel per window (the first seed);
      'mel_patches' computes one log-mel over the whole signal and cuts patches of ``patch_frames``
      frames from it (musicnn).
    outputs: the graph's output names that hold per-window vectors; ``embedding_output`` is the
      default embedding and ``tags_output`` (if any) holds tag probabilities.
    variable_length: whether the graph accepts other window lengths than ``window``.
    precision: the graph's arithmetic: 'fp32', 'fp16' (float16 weights and compute) or 'int8' (static
      QDQ quantization); inputs and outputs are float32 in every case.
    tag_encoder: for a model with a joint audio-tag space (a ``joint`` output, JETATAG withJE), the base64
      text of a second, small ONNX graph that maps (batch, n_tags) multi-hot tag vectors (input ``tags``,
      in ``tag_names`` order) to (batch, width of ``joint``) unit-norm points of that space (output
      ``joint``); see :mod:`mde.runtime.tag_space`. It stays float32 whatever ``precision`` is. None for
      models without one.
    band_norm: for a log-mel model trained on standardised inputs, the per-band mean and std its log-mel
      is standardised with before the graph (:mod:`mde.runtime.band_norm`); None: the log-mel as it is.
    text_spaces: for a model trained on text targets (Schindler et al.), kind ('tags', 'text') -> the
      fitted TF-IDF + LSI space as base64 text (:meth:`mde.runtime.text_space.TextSpace.to_base64`), whose
      points are comparable by cosine with the model's ``target_<kind>`` output; {} for other models.
    lineage: for a model fine-tuned from another (``mde train --init``), what it was initialised from: the
      source ('init', 'kind', 'path', 'sha256', 'architecture', 'tags', and the source's own lineage as
      'parent'), the new head ('head': {'kind', 'backbone_tags'[, 'backbone_head']}, which importing the
      weights back into torch needs) and 'freeze_backbone', 'unfreeze_after', 'backbone_lr'; {} otherwise.

    Metadata read from a file is checked by :meth:`from_json` (types, ranges, tag names against the
    tags output) and, on load, by :func:`check_graph` (against the graph's input and output shapes).
    """

    name: str
    architecture: str
    source: str
    licence: str
    sample_rate: int
    window_samples: int
    hop_samples: int
    input_kind: InputKind
    framing: Framing
    frontend: Optional[FrontendConfig]
    embedding_dim: int
    tag_names: tuple[str, ...] = ()
    embedding_output: str = "embedding"
    tags_output: Optional[str] = "tags"
    outputs: dict[str, int] = field(default_factory=dict)
    patch_frames: Optional[int] = None
    variable_length: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    precision: Precision = "fp32"
    channels: int = 1
    input_transform: Optional[InputTransform] = None
    tag_encoder: Optional[str] = None
    band_norm: Optional[BandNorm] = None
    text_spaces: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.input_kind == "waveform" and self.input_transform is None:
            object.__setattr__(self, "input_transform", IDENTITY)

    @property
    def window_seconds(self) -> float:
        """The analysis window in seconds."""
        return self.window_samples / self.sample_rate

    @property
    def hop_seconds(self) -> float:
        """The default step between windows in seconds."""
        return self.hop_samples / self.sample_rate

    @property
    def n_tags(self) -> int:
        return len(self.tag_names)

    def to_json(self) -> str:
        data = asdict(self)
        data["frontend"] = self.frontend.to_dict() if self.frontend else None
        data["input_transform"] = self.input_transform.to_dict() if self.input_transform else None
        data["band_norm"] = self.band_norm.to_dict() if self.band_norm else None
        data["tag_names"] = list(self.tag_names)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, origin: str = "model") -> ModelInfo:
        """Parse and check metadata JSON; ModelError (one line starting with ``origin``) if it is unusable."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{origin}: metadata is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ModelError(f"{origin}: metadata is a JSON {type(data).__name__}, not an object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelError(f"{origin}: metadata format {version} is not supported (want {FORMAT_VERSION})")
        known = {f.name for f in fields(cls)}
        for old, new in _RENAMED_KEYS.items():
            if old in data and new not in data:
                data[new] = data[old]
        try:
            data = {k: v for k, v in data.items() if k in known}
            data["frontend"] = FrontendConfig.from_dict(data["frontend"]) if data.get("frontend") else None
            data["input_transform"] = _parsed(data.get("input_transform"), InputTransform.from_dict,
                                              "input_transform", "bad input transform: ", origin)
            data["band_norm"] = _parsed(data.get("band_norm"), BandNorm.from_dict, "band_norm",
                                        "bad band normalisation: ", origin)
            data["tag_names"] = tuple(data.get("tag_names", ()))
            info = cls(**data)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ModelError(f"{origin}: incomplete metadata ({exc})") from None
        except FrontendError as exc:
            raise ModelError(f"{origin}: bad front end in metadata ({exc})") from None
        check_metadata(info, origin)
        return info


def _parsed(value: Any, parse: Callable[[Any], Any], key: str, prefix: str, origin: str) -> Any:
    """``parse(value)`` of a metadata field (None stays None); its ModelError reworded as one line naming
    ``origin`` and ``key``."""
    if value is None:
        return None
    try:
        return parse(value)
    except ModelError as exc:
        raise ModelError(f"{origin}: bad metadata: {key}: {str(exc).removeprefix(prefix)}") from None


def check_seconds(window: Optional[float] = None, hop: Optional[float] = None) -> None:
    """MdeError (one line) unless ``window`` and ``hop`` (seconds; None: the model's) are finite, above 0
    and at most MAX_WINDOW_SECONDS. The part of
    :func:`mde.runtime.extractor.check_request` that needs no model; :func:`mde.runtime.chunker.frame_grid`
    makes it too."""
    for what, value in (("window", window), ("hop", hop)):
        if value is not None and not (math.isfinite(value) and 0 < value <= MAX_WINDOW_SECONDS):
            raise MdeError(f"{what} must be positive and at most {MAX_WINDOW_SECONDS:g} s, got {value:g} s")


def check_metadata(info: ModelInfo, origin: str) -> None:
    """ModelError (one line starting with ``origin``) unless the metadata's fields are consistent."""
    problem = _metadata_problem(info)
    if problem:
        raise ModelError(f"{origin}: bad metadata: {problem}")


def _metadata_problem(info: ModelInfo) -> str | None:
    low, high = MODEL_RATES
    if not _is_int(info.sample_rate) or not low <= info.sample_rate <= high:
        return f"sample_rate must be a whole number of Hz from {low} to {high}, got {info.sample_rate!r}"
    longest = int(MAX_WINDOW_SECONDS * info.sample_rate)
    for key, value in (("window_samples", info.window_samples), ("hop_samples", info.hop_samples)):
        if not _is_int(value) or not 1 <= value <= longest:
            return (f"{key} must be a whole number of samples from 1 to {longest} "
                    f"({MAX_WINDOW_SECONDS:g} s), got {value!r}")
    choices = (("input_kind", ("logmel", "waveform")), ("framing", ("audio_windows", "mel_patches")),
               ("precision", ("fp32", "fp16", "int8")))
    for key, allowed in choices:
        if getattr(info, key) not in allowed:
            return f"{key} must be one of {', '.join(allowed)}, got {getattr(info, key)!r}"
    problem = _input_problem(info)
    if problem:
        return problem
    if info.frontend is not None and info.frontend.sample_rate != info.sample_rate:
        return f"sample_rate {info.sample_rate} Hz differs from the front end's {info.frontend.sample_rate} Hz"
    patch = info.patch_frames
    if info.framing == "mel_patches" and (info.frontend is None or not _is_int(patch) or int(patch or 0) < 1):
        return f"a mel-patch model needs a front end and a positive patch_frames, got {patch!r}"
    if not isinstance(info.outputs, dict) or not all(_is_int(v) and v > 0 for v in info.outputs.values()):
        return f"outputs must map output names to positive widths, got {info.outputs!r}"
    if info.outputs.get(info.embedding_output) != info.embedding_dim:
        return (f"embedding_dim {info.embedding_dim!r} is not the width of output "
                f"{info.embedding_output!r} in {info.outputs}")
    if not all(isinstance(tag, str) for tag in info.tag_names):
        return "tag_names must be strings"
    if info.tags_output is not None and info.outputs.get(info.tags_output) != len(info.tag_names):
        return (f"{len(info.tag_names)} tag names for output {info.tags_output!r} of width "
                f"{info.outputs.get(info.tags_output)}")
    spaces = info.text_spaces
    if not isinstance(spaces, dict) or not all(isinstance(v, str) for v in spaces.values()):
        return "text_spaces must map target kinds to base64 text"
    lacking = [kind for kind in spaces if f"{TARGET_PREFIX}{kind}" not in info.outputs]
    if lacking:
        return f"text_spaces: no output {TARGET_PREFIX}{lacking[0]} for the {lacking[0]!r} space"
    if not isinstance(info.lineage, dict) or not isinstance(info.lineage.get("head", {}), dict):
        return "lineage must be a JSON object (its head one too)"
    if info.tag_encoder is not None:
        if not isinstance(info.tag_encoder, str):
            return f"tag_encoder must be base64 text, got {type(info.tag_encoder).__name__}"
        if JOINT_OUTPUT not in info.outputs or not info.tag_names:
            return f"a tag_encoder needs tag names and a {JOINT_OUTPUT!r} output to share its space with"
    return None


def _input_problem(info: ModelInfo) -> str | None:
    """What is missing or contradictory in the fields of the model's input kind, naming the field."""
    if not _is_int(info.channels) or info.channels not in MODEL_CHANNELS:
        return f"channels must be one of {', '.join(map(str, MODEL_CHANNELS))}, got {info.channels!r}"
    if info.input_transform is not None and not isinstance(info.input_transform, InputTransform):
        return f"input_transform must be an InputTransform, got {info.input_transform!r}"
    if info.input_kind == "logmel":
        if info.frontend is None:
            return "frontend: a logmel model needs a front end, the metadata has none"
        if info.input_transform is not None:
            return "input_transform applies to waveform models only, this one is logmel"
        if info.channels != 1 and info.framing != "audio_windows":
            return f"channels: a {info.channels}-channel logmel model cuts audio_windows, got {info.framing!r}"
        norm = info.band_norm
        if norm is not None and norm.n_bands != info.frontend.n_mels:
            return f"band_norm: {norm.n_bands} bands for a front end of {info.frontend.n_mels} mel bands"
        if norm is not None and norm.channels not in (1, info.channels):
            return f"band_norm: {norm.channels} channels for a {info.channels}-channel model"
        return None
    if info.frontend is not None:
        return "frontend: a waveform model takes samples and has no front end, the metadata gives one"
    if info.band_norm is not None:
        return "band_norm applies to logmel models only, this one is waveform"
    if info.framing != "audio_windows":
        return f"framing: a waveform model cuts audio_windows, got {info.framing!r}"
    if info.patch_frames is not None:
        return f"patch_frames: a waveform model has no mel patches, got {info.patch_frames!r}"
    return None


def check_graph(info: ModelInfo, session: Any, origin: str) -> None:
    """ModelError unless the metadata agrees with the graph's own input and output shapes.

    A logmel graph takes (batch, n_mels, frames), or (batch, channels, n_mels, frames) for a stereo model: a
    fixed n_mels must be the front end's, and fixed frames the number of frames of one window. A waveform
    graph takes (batch, samples) for a mono model and (batch, channels, samples) for a stereo one: fixed
    channels must be the metadata's, and fixed samples ``window_samples``. Each declared output must exist
    with its declared width.
    """
    problem = _graph_problem(info, session)
    if problem:
        raise ModelError(f"{origin}: metadata does not match the graph: {problem}")


def _graph_problem(info: ModelInfo, session: Any) -> str | None:
    inputs = session.get_inputs()
    shape = list(inputs[0].shape) if inputs else []
    if info.input_kind == "waveform":
        problem = _waveform_input_problem(info, shape)
        if problem:
            return problem
    if info.input_kind == "logmel" and info.frontend is not None:
        if info.channels == 1 and len(shape) != 3:
            return f"a logmel model takes (batch, n_mels, frames), the graph's input has shape {shape}"
        if info.channels > 1 and (len(shape) != 4 or (_is_int(shape[1]) and shape[1] != info.channels)):
            return (f"a {info.channels}-channel logmel model takes (batch, {info.channels}, n_mels, frames), "
                    f"the graph's input has shape {shape}")
        n_mels, frames = shape[-2], shape[-1]
        if _is_int(n_mels) and n_mels != info.frontend.n_mels:
            return f"the front end gives {info.frontend.n_mels} mel bands, the graph takes {n_mels}"
        want = info.patch_frames if info.framing == "mel_patches" else info.frontend.n_frames(info.window_samples)
        if _is_int(frames) and frames != want:
            return (f"a {info.window_seconds:g} s window at {info.sample_rate} Hz is {want} frames, "
                    f"the graph takes {frames}")
    widths = {o.name: (list(o.shape) or [None])[-1] for o in session.get_outputs()}
    for name, width in info.outputs.items():
        if name not in widths:
            return f"output {name!r} is not in the graph (it has {', '.join(widths)})"
        if _is_int(widths[name]) and widths[name] != width:
            return f"output {name!r} is {widths[name]} wide in the graph, {width} in the metadata"
    return None


def _waveform_input_problem(info: ModelInfo, shape: list[Any]) -> str | None:
    if info.channels == 1 and len(shape) != 2:
        return f"channels 1: a mono waveform model takes (batch, samples), the graph's input has shape {shape}"
    if info.channels > 1 and len(shape) != 3:
        return (f"channels {info.channels}: a multichannel waveform model takes (batch, channels, samples), "
                f"the graph's input has shape {shape}")
    if len(shape) == 3 and _is_int(shape[1]) and shape[1] != info.channels:
        return f"channels is {info.channels} in the metadata, the graph takes {shape[1]}"
    if _is_int(shape[-1]) and shape[-1] != info.window_samples:
        return (f"window_samples is {info.window_samples} in the metadata, the graph takes "
                f"{shape[-1]} samples")
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_model_info(path: str | Path) -> ModelInfo:
    """Read a model file's metadata, checked against its graph (loads the graph with ONNX Runtime,
    without running it). Raises ModelError for a missing, unloadable or inconsistent file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    return info_from_session(open_session(path, ["CPUExecutionProvider"]), str(path))


def open_session(model: str | Path | bytes, providers: list[str], options: Any = None,
                 what: str | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` over a model file's path or a serialized graph; ModelError (one
    line) if ORT cannot load it, naming it as ``what`` (default: the path) is 'not a loadable ONNX model'."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                    providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types, with multi-line text
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        name = what or ("a serialized graph" if isinstance(model, bytes) else str(model))
        raise ModelError(f"{name}: not a loadable ONNX model ({lines[0]})") from None


def info_from_session(session: Any, origin: str) -> ModelInfo:
    """The metadata of an open ONNX Runtime session, checked against the session's graph."""
    info = info_from_metadata(session.get_modelmeta().custom_metadata_map, origin)
    check_graph(info, session, origin)
    return info


def info_from_metadata(meta: dict[str, str], origin: str) -> ModelInfo:
    """The metadata of a model file, given its ONNX ``metadata_props`` as a dict."""
    if METADATA_KEY not in meta:
        raise ModelError(f"{origin}: an ONNX file without mde metadata (export it with mde)")
    return ModelInfo.from_json(meta[METADATA_KEY], origin)
