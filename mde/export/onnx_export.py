"""Export a torch network that takes a log-mel to an mde model file (ONNX with mde metadata).

The graph has one input ``logmel`` (batch, n_mels, frames) and one output per key of ``info.outputs``
(e.g. ``embedding``, ``tags``), each (batch, size); the batch axis is dynamic (named 'batch'), and the
frame axis too when ``info.variable_length``. Before the bytes are returned, ONNX Runtime's outputs are
compared with torch's on the example batch (:func:`check_parity`).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mde.errors import MissingExtraError, ModelError, ParityError
from mde.runtime.package import METADATA_KEY, ModelInfo

INPUT_NAME = "logmel"
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4


class _NamedOutputs(nn.Module):
    """Turns a network's dict / tuple / tensor result into a tuple in the order of ``names``."""

    def __init__(self, module: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.names = tuple(names)

    def forward(self, logmel: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _as_tuple(self.module(logmel), self.names)


def _as_tuple(result: Any, names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    if isinstance(result, dict):
        return tuple(result[name] for name in names)
    values = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    if len(values) != len(names):
        raise ValueError(f"the network returns {len(values)} outputs, the metadata names {len(names)}")
    return values


def export_onnx(module: nn.Module, example_logmel: np.ndarray, info: ModelInfo, opset: int = 17,
                atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> bytes:
    """Serialized ONNX of ``module`` (put in eval mode) with ``info`` in its metadata.

    example_logmel: float32 (batch, n_mels, frames) used to trace the graph and to check parity.
    Raises ParityError when ONNX Runtime and torch differ beyond ``atol + rtol * max|torch output|``.
    """
    try:
        import onnx
    except ImportError:
        raise MissingExtraError("onnx", "export", "Exporting a model") from None

    names = list(info.outputs)
    if not names:
        raise ValueError("ModelInfo.outputs names no output")
    module.eval()
    axes = {0: "batch", 2: "frames"} if info.variable_length else {0: "batch"}
    dynamic_axes = {INPUT_NAME: axes, **{name: {0: "batch"} for name in names}}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(
            _NamedOutputs(module, names), (torch.from_numpy(_as_batch(example_logmel)),),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter also writes to a file object
            dynamo=False, input_names=[INPUT_NAME], output_names=names, dynamic_axes=dynamic_axes,
            opset_version=opset,
        )
    model = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    check_parity(data, module, example_logmel, atol=atol, rtol=rtol)
    return data


def check_parity(onnx_bytes: bytes, module: nn.Module, example_logmel: np.ndarray,
                 atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> dict[str, float]:
    """Max |ONNX Runtime - torch| per output name on ``example_logmel``; ParityError beyond tolerance.

    The tolerance of an output is ``atol + rtol * max|torch output|``.
    """
    import onnxruntime as ort

    logmel = _as_batch(example_logmel)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    got = dict(zip(names, session.run(names, {INPUT_NAME: logmel})))
    module.eval()
    with torch.no_grad():
        want = _as_tuple(module(torch.from_numpy(logmel)), names)
    deltas: dict[str, float] = {}
    failures = []
    for name, output in zip(names, want):
        expected = output.numpy()
        deltas[name] = float(np.abs(got[name] - expected).max())
        tolerance = atol + rtol * float(np.abs(expected).max())
        if not deltas[name] <= tolerance:
            failures.append(f"{name} max |delta| {deltas[name]:.3e} (tolerance {tolerance:.3e})")
    if failures:
        raise ParityError("ONNX Runtime differs from torch: " + "; ".join(failures))
    return deltas


def read_metadata(model_bytes: bytes) -> ModelInfo:
    """The mde metadata of a serialized model (ModelError without it)."""
    import onnx

    props = {prop.key: prop.value for prop in onnx.load_from_string(model_bytes).metadata_props}
    if METADATA_KEY not in props:
        raise ModelError("an ONNX model without mde metadata (export it with mde)")
    return ModelInfo.from_json(props[METADATA_KEY])


def with_metadata(model: Any, info: ModelInfo) -> bytes:
    """Serialized ``model`` (an onnx.ModelProto or its bytes) whose mde metadata is ``info``; other
    metadata entries are kept."""
    import onnx

    if isinstance(model, bytes):
        model = onnx.load_from_string(model)
    props = {prop.key: prop.value for prop in model.metadata_props}
    onnx.helper.set_model_props(model, {**props, METADATA_KEY: info.to_json()})
    return model.SerializeToString()


def _as_batch(logmel: np.ndarray) -> np.ndarray:
    logmel = np.ascontiguousarray(logmel, dtype=np.float32)
    if logmel.ndim != 3:
        raise ValueError(f"example log-mel must be (batch, n_mels, frames), got shape {logmel.shape}")
    return logmel
