"""Reduced-precision copies of an fp32 mde model file, each checked against the fp32 file in ONNX Runtime.

* :func:`to_fp16`: float16 weights and arithmetic, float32 graph inputs and outputs (onnxconverter-common).
* :func:`to_int8`: static QDQ quantization (int8 weights per channel, uint8 activations), calibrated on
  the network inputs (log-mels, or transformed waveforms) of real audio windows (onnxruntime.quantization),
  after the exact fp32 rewrites of :mod:`mde.export.graph_rewrite`.

Both keep the ONNX metadata (with ``precision`` updated) so the result is a complete model file that
the runtime loads like any other. :func:`compare` gives the agreement figures the checks are based on.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from mde.errors import MdeError, MissingExtraError, ParityError
from mde.export.graph_rewrite import (
    pool_before_post_relu_batchnorm,
    transpose_column_convs,
)
from mde.export.onnx_export import input_name, read_metadata, with_metadata
from mde.export.progress import Progress, no_progress
from mde.runtime.chunker import frame_grid
from mde.runtime.extractor import frames_per_call
from mde.runtime.package import METADATA_KEY, ModelInfo, Precision

FP16_MIN_COSINE = 0.999
"""Smallest embedding cosine (fp16 vs fp32) accepted, per window."""
FP16_TAGS_ATOL = 1e-2
"""Largest |fp16 - fp32| tag probability accepted."""
INT8_MIN_COSINE = 0.98
"""Smallest embedding cosine (int8 vs fp32) accepted, per window."""
MIN_CALIBRATION_WINDOWS = 100
CALIBRATION_BATCH = 4
"""Windows per calibration inference (fewer for long windows: at most MAX_CALL_SECONDS of audio, as the
runtime runs them; FCN29's 29 s windows go one at a time). The calibrator keeps only each tensor's
per-channel min and max per inference (a few kB), so its memory is one batch's activations (FCN29: ~60 MB
per 29 s window).
CalibMaxIntermediateOutputs is not set: in ONNX Runtime 1.32 it clears the collected ranges without folding
them in, so only the inferences after the last clearing counted (fcn05 int8 on 200 windows: cosine 0.960
from the last 8 windows, 0.998 from all) and a multiple of that count of inferences failed."""
CALIBRATING = "calibrating int8"
"""The progress stage of the calibration inferences (counted in windows)."""
COMPARE_BATCH = 8
"""Windows per inference call in the agreement checks."""
TOP_K = 5
INT8_OP_TYPES = ("Conv", "Gemm", "MatMul", "MaxPool", "Relu")
"""Ops quantized to int8; the others (BatchNormalization after ReLU in musicnn, ...) stay float32
between DequantizeLinear / QuantizeLinear. Quantizing every supported op drops MTT_musicnn's min embedding
cosine to ~0.79; these keep it at ~0.98 (MinMax) and hold nearly all the arithmetic. MaxPool and Relu
cost no accuracy (a max and a clamp of uint8 codes) and save a Dequantize / Quantize pair on a full map:
with Relu kept float, FCN29's first layer spent 10 ms of its 45 ms there (int8 1.5x -> 2.2x fp32)."""
FLOAT_OUTPUT_OP_TYPES = ("Gemm", "MatMul")
"""Quantized ops whose output stays float32 (ORT's QGemm writes it directly): the dense layers feed the
embedding and the tag logits. Quantizing their outputs to 8 bits saved no measurable time and made the
largest |int8 - fp32| tag probability 1.2e-1 (MTT_musicnn) and 2.7e-1 (FCN29) against 8.6e-2 and 1.3e-1."""
ACTIVATION_TYPE = "QUInt8"
"""uint8 activations with int8 weights (U8S8): ONNX Runtime's x86 int8 kernels (MLAS, VPMADDUBSW /
VPDPBUSD) are built for U8S8. With int8 activations (S8S8) ORT (1.31) left musicnn's timbral convs
unfused (float Conv between Q/DQ) and its int8 model ran 0.65x the speed of fp32; with uint8, 0.98x."""
REWRITE_CHECK_WINDOWS = 8
"""Check windows the fp32 graph rewrite is checked on before quantization."""
REWRITE_ATOL = 1e-5
REWRITE_RTOL = 1e-5
REDUCE_RANGE = True
"""7-bit weights: U8S8 products can saturate VPMADDUBSW's int16 sums on x86 CPUs without VNNI; ORT
recommends reduce_range there. The file is portable across CPUs, so it is always on (accuracy was the
same or better on FCN29 and MTT_musicnn)."""


@dataclass(frozen=True)
class Agreement:
    """How a reduced-precision model agrees with its fp32 source on the same network inputs.

    cosine_min, cosine_mean: cosine similarity of the embedding output, per window.
    tags_max_delta: largest |reduced - fp32| tag probability (None without a tags output).
    top5_agreement: fraction of windows whose top-5 tag sets are equal (None without tags).
    windows: how many windows were compared.
    """

    cosine_min: float
    cosine_mean: float
    tags_max_delta: float | None
    top5_agreement: float | None
    windows: int

    def describe(self) -> str:
        text = f"embedding cosine min {self.cosine_min:.5f} mean {self.cosine_mean:.5f}"
        if self.tags_max_delta is not None:
            text += f", tags max |delta| {self.tags_max_delta:.2e}, top-{TOP_K} agreement {self.top5_agreement:.1%}"
        return f"{text} over {self.windows} windows"


def to_fp16(model_bytes: bytes, windows: np.ndarray, on_progress: Progress = no_progress) -> tuple[bytes, Agreement]:
    """The model with float16 weights and compute (float32 in and out), and its agreement with fp32 on
    ``windows`` (float32 network inputs, (n, n_mels, frames) log-mels or (n, [channels,] samples)
    waveforms). ParityError below FP16_MIN_COSINE or above
    FP16_TAGS_ATOL. Every op of the mde architectures (Conv, BatchNormalization, MaxPool, Gemm, ...) has
    a float16 kernel on ONNX Runtime's CPU provider, so no op is kept in float32."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise MissingExtraError("onnxconverter-common", "export", "Converting a model to fp16") from None
    import onnx

    model = _outputs_as_leaves(onnx.load_from_string(model_bytes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one notice per weight too small for float16 (flushed to 0 / 1e-7)
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    data = _with_precision(converted, "fp16")
    agreement = compare(model_bytes, data, windows, on_progress=on_progress, stage="checking fp16 against fp32")
    failures = []
    if not agreement.cosine_min >= FP16_MIN_COSINE:
        failures.append(f"embedding cosine {agreement.cosine_min:.5f} < {FP16_MIN_COSINE}")
    if agreement.tags_max_delta is not None and not agreement.tags_max_delta <= FP16_TAGS_ATOL:
        failures.append(f"tags max |delta| {agreement.tags_max_delta:.3e} > {FP16_TAGS_ATOL}")
    if failures:
        raise ParityError(f"fp16 differs from fp32: {'; '.join(failures)} ({agreement.describe()})")
    return data, agreement


def to_int8(model_bytes: bytes, calibration_windows: np.ndarray, check_windows: np.ndarray | None = None,
            on_progress: Progress = no_progress) -> tuple[bytes, Agreement]:
    """The model statically quantized to int8 (QDQ, per-channel int8 weights, uint8 activations, MinMax
    ranges from ``calibration_windows``: float32 network inputs of n >= 100 windows of real audio) and
    its agreement with fp32 on ``check_windows`` (default: the calibration windows). ParityError below
    INT8_MIN_COSINE; MdeError for fewer than MIN_CALIBRATION_WINDOWS windows. ``on_progress`` counts the
    windows calibrated (CALIBRATING), then those checked."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration_windows) < MIN_CALIBRATION_WINDOWS:
        raise MdeError(
            f"int8 calibration needs at least {MIN_CALIBRATION_WINDOWS} windows of real audio, got "
            f"{len(calibration_windows)}"
        )
    import onnx

    checked = calibration_windows if check_windows is None else check_windows
    with tempfile.TemporaryDirectory(prefix="mde-int8-") as tmp, _quiet_root_logger():
        source, prepared, quantized = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        source.write_bytes(model_bytes)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        model = rewrite_for_int8(onnx.load(str(prepared)))
        onnx.save(model, str(prepared))
        _check_rewrite(model_bytes, prepared.read_bytes(), checked[:REWRITE_CHECK_WINDOWS])
        quantize_static(
            str(prepared), str(quantized),
            _CalibrationReader(calibration_windows, _per_call(model_bytes, CALIBRATION_BATCH),
                               input_name(read_metadata(model_bytes)), on_progress),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=getattr(QuantType, ACTIVATION_TYPE),
            weight_type=QuantType.QInt8, reduce_range=REDUCE_RANGE, calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=list(INT8_OP_TYPES), nodes_to_exclude=float_nodes(model),
            extra_options={"OpTypesToExcludeOutputQuantization": list(FLOAT_OUTPUT_OP_TYPES)},
        )
        data = _with_precision(onnx.load(str(quantized)), "int8")
    agreement = compare(model_bytes, data, checked, on_progress=on_progress, stage="checking int8 against fp32")
    if not agreement.cosine_min >= INT8_MIN_COSINE:
        raise ParityError(f"int8 differs from fp32: embedding cosine {agreement.cosine_min:.5f} < "
                          f"{INT8_MIN_COSINE} ({agreement.describe()})")
    return data, agreement


def rewrite_for_int8(model: Any) -> Any:
    """``model`` (an onnx.ModelProto with static mel width, e.g. as quant_pre_process writes it; changed
    in place) with the fp32 rewrites of :mod:`mde.export.graph_rewrite` that make its int8 form faster:
    :func:`~mde.export.graph_rewrite.pool_before_post_relu_batchnorm` (musicnn's post-ReLU BatchNorms
    move after the max over mel) then :func:`~mde.export.graph_rewrite.transpose_column_convs`. The fp32
    outputs stay equal up to float rounding (checked by :func:`to_int8` and the tests)."""
    return transpose_column_convs(pool_before_post_relu_batchnorm(model))


def _check_rewrite(reference: bytes, rewritten: bytes, windows: np.ndarray) -> None:
    """ParityError when the rewritten fp32 graph's outputs differ from the source's beyond
    REWRITE_ATOL + REWRITE_RTOL * |output| on ``windows``."""
    names = list(read_metadata(reference).outputs)
    batch = _per_call(reference, COMPARE_BATCH)
    want = _run(reference, windows, names, batch)
    got = _run(rewritten, windows, names, batch)
    for name in names:
        if not np.allclose(got[name], want[name], atol=REWRITE_ATOL, rtol=REWRITE_RTOL):
            delta = float(np.abs(got[name] - want[name]).max())
            raise ParityError(f"the int8 graph rewrite changed fp32 output {name!r} (max |delta| {delta:.3e})")


def float_nodes(model: Any) -> list[str]:
    """Names of the nodes of ``model`` (an onnx.ModelProto) left in float32 because ONNX Runtime runs
    them slower in int8: Convs over a single input channel with a k x 1 kernel (k > 1; musicnn's temporal
    filters), and a MaxPool reading one of them.

    Measured on musicnn (one thread, AVX-512 VNNI): its three temporal convs (128, 64, 32 x 1) took 19.8 ms
    as QLinearConv against 4.8 ms as fp32 Conv (MLAS's NCHWc direct convolution); a k x 1 kernel over one
    channel gives an im2col of single bytes with no reuse. Keeping them float avoids a Q/DQ pair too.
    """
    from onnx import numpy_helper

    weights = {init.name: init for init in model.graph.initializer}
    names = []
    kept: set[str] = set()
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
            continue
        shape = tuple(numpy_helper.to_array(weights[node.input[1]]).shape)
        if len(shape) >= 4 and shape[1] == 1 and shape[-1] == 1 and max(shape[2:]) > 1:
            names.append(node.name)
            kept.add(node.output[0])
    names += [node.name for node in model.graph.node if node.op_type == "MaxPool" and node.input[0] in kept]
    return names


def compare(reference: bytes, candidate: bytes, windows: np.ndarray, batch: int = COMPARE_BATCH,
            on_progress: Progress = no_progress, stage: str = "checking") -> Agreement:
    """Agreement of ``candidate`` with ``reference`` (two serialized mde models of the same graph
    outputs) on float32 network inputs ``windows``, both run on ONNX Runtime's CPU provider,
    ``batch`` windows per call (fewer for long windows, as the runtime runs them).
    ``on_progress`` gets ``stage`` and the windows run so far out of 2 n (both models)."""
    info = read_metadata(reference)
    batch = _per_call(reference, batch)
    names = [info.embedding_output] + ([info.tags_output] if info.tags_output else [])
    total = 2 * len(windows)
    want = _run(reference, windows, names, batch, lambda done: on_progress(stage, done, total))
    got = _run(candidate, windows, names, batch, lambda done: on_progress(stage, len(windows) + done, total))
    a, b = want[info.embedding_output].astype(np.float64), got[info.embedding_output].astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)
    tags_delta = top5 = None
    if info.tags_output:
        tags_want, tags_got = want[info.tags_output], got[info.tags_output]
        tags_delta = float(np.abs(tags_got - tags_want).max())
        top5 = float(np.mean([set(x) == set(y) for x, y in zip(_top(tags_want), _top(tags_got))]))
    return Agreement(float(cosine.min()), float(cosine.mean()), tags_delta, top5, len(windows))


def _per_call(model: bytes, batch: int) -> int:
    """Windows of ``model`` (serialized, with mde metadata) per inference call: ``batch``, but no more than
    the runtime's MAX_CALL_SECONDS of audio (at least 1)."""
    return frames_per_call(frame_grid(read_metadata(model)), batch)


def _top(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, axis=1)[:, :TOP_K]


def _run(model: bytes, windows: np.ndarray, names: list[str], batch: int,
         on_windows: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Outputs ``names`` of ``model`` on ``windows``, ``batch`` at a time (``on_windows``: windows run so far)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name_in = session.get_inputs()[0].name
    parts = []
    for i in range(0, len(windows), batch):
        parts.append(session.run(names, {name_in: windows[i : i + batch]}))
        if on_windows:
            on_windows(min(i + batch, len(windows)))
    return {name: np.concatenate([part[k] for part in parts]) for k, name in enumerate(names)}


def _outputs_as_leaves(model: Any) -> Any:
    """``model`` (an onnx.ModelProto, changed in place) with every graph output that other nodes also
    read (FCN's 'embedding' feeds its classifier) produced by an Identity of an internal tensor.

    onnxconverter-common casts a kept-float32 output right where it is produced, so a node reading it
    would get float32 beside float16 weights; reading the internal tensor keeps the graph in float16.
    """
    from onnx import helper

    outputs = {output.name for output in model.graph.output}
    read = {name for node in model.graph.node for name in node.input}
    for name in outputs & read:
        internal = f"{name}__value"
        for node in model.graph.node:
            node.input[:] = [internal if value == name else value for value in node.input]
            node.output[:] = [internal if value == name else value for value in node.output]
        model.graph.node.append(helper.make_node("Identity", [internal], [name], name=f"{name}__output"))
    return model


def _with_precision(model: Any, precision: Precision) -> bytes:
    """Serialized ``model`` (an onnx.ModelProto) with its mde metadata's precision set."""
    info = ModelInfo.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    return with_metadata(model, dataclasses.replace(info, precision=precision))


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs notices on the root logger (e.g. one per BatchNormalization weight
    it does not quantize per channel); mde prints its own figures instead."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


class _CalibrationReader(CalibrationDataReader):
    """onnxruntime.quantization CalibrationDataReader over network inputs, ``batch`` at a time, fed to
    the graph input ``name``; ``on_progress`` gets CALIBRATING and the windows handed out before each new
    batch is asked for."""

    def __init__(self, windows: np.ndarray, batch: int, name: str, on_progress: Progress = no_progress) -> None:
        self._windows = windows
        self._batch = batch
        self._name = name
        self._next = 0
        self._on_progress = on_progress

    def get_next(self) -> dict[str, np.ndarray] | None:
        self._on_progress(CALIBRATING, self._next, len(self._windows))  # the previous batch has run
        if self._next >= len(self._windows):
            return None
        batch = np.ascontiguousarray(self._windows[self._next : self._next + self._batch], dtype=np.float32)
        self._next += len(batch)
        return {self._name: batch}
