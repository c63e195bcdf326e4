"""Choose an inference backend by name and device. The torch and TensorRT backends are imported only here,
lazily, so torch, onnx and tensorrt load only when one of them is asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from mde.runtime.backends.common import Backend, check_choice


def check_backend(backend: str = "ort", device: str = "cpu") -> None:
    """Fail early, with one line, when ``backend`` on ``device`` cannot run here (no model is loaded)."""
    check_choice(backend, device)
    if backend == "ort":
        from mde.runtime.backends.ort import providers_for

        providers_for(device)
        return
    from mde.runtime.backends.cuda import import_torch, require_cuda

    if backend == "tensorrt":
        from mde.runtime.backends.tensorrt_engine import import_tensorrt

        import_tensorrt("The tensorrt backend")
    purpose = f"The {backend} backend"
    if device == "cuda":
        require_cuda(purpose)
    else:
        import_torch(purpose)


def make_backend(path: str | Path, backend: str = "ort", device: str = "cpu",
                 threads: Optional[int] = None) -> Backend:
    """An object with ``info``, ``output_names`` and ``run(batch, outputs)`` over the model file ``path``.

    backend: 'ort' (ONNX Runtime; CUDA through onnxruntime-gpu), 'tensorrt' (a TensorRT engine, CUDA
      only; built beside the model on first use) or 'torch' (the ONNX graph run by torch; fp16 and CUDA
      graphs on CUDA).
    device: 'cpu' or 'cuda'.
    threads: CPU threads for ONNX Runtime or torch (None: the library's default).
    """
    check_choice(backend, device)
    if backend == "ort":
        from mde.runtime.backends.ort import OrtBackend

        return OrtBackend(path, threads=threads, device=device)
    if backend == "torch":
        from mde.runtime.backends.torch_runner import TorchBackend

        return TorchBackend(path, device=device, threads=threads)
    from mde.runtime.backends.tensorrt_runner import TensorrtBackend

    return TensorrtBackend(path)
