"""Lay out an mde model as a Triton Inference Server model repository entry.

``<repo>/<model name>/config.pbtxt`` (a ModelConfig in protobuf text format) and
``<repo>/<model name>/1/model.onnx`` (platform onnxruntime_onnx) or ``1/model.plan`` (tensorrt_plan).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from mde.runtime.package import METADATA_KEY, read_model_info

MAX_QUEUE_DELAY_US = 2000  # how long Triton's dynamic batcher waits to fill a batch, in microseconds
_TRITON_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16"}


def write_triton_repository(model_path: Path, repo_dir: Path, *, max_batch: int = 32,
                            plan: Optional[Path] = None, gpu: bool = False) -> Path:
    """Write the model's Triton entry under ``repo_dir`` and return its folder.

    max_batch: Triton's max_batch_size (the preferred batch sizes are max_batch / 4, / 2 and itself).
    plan: a TensorRT engine built from ``model_path`` to serve instead of the ONNX file (runs on GPU).
    gpu: serve the ONNX file with KIND_GPU instances (default KIND_CPU; always GPU with a plan).
    """
    import onnxruntime as ort

    model_path = Path(model_path)
    info = read_model_info(model_path)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    folder = Path(repo_dir) / info.name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    if plan is not None:
        shutil.copyfile(plan, folder / "1" / "model.plan")
    else:
        shutil.copyfile(model_path, folder / "1" / "model.onnx")
    preferred = sorted({size for size in (max_batch // 4, max_batch // 2, max_batch) if size > 0})
    lines = [
        f'name: "{info.name}"',
        f'platform: "{"tensorrt_plan" if plan is not None else "onnxruntime_onnx"}"',
        f"max_batch_size: {max_batch}",
        *[_tensor_entry("input", t) for t in session.get_inputs()],
        *[_tensor_entry("output", t) for t in session.get_outputs()],
        "dynamic_batching {",
        *[f"  preferred_batch_size: {size}" for size in preferred],
        f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}",
        "}",
        f"instance_group [{{ count: 1 kind: {'KIND_GPU' if plan is not None or gpu else 'KIND_CPU'} }}]",
        f'parameters {{ key: "{METADATA_KEY}" value: {{ string_value: "{_quoted(info.to_json())}" }} }}',
    ]
    (folder / "config.pbtxt").write_text("\n".join(lines) + "\n")
    return folder


def _tensor_entry(field: str, tensor: object) -> str:
    """An input / output entry: name, data type and dims without the batch axis (-1 where variable)."""
    dims = [d if isinstance(d, int) else -1 for d in tensor.shape[1:]]  # type: ignore[attr-defined]
    kind = _TRITON_TYPES[tensor.type]  # type: ignore[attr-defined]
    return f'{field} [{{ name: "{tensor.name}" data_type: {kind} dims: {json.dumps(dims)} }}]'  # type: ignore[attr-defined]


def _quoted(text: str) -> str:
    """``text`` (ASCII, as json.dumps writes it) escaped for a protobuf text-format string."""
    return text.replace("\\", "\\\\").replace('"', '\\"')
