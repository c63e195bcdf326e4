"""Arithmetic of a model and of the machine: FLOPs counted from an ONNX graph, the CPU's float32 peak.

FLOPs count the multiply-accumulates of Conv, MatMul and Gemm nodes, 2 flops each, with the shapes that
ONNX shape inference gives for a concrete input shape (ONNX Runtime's symbolic shape inference, which
runs onnx's and also propagates the computed pad amounts that torch's exporter emits) (other ops, e.g.
batch norms, pooling and activations, are a few percent of a convolutional tagger's work and are left
out). The peak is derived from /proc/cpuinfo: vector width from the CPU flags, 2 FMA units per core,
the 'cpu MHz' clock.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

FMA_UNITS = 2
"""FMA pipes per core assumed by :func:`cpu_peak` (x86 server cores since Haswell / Zen 2)."""


def count_flops(model_path: str | os.PathLike[str], input_shape: Sequence[int]) -> int:
    """Floating-point operations of one run of the graph in ``model_path`` on an input of
    ``input_shape`` (e.g. (batch, n_mels, frames)): 2 x the multiply-accumulates of its Conv, MatMul
    and Gemm nodes. Raises ValueError when shape inference leaves one of their shapes unknown."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(os.fspath(model_path))
    graph = model.graph
    initializers = {init.name: list(init.dims) for init in graph.initializer}
    graph_input = next(i for i in graph.input if i.name not in initializers)
    dims = graph_input.type.tensor_type.shape.dim
    if len(dims) != len(input_shape):
        raise ValueError(f"the graph input has rank {len(dims)}, the shape given {len(input_shape)}")
    for dim, size in zip(dims, input_shape, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = int(size)
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    shapes = dict(initializers)
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        known = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if value.type.tensor_type.HasField("shape") and None not in known:
            shapes[value.name] = known
    return 2 * sum(_macs(node, shapes) for node in inferred.graph.node)


def _macs(node, shapes: dict[str, list[int]]) -> int:
    """Multiply-accumulates of one node (0 for ops that are not counted)."""
    if node.op_type not in ("Conv", "MatMul", "Gemm"):
        return 0
    needed = [node.input[0], node.input[1], node.output[0]]
    missing = [name for name in needed if name not in shapes]
    if missing:
        raise ValueError(f"shape inference left {missing[0]!r} ({node.op_type} {node.name!r}) without a shape")
    first, second, out = (shapes[name] for name in needed)
    if node.op_type == "Conv":
        return math.prod(out) * math.prod(second[1:])  # per output value: C_in / group x kernel
    if node.op_type == "MatMul":
        return math.prod(out) * first[-1]
    trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
    return math.prod(out) * (first[0] if trans_a else first[1])


@dataclass(frozen=True)
class Peak:
    """A float32 peak in GFLOP/s and where the figure comes from (one sentence)."""

    gflops: Optional[float]
    source: str


def cpu_peak(cores: int, cpuinfo: Optional[str] = None) -> Peak:
    """The float32 peak of ``cores`` cores from /proc/cpuinfo (or the text ``cpuinfo``): FMA_UNITS FMA
    units x float32 lanes (16 with AVX-512 on Intel; 8 with AVX2 + FMA, AMD executing AVX-512 as two
    256-bit halves; 4 otherwise) x 2 flops x the 'cpu MHz' clock x ``cores``."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return Peak(None, "unknown: no /proc/cpuinfo on this system")
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    try:
        mhz = float(fields["cpu MHz"])
    except (KeyError, ValueError):
        return Peak(None, "unknown: /proc/cpuinfo gives no 'cpu MHz'")
    intel = fields.get("vendor_id") == "GenuineIntel"
    if "avx512f" in flags and intel:
        lanes, why = 16, "AVX-512"
    elif {"avx2", "fma"} <= flags:
        lanes = 8
        why = "AVX2 + FMA" + ("; AVX-512 runs as two 256-bit halves on AMD" if "avx512f" in flags else "")
    else:
        lanes, why = 4, "no AVX2 + FMA: 128-bit SSE assumed"
    gflops = FMA_UNITS * lanes * 2 * mhz / 1e3 * cores
    source = (
        f"{FMA_UNITS} FMA units x {lanes} float32 lanes ({why}) x 2 flop x {mhz:.0f} MHz ('cpu MHz' in "
        f"/proc/cpuinfo; boost clocks can be higher) x {cores} core{'s' if cores != 1 else ''} "
        f"= {gflops:.0f} GFLOP/s"
    )
    return Peak(round(gflops, 1), source)


GPU_PEAKS_TFLOPS = {"h100": (67.0, 989.0), "h200": (67.0, 989.0), "a100": (19.5, 312.0)}
"""Datasheet dense peaks (float32 without tensor cores, float16 tensor cores) of SXM parts, TFLOP/s."""


def gpu_peak(device_name: str, fp16: bool) -> Peak:
    """The datasheet peak of a GPU named ``device_name`` (float16 tensor cores when ``fp16``), if known."""
    lowered = device_name.lower()
    for key, (fp32_tflops, fp16_tflops) in GPU_PEAKS_TFLOPS.items():
        if key in lowered:
            value = fp16_tflops if fp16 else fp32_tflops
            kind = "float16 tensor-core" if fp16 else "float32"
            return Peak(value * 1e3, f"NVIDIA datasheet dense {kind} peak of the {key.upper()} SXM: {value:g} TFLOP/s")
    return Peak(None, f"unknown: no datasheet figure for {device_name}")
