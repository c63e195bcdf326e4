"""TensorRT backend: runs an engine (see :mod:`mde.runtime.backends.tensorrt_engine`) on CUDA.

Device buffers and the CUDA stream are torch CUDA tensors / streams (torch is already what mde's GPU paths
use; no cuda-python needed). tensorrt and torch are imported lazily, when the backend is made.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mde.errors import ModelError
from mde.runtime.backends.common import check_outputs
from mde.runtime.backends.cuda import gpu_slug, require_cuda
from mde.runtime.backends.tensorrt_engine import build_engine, engine_path, import_tensorrt, read_sidecar
from mde.runtime.package import ModelInfo


class TensorrtBackend:
    """One deserialized engine and one execution context on the current CUDA device.

    path: an engine (.plan with its sidecar), or an .onnx model whose engine for this GPU and TensorRT
      version is built on first use (and reused afterwards).
    """

    def __init__(self, path: str | Path) -> None:
        purpose = "The tensorrt backend"
        trt = import_tensorrt(purpose)
        torch = require_cuda(purpose)
        path = Path(path)
        if path.suffix == ".onnx":
            plan = engine_path(path, gpu_slug(torch), trt.__version__)
            if not plan.is_file():
                plan = build_engine(path)
            path = plan
        sidecar = read_sidecar(path)
        self.info: ModelInfo = ModelInfo.from_json(json.dumps(sidecar["mde"]), str(path))
        self.max_batch = int(sidecar["max_batch"])
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelError(f"{path}: TensorRT could not deserialize the engine (built for another GPU or version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n not in inputs]
        self.torch = torch
        self.trt = trt
        self.stream = torch.cuda.Stream()

    def run(self, batch: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Named outputs for one input batch, run in chunks of at most the engine's max batch."""
        check_outputs(self.info, self.output_names, outputs)
        parts = [self._run_chunk(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        return {name: np.concatenate([part[name] for part in parts]) for name in outputs}

    def _run_chunk(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self.torch
        dtype = self._torch_dtype(self.input_name)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to("cuda").to(dtype)
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        results = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            results[name] = torch.empty(shape, dtype=self._torch_dtype(name), device="cuda")
            self.context.set_tensor_address(name, results[name].data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream())  # x's upload is on the current stream
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise ModelError(f"{self.info.name}: TensorRT execution failed")
        self.stream.synchronize()
        return {name: value.float().cpu().numpy() for name, value in results.items()}

    def _torch_dtype(self, name: str) -> Any:
        kind = self.engine.get_tensor_dtype(name)
        return self.torch.float16 if kind == self.trt.DataType.HALF else self.torch.float32
