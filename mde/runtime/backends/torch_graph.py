"""A model file's ONNX graph run op by op with torch: the exact network, weights included, as a module.

Only the operators that mde's exporters emit (convolutional taggers on log-mels or waveforms: Conv,
BatchNormalization, pooling, Gemm, reductions, Pad and the shape arithmetic around it, and the LSTM / GRU
layers of recurrent ones) are supported; any other operator, or a recurrent layer with settings torch's
own layers lack, is refused with one line when the file is loaded. Sub-graphs whose inputs are all
constants (e.g. the pad amounts torch's exporter computes with ConstantOfShape / Concat / Slice) are
folded once at load time, so the forward pass never reads a device tensor back to the host (which CUDA
graph capture requires).

Imported only by the torch backend: it imports torch and onnx at module level.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from mde.errors import ModelError

Value = Any  # a torch.Tensor, or None for an omitted optional input
Op = Callable[[list[Value], dict[str, Any]], list[torch.Tensor]]

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.BOOL: torch.bool,
}


def _ints(value: torch.Tensor) -> list[int]:
    """An integer tensor (a folded constant, on the CPU) as a Python list."""
    return [int(v) for v in value.reshape(-1).tolist()]


def _tensor(proto: onnx.TensorProto) -> torch.Tensor:
    return torch.from_numpy(np.array(numpy_helper.to_array(proto)))


def _axes(inputs: list[Value], attrs: dict[str, Any], position: int) -> list[int] | None:
    """Axes given as an attribute (older opsets) or as input ``position`` (newer opsets)."""
    if "axes" in attrs:
        return list(attrs["axes"])
    if len(inputs) > position and inputs[position] is not None:
        return _ints(inputs[position])
    return None


def _padding(pads: list[int], rank: int) -> tuple[list[int], list[int]]:
    """ONNX spatial pads [x1_begin, x2_begin, ..., x1_end, x2_end] as (begins, ends)."""
    pads = pads or [0] * (2 * rank)
    return pads[:rank], pads[rank:]


def _torch_pad(begins: list[int], ends: list[int]) -> list[int]:
    """Begins / ends per axis (first to last) in F.pad's order (last axis first)."""
    order: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends)):
        order += [begin, end]
    return order


def _conv(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
    x, weight = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    rank = weight.dim() - 2
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ModelError("Conv with auto_pad is not supported by the torch backend")
    begins, ends = _padding(list(attrs.get("pads", [])), rank)
    padding: Any = begins
    if begins != ends:
        x, padding = F.pad(x, _torch_pad(begins, ends)), 0
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    strides = list(attrs.get("strides", [1] * rank))
    dilations = list(attrs.get("dilations", [1] * rank))
    return [conv(x, weight, bias, strides, padding, dilations, attrs.get("group", 1))]


def _pool(kind: str) -> Op:
    def run(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
        x = inputs[0]
        kernel = list(attrs["kernel_shape"])
        rank = len(kernel)
        strides = list(attrs.get("strides", [1] * rank))
        begins, ends = _padding(list(attrs.get("pads", [])), rank)
        ceil = bool(attrs.get("ceil_mode", 0))
        padding: Any = begins
        if begins != ends:
            fill = -math.inf if kind == "max" else 0.0
            x, padding = F.pad(x, _torch_pad(begins, ends), value=fill), 0
        if kind == "max":
            dilations = list(attrs.get("dilations", [1] * rank))
            max_pool: Any = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
            return [max_pool(x, kernel, strides, padding, dilations, ceil_mode=ceil)]
        average_pool: Any = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
        include = bool(attrs.get("count_include_pad", 0))
        return [average_pool(x, kernel, strides, padding, ceil_mode=ceil, count_include_pad=include)]

    return run


def _reduce(kind: str) -> Op:
    def run(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
        x = inputs[0]
        axes = _axes(inputs, attrs, 1)
        keep = bool(attrs.get("keepdims", 1))
        if axes is None:
            if attrs.get("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.dim()))
        if kind == "max":
            return [torch.amax(x, dim=axes, keepdim=keep)]
        if kind == "min":
            return [torch.amin(x, dim=axes, keepdim=keep)]
        if kind == "sum":
            return [torch.sum(x, dim=axes, keepdim=keep)]
        return [torch.mean(x, dim=axes, keepdim=keep)]

    return run


def _gemm(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
    a, b = inputs[0], inputs[1]
    if attrs.get("transA", 0):
        a = a.transpose(0, 1)
    if attrs.get("transB", 0):
        b = b.transpose(0, 1)
    y = attrs.get("alpha", 1.0) * (a @ b)
    if len(inputs) > 2 and inputs[2] is not None:
        y = y + attrs.get("beta", 1.0) * inputs[2]
    return [y]


def _reshape(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
    x, shape = inputs[0], _ints(inputs[1])
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def _flatten(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
    x = inputs[0]
    axis = attrs.get("axis", 1)
    axis = axis + x.dim() if axis < 0 else axis
    return [x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)]


def _slice(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
    """ONNX Slice; its clamping of out-of-range starts and ends is Python's slice semantics."""
    x = inputs[0]
    starts, ends = _ints(inputs[1]), _ints(inputs[2])
    axes = _axes(inputs, {}, 3) or list(range(len(starts)))
    steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        if step > 0:
            x = x[(slice(None),) * axis + (slice(start, end, step),)]
        else:  # torch tensors do not take negative steps: pick the indices Python's slicing gives
            picked = list(range(x.shape[axis])[slice(start, end, step)])
            x = torch.index_select(x, axis, torch.tensor(picked, dtype=torch.int64, device=x.device))
    return [x]


def _pad(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
    x = inputs[0]
    pads = _ints(inputs[1]) if len(inputs) > 1 else list(attrs["pads"])
    value = float(inputs[2].item()) if len(inputs) > 2 and inputs[2] is not None else 0.0
    axes = _axes(inputs, {}, 3) or list(range(x.dim()))
    count = len(axes)
    begins, ends = [0] * x.dim(), [0] * x.dim()
    for i, axis in enumerate(axes):
        begins[axis % x.dim()], ends[axis % x.dim()] = pads[i], pads[count + i]
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[mode]
    first = next((i for i in range(x.dim()) if begins[i] or ends[i]), x.dim())
    order = _torch_pad(begins[first:], ends[first:])
    if torch_mode == "constant":
        return [F.pad(x, order, value=value)]
    return [F.pad(x, order, mode=torch_mode)]


def _gather(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
    x, indices = inputs[0], inputs[1]
    axis = attrs.get("axis", 0) % x.dim()
    picked = torch.index_select(x, axis, indices.reshape(-1).to(x.device) % x.shape[axis])
    return [picked.reshape((*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :]))]  # () for a scalar index


def _unsqueeze(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
    x = inputs[0]
    axes = _axes(inputs, attrs, 1) or []
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return [x]


def _squeeze(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
    x = inputs[0]
    axes = _axes(inputs, attrs, 1)
    if axes is None:
        return [x.squeeze()]
    return [x.squeeze(tuple(a % x.dim() for a in axes))]


def _transpose(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
    x = inputs[0]
    return [x.permute(list(attrs.get("perm", reversed(range(x.dim())))))]


def _constant_of_shape(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
    fill = _tensor(attrs["value"]) if "value" in attrs else torch.zeros(1, dtype=torch.float32)
    return [torch.full(_ints(inputs[0]), fill.reshape(-1)[0].item(), dtype=fill.dtype)]


def _constant(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
    if "value" not in attrs:
        raise ModelError("a Constant node without a tensor 'value' is not supported by the torch backend")
    return [_tensor(attrs["value"])]


def _cast(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
    target = attrs["to"]
    if target not in _ONNX_DTYPES:
        raise ModelError(f"Cast to ONNX type {target} is not supported by the torch backend")
    return [inputs[0].to(_ONNX_DTYPES[target])]


_RECURRENT_GATES = {"LSTM": (4, (0, 2, 3, 1)), "GRU": (3, (1, 0, 2))}
"""Gate blocks per ONNX recurrent op, and torch's order of ONNX's blocks in W, R and B (LSTM: ONNX i, o, f, c
-> torch i, f, g, o; GRU: ONNX z, r, h -> torch r, z, n)."""
_RECURRENT_DEFAULTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
"""The activations of torch's layers (ONNX's defaults), per direction."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def recurrent_problem(op_type: str, inputs: list[str], attrs: dict[str, Any]) -> str | None:
    """Why the torch backend cannot run an ONNX LSTM / GRU node as torch's layer does (None if it can):
    custom activations, clipping, coupled gates, batch-first layout, per-sequence lengths, peepholes, or a
    GRU whose reset gate applies after the recurrent product."""
    defaults = _RECURRENT_DEFAULTS[op_type]
    activations = [_text(a) for a in attrs.get("activations", [])]
    if activations and activations not in (defaults, defaults * 2):  # per direction
        return f"activations {', '.join(activations)}"
    for name in ("clip", "input_forget", "layout"):
        if attrs.get(name):
            return f"the {name} attribute"
    if len(inputs) > 4 and inputs[4]:
        return "sequence_lens"
    if op_type == "LSTM" and len(inputs) > 7 and inputs[7]:
        return "peephole weights"
    if op_type == "GRU" and not attrs.get("linear_before_reset", 0):
        return "linear_before_reset 0"
    return None


def _recurrent(op_type: str) -> Op:
    """ONNX LSTM / GRU (one layer; forward, reverse or bidirectional; checked by
    :func:`recurrent_problem`) as torch.lstm / torch.gru: Y (seq, directions, batch, hidden), Y_h (and Y_c)."""
    gates, order = _RECURRENT_GATES[op_type]

    def run(inputs: list[Value], attrs: dict[str, Any]) -> list[torch.Tensor]:
        x, weights, recurrences = inputs[0], inputs[1], inputs[2]
        bias = inputs[3] if len(inputs) > 3 else None
        hidden, directions, batch = int(attrs["hidden_size"]), weights.shape[0], x.shape[1]

        def blocks(value: torch.Tensor) -> torch.Tensor:
            return torch.cat([value[i * hidden : (i + 1) * hidden] for i in order])

        params = []
        for d in range(directions):
            b = bias[d] if bias is not None else weights.new_zeros(2 * gates * hidden)
            params += [blocks(weights[d]), blocks(recurrences[d]),
                       blocks(b[: gates * hidden]), blocks(b[gates * hidden :])]

        def state(position: int) -> torch.Tensor:
            """An initial state input (a host tensor when torch's exporter builds zeros of the batch's size)."""
            value: torch.Tensor = x.new_zeros(directions, batch, hidden)
            if len(inputs) > position and inputs[position] is not None:
                value = inputs[position].to(device=x.device, dtype=x.dtype)
            return value

        reverse = _text(attrs.get("direction", "forward")) == "reverse"
        sequence = x.flip(0) if reverse else x
        if op_type == "LSTM":
            y, *states = torch.lstm(sequence, (state(5), state(6)), params, True, 1, 0.0, False, directions == 2, False)
        else:
            y, *states = torch.gru(sequence, state(5), params, True, 1, 0.0, False, directions == 2, False)
        y = y.flip(0) if reverse else y
        return [y.reshape(y.shape[0], batch, directions, hidden).permute(0, 2, 1, 3), *states]

    return run


def _elementwise(function: Callable[..., torch.Tensor]) -> Op:
    return lambda inputs, attrs: [function(*inputs)]


OPS: dict[str, Op] = {
    "Add": _elementwise(torch.add),
    "Sub": _elementwise(torch.sub),
    "Mul": _elementwise(torch.mul),
    "Div": _elementwise(torch.div),
    "MatMul": _elementwise(torch.matmul),
    "Relu": _elementwise(torch.relu),
    "Sigmoid": _elementwise(torch.sigmoid),
    "Tanh": _elementwise(torch.tanh),
    "Identity": lambda inputs, attrs: [inputs[0]],
    "Dropout": lambda inputs, attrs: [inputs[0]],
    "Softmax": lambda inputs, attrs: [torch.softmax(inputs[0], dim=attrs.get("axis", -1))],
    "Concat": lambda inputs, attrs: [torch.cat([v for v in inputs if v is not None], dim=attrs["axis"])],
    "Shape": lambda inputs, attrs: [torch.tensor(list(inputs[0].shape), dtype=torch.int64)],
    "Gather": _gather,
    "BatchNormalization": lambda inputs, attrs: [
        F.batch_norm(inputs[0], inputs[3], inputs[4], inputs[1], inputs[2], False, 0.0, attrs.get("epsilon", 1e-5))
    ],
    "GlobalAveragePool": lambda inputs, attrs: [inputs[0].mean(dim=tuple(range(2, inputs[0].dim())), keepdim=True)],
    "GlobalMaxPool": lambda inputs, attrs: [inputs[0].amax(dim=tuple(range(2, inputs[0].dim())), keepdim=True)],
    "Conv": _conv,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("average"),
    "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"),
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "Gemm": _gemm,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Slice": _slice,
    "Pad": _pad,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Transpose": _transpose,
    "ConstantOfShape": _constant_of_shape,
    "Constant": _constant,
    "Cast": _cast,
    "LSTM": _recurrent("LSTM"),
    "GRU": _recurrent("GRU"),
}


class OnnxGraphModule(nn.Module):
    """The graph of an ONNX model as a torch module: ``forward(x)`` returns {output name: tensor}.

    Floating-point constants become buffers (they follow ``.to(device)``); integer constants (shapes,
    axes, pads) stay on the CPU as Python-side values.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        unsupported = sorted({node.op_type for node in graph.node if node.domain not in ("", "ai.onnx")}
                             | {node.op_type for node in graph.node if node.op_type not in OPS})
        if unsupported:
            raise ModelError(f"{graph.name or 'model'}: the torch backend does not support {', '.join(unsupported)}")
        constants = {init.name: _tensor(init) for init in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in constants]
        self.output_names = [o.name for o in graph.output]
        self.nodes: list[tuple[str, list[str], list[str], dict[str, Any]]] = []
        for node in graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            problem = recurrent_problem(node.op_type, list(node.input), attrs) \
                if node.op_type in _RECURRENT_GATES else None
            if problem:
                raise ModelError(
                    f"{graph.name or 'model'}: the torch backend does not support {node.op_type} with {problem}")
            if all(name == "" or name in constants for name in node.input):
                values = OPS[node.op_type]([constants.get(name) for name in node.input], attrs)
                constants.update(_named(node.output, values))
            else:
                self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        self._buffer_of: dict[str, str] = {}
        self.host_constants: dict[str, torch.Tensor] = {}
        for i, (name, value) in enumerate(constants.items()):
            if value.is_floating_point():
                self._buffer_of[name] = f"c{i}"
                self.register_buffer(f"c{i}", value)
            else:
                self.host_constants[name] = value

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        values: dict[str, Any] = {"": None, **self.host_constants, self.input_names[0]: x}
        values.update({name: getattr(self, buffer) for name, buffer in self._buffer_of.items()})
        for op_type, inputs, outputs, attrs in self.nodes:
            values.update(_named(outputs, OPS[op_type]([values[name] for name in inputs], attrs)))
        return {name: values[name] for name in self.output_names}


def _named(names: list[str], values: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """A node's results by output name, without the omitted optional outputs (named '')."""
    return {name: value for name, value in zip(names, values) if name}
