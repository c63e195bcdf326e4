"""Export a torch network to an mde model file (ONNX with mde metadata).

The graph has one input: ``logmel`` (batch, n_mels, frames) for a log-mel model, ``waveform`` (batch,
samples) or (batch, channels, samples) for a waveform model (the samples after the model's input
transform, which the runtime applies). It has one output per key of ``info.outputs`` (e.g.
``embedding``, ``tags``), each (batch, size); the batch axis is dynamic (named 'batch'), and the frame or
sample axis too when ``info.variable_length``. Before the bytes are returned, ONNX Runtime's outputs
are compared with torch's on the example batch (:func:`check_parity`).
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
from mde.runtime.package import JOINT_OUTPUT, METADATA_KEY, TAG_ENCODER_INPUT, ModelInfo

INPUT_NAME = "logmel"
"""The graph input of a log-mel model."""
WAVEFORM_INPUT_NAME = "waveform"
"""The graph input of a waveform model."""
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4


class _NamedOutputs(nn.Module):
    """Turns a network's dict / tuple / tensor result into a tuple in the order of ``names``."""

    def __init__(self, module: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.names = tuple(names)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _as_tuple(self.module(x), self.names)


def _as_tuple(result: Any, names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    if isinstance(result, dict):
        return tuple(result[name] for name in names)
    values = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    if len(values) != len(names):
        raise ValueError(f"the network returns {len(values)} outputs, the metadata names {len(names)}")
    return values


def input_name(info: ModelInfo) -> str:
    """The graph input's name for the model's input kind."""
    return WAVEFORM_INPUT_NAME if info.input_kind == "waveform" else INPUT_NAME


def input_rank(info: ModelInfo) -> int:
    """The graph input's rank: 2 for (batch, samples), 3 for (batch, n_mels, frames) and (batch, channels,
    samples), 4 for (batch, channels, n_mels, frames)."""
    return (2 if info.input_kind == "waveform" else 3) + (info.channels > 1)


def export_onnx(module: nn.Module, example_inputs: np.ndarray, info: ModelInfo, opset: int = 17,
                atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> bytes:
    """Serialized ONNX of ``module`` (put in eval mode) with ``info`` in its metadata.

    example_inputs: float32 network inputs ((batch, n_mels, frames) log-mels, or (batch, [channels,]
    samples) transformed waveforms; see :func:`mde.export.examples.example_inputs`) used to trace the
    graph and to check parity.
    Raises ParityError when ONNX Runtime and torch differ beyond ``atol + rtol * max|torch output|``.
    """
    try:
        import onnx
    except ImportError:
        raise MissingExtraError("onnx", "export", "Exporting a model") from None

    names = list(info.outputs)
    if not names:
        raise ValueError("ModelInfo.outputs names no output")
    rank, name_in = input_rank(info), input_name(info)
    length_axis = "samples" if info.input_kind == "waveform" else "frames"
    axes = {0: "batch", rank - 1: length_axis} if info.variable_length else {0: "batch"}
    model = _trace(module, _as_batch(example_inputs, rank), name_in, names, axes, opset)
    onnx.helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    check_parity(data, module, example_inputs, atol=atol, rtol=rtol)
    return data


def export_tag_encoder(module: nn.Module, n_tags: int, opset: int = 17) -> bytes:
    """Serialized ONNX of a tag encoder (``module`` maps (batch, n_tags) multi-hot tags to (batch, d) joint-space
    points): input ``tags``, output ``joint``, the batch axis dynamic. It is checked against torch (at the
    default tolerances) on every single tag and on random tag sets; ParityError beyond them."""
    single = np.eye(n_tags, dtype=np.float32)
    sets = (np.random.default_rng(0).random((16, n_tags)) < 0.1).astype(np.float32)
    examples = np.concatenate([single, sets])
    model = _trace(module.eval(), examples, TAG_ENCODER_INPUT, [JOINT_OUTPUT], {0: "batch"}, opset)
    import onnx

    onnx.checker.check_model(model)
    data = model.SerializeToString()
    check_parity(data, module, examples)
    return data


def _trace(module: nn.Module, batch: np.ndarray, name_in: str, names: Sequence[str], axes: dict[int, str],
           opset: int) -> Any:
    """The onnx.ModelProto of ``module`` (put in eval mode) traced on ``batch``: one input ``name_in`` with the
    dynamic ``axes``, the outputs ``names`` (batch axis dynamic)."""
    import onnx

    module.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(
            _NamedOutputs(module, names), (torch.from_numpy(batch),),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter also writes to a file object
            dynamo=False, input_names=[name_in], output_names=list(names),
            dynamic_axes={name_in: axes, **{name: {0: "batch"} for name in names}}, opset_version=opset,
        )
    return onnx.load_from_string(buffer.getvalue())


def check_parity(onnx_bytes: bytes, module: nn.Module, example_inputs: np.ndarray,
                 atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> dict[str, float]:
    """Max |ONNX Runtime - torch| per output name on ``example_inputs`` (a batch of network inputs);
    ParityError beyond tolerance.

    The tolerance of an output is ``atol + rtol * max|torch output|``.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    [graph_input] = session.get_inputs()
    batch = _as_batch(example_inputs, len(graph_input.shape))
    names = [output.name for output in session.get_outputs()]
    got = dict(zip(names, session.run(names, {graph_input.name: batch})))
    module.eval()
    with torch.no_grad():
        want = _as_tuple(module(torch.from_numpy(batch)), names)
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


def _as_batch(inputs: np.ndarray, rank: int) -> np.ndarray:
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    if inputs.ndim != rank:
        raise ValueError(f"example inputs must have {rank} axes (batch first), got shape {inputs.shape}")
    return inputs
