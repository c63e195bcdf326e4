"""TensorRT engine files: where they live, their sidecar, and building one from an mde model file.

An engine is specific to one GPU model and one TensorRT version, so it lives beside its ONNX model as
``<model>.<gpu-slug>.trt<version>.plan`` with a JSON sidecar (``.plan.json``) holding the mde metadata and
the build settings, so engines for several GPUs / TensorRT versions coexist. Built with the TensorRT 10
Python API on a CUDA GPU; run by :mod:`mde.runtime.backends.tensorrt_runner`. tensorrt and torch are
imported lazily (only when an engine is built or run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from mde.atomic import write_bytes_atomic
from mde.errors import MdeError, MissingExtraError, ModelError
from mde.runtime.backends.cuda import gpu_slug, require_cuda
from mde.runtime.limits import DEFAULT_BATCH_SIZE
from mde.runtime.package import ModelInfo, read_model_info

SIDECAR_SUFFIX = ".json"
MIN_FRAMES_DIVISOR = 4  # variable-length models: the profile spans patch_frames (or window_samples) / 4 ...
MAX_FRAMES_FACTOR = 4  # ... to 4 x that (0.75 s to 12 s for musicnn's 3 s patches)


def import_tensorrt(purpose: str) -> Any:
    """The tensorrt module, or MissingExtraError naming the 'gpu' extra."""
    try:
        import tensorrt
    except ImportError:
        raise MissingExtraError("tensorrt", "gpu", purpose) from None
    return tensorrt


def engine_path(onnx_path: Path, gpu: str, trt_version: str) -> Path:
    """Where the engine of ``onnx_path`` for GPU slug ``gpu`` and TensorRT ``trt_version`` is stored."""
    return onnx_path.with_name(f"{onnx_path.stem}.{gpu}.trt{trt_version}.plan")


def sidecar_path(plan: Path) -> Path:
    """The JSON sidecar beside the engine ``plan``."""
    return plan.with_name(plan.name + SIDECAR_SUFFIX)


def read_sidecar(plan: Path) -> dict[str, Any]:
    """The sidecar of an engine: {'gpu', 'tensorrt', 'max_batch', 'fp16', 'profile', 'mde': metadata}."""
    path = sidecar_path(plan)
    if not path.is_file():
        raise ModelError(f"{plan}: no metadata sidecar {path.name} (build engines with mde)")
    sidecar: dict[str, Any] = json.loads(path.read_text())
    return sidecar


def build_engine(onnx_path: Path, *, max_batch: int = 32, workspace_gb: float = 4.0, fp16: bool = True,
                 timing_cache: Optional[Path] = None) -> Path:
    """Build (or rebuild) the engine of ``onnx_path`` for the current GPU and return the .plan path.

    max_batch: the largest batch the engine accepts (the profile spans 1..max_batch, tuned for the
      runtime's default batch size).
    workspace_gb: TensorRT's workspace memory pool limit in GiB.
    fp16: let TensorRT use float16 kernels. An fp16 ONNX file is built as a STRONGLY_TYPED network (its
      own types decide) when this TensorRT offers that; otherwise the FP16 builder flag is set.
    timing_cache: the kernel timing cache file, read before and written after the build (default:
      ``<model dir>/<gpu-slug>.trt<version>.timing-cache``, shared by every model built there).
    """
    purpose = "Building a TensorRT engine"
    trt = import_tensorrt(purpose)
    torch = require_cuda(purpose)
    onnx_path = Path(onnx_path)
    info = read_model_info(onnx_path)
    gpu, version = gpu_slug(torch), trt.__version__
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = _has_fp16_weights(onnx_path) and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = parser.get_error(0).desc() if parser.num_errors else "unknown error"
        raise MdeError(f"{onnx_path}: TensorRT cannot parse the model ({first})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2**30))
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    profile_shapes = _profile_shapes(network.get_input(0), info, max_batch)
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, *profile_shapes)
    config.add_optimization_profile(profile)
    cache_path = timing_cache or onnx_path.with_name(f"{gpu}.trt{version}.timing-cache")
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise MdeError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    plan = engine_path(onnx_path, gpu, version)
    write_bytes_atomic(plan, bytes(serialized))
    sidecar = {
        "gpu": torch.cuda.get_device_name(), "gpu_slug": gpu, "tensorrt": version, "max_batch": max_batch,
        "fp16": fp16, "strongly_typed": strongly_typed, "source": onnx_path.name,
        "profile": {"min": profile_shapes[0], "opt": profile_shapes[1], "max": profile_shapes[2]},
        "mde": json.loads(info.to_json()),
    }
    write_bytes_atomic(sidecar_path(plan), json.dumps(sidecar, indent=1).encode())
    return plan


def _profile_shapes(tensor: Any, info: ModelInfo, max_batch: int) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) input shapes: batch 1..max_batch; the last axis (frames, or a waveform model's
    samples) fixed, or around the patch length / window."""
    *middle, length = tuple(tensor.shape)[1:]
    opt_batch = min(DEFAULT_BATCH_SIZE, max_batch)
    if length != -1:
        return (1, *middle, length), (opt_batch, *middle, length), (max_batch, *middle, length)
    typical = info.window_samples if info.input_kind == "waveform" else info.patch_frames
    if typical is None:
        raise MdeError(f"{info.name}: a variable frame axis needs patch_frames in the metadata")
    return ((1, *middle, max(1, typical // MIN_FRAMES_DIVISOR)), (opt_batch, *middle, typical),
            (max_batch, *middle, typical * MAX_FRAMES_FACTOR))


def _has_fp16_weights(onnx_path: Path) -> bool:
    """Whether the model holds float16 initializers (an fp16 export)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
