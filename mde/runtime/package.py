"""The model file: one ``.onnx`` whose metadata carries everything the runtime needs.

The metadata is a JSON object stored under the ONNX ``metadata_props`` key ``mde``. It is read here with
ONNX Runtime alone (no ``onnx`` import), so the runtime stays light.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional

from mde.errors import ModelError
from mde.runtime.frontend_config import FrontendConfig

METADATA_KEY = "mde"
FORMAT_VERSION = 1

InputKind = Literal["logmel", "waveform"]
Framing = Literal["audio_windows", "mel_patches"]
Precision = Literal["fp32", "fp16", "int8"]


@dataclass(frozen=True)
class ModelInfo:
    """What a model file declares about itself.

    window, hop: the analysis window and its default step, in samples at ``sample_rate`` (for mel-patch
      models, patch_frames and the patch step times the front end's hop_length).
    input_kind: 'logmel' (the graph takes (batch, n_mels, frames) from the C front end) or 'waveform'.
    framing: 'audio_windows' cuts audio windows and computes a log-mel per window (the first seed);
      'mel_patches' computes one log-mel over the whole signal and cuts patches of ``patch_frames``
      frames from it (musicnn).
    outputs: the graph's output names that hold per-window vectors; ``embedding_output`` is the
      default embedding and ``tags_output`` (if any) holds tag probabilities.
    variable_length: whether the graph accepts other window lengths than ``window``.
    precision: the graph's arithmetic: 'fp32', 'fp16' (float16 weights and compute) or 'int8' (static
      QDQ quantization); inputs and outputs are float32 in every case.
    """

    name: str
    architecture: str
    source: str
    licence: str
    sample_rate: int
    window: int
    hop: int
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
    format_version: int = FORMAT_VERSION

    @property
    def window_seconds(self) -> float:
        return self.window / self.sample_rate

    @property
    def hop_seconds(self) -> float:
        return self.hop / self.sample_rate

    @property
    def n_tags(self) -> int:
        return len(self.tag_names)

    def to_json(self) -> str:
        data = asdict(self)
        data["frontend"] = self.frontend.to_dict() if self.frontend else None
        data["tag_names"] = list(self.tag_names)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, origin: str = "model") -> "ModelInfo":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{origin}: metadata is not valid JSON ({exc})") from None
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelError(f"{origin}: metadata format {version} is not supported (want {FORMAT_VERSION})")
        known = {f.name for f in fields(cls)}
        try:
            data = {k: v for k, v in data.items() if k in known}
            data["frontend"] = FrontendConfig.from_dict(data["frontend"]) if data.get("frontend") else None
            data["tag_names"] = tuple(data.get("tag_names", ()))
            return cls(**data)
        except (TypeError, KeyError) as exc:
            raise ModelError(f"{origin}: incomplete metadata ({exc})") from None


def read_model_info(path: str | Path) -> ModelInfo:
    """Read a model file's metadata (loads the graph with ONNX Runtime, without running it)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise ModelError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
    return info_from_session(session, str(path))


def info_from_session(session: Any, origin: str) -> ModelInfo:
    """The metadata of an open ONNX Runtime session."""
    return info_from_metadata(session.get_modelmeta().custom_metadata_map, origin)


def info_from_metadata(meta: dict[str, str], origin: str) -> ModelInfo:
    """The metadata of a model file, given its ONNX ``metadata_props`` as a dict."""
    if METADATA_KEY not in meta:
        raise ModelError(f"{origin}: an ONNX file without mde metadata (export it with mde)")
    return ModelInfo.from_json(meta[METADATA_KEY], origin)
