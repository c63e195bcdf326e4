"""torch backend: a model file's ONNX graph run by torch, for GPUs without onnxruntime-gpu (and the CPU).

The graph is interpreted op by op (:mod:`mde.runtime.backends.torch_graph`), so the network and weights are
exactly the file's. On CUDA it runs under fp16 autocast and replays one captured CUDA graph per input
shape (batch size, frames), which removes the per-op launch overhead of small batches. torch and onnx are
imported only when this module is (the factory imports it lazily).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mde.errors import MissingExtraError, ModelError
from mde.runtime.backends.common import check_outputs
from mde.runtime.backends.cuda import import_torch, require_cuda
from mde.runtime.package import ModelInfo, info_from_metadata

MAX_CUDA_GRAPHS = 16  # input shapes captured per backend; further shapes run eagerly
WARMUP_RUNS = 3  # eager runs on a side stream before a capture (cuDNN / cuBLAS choose their kernels)


class TorchBackend:
    """A model file run by torch on 'cpu' or 'cuda'.

    threads: torch intra-op threads on the CPU (None: torch's default).
    fp16: autocast to float16 on CUDA (ignored on the CPU; outputs are always float32).
    cuda_graphs: capture and replay a CUDA graph per input shape on CUDA.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 fp16: bool = True, cuda_graphs: bool = True) -> None:
        purpose = "The torch backend"
        torch = require_cuda(purpose) if device == "cuda" else import_torch(purpose)
        try:
            import onnx
        except ImportError:
            raise MissingExtraError("onnx", "export", purpose) from None
        from mde.runtime.backends.torch_graph import OnnxGraphModule

        self.path = Path(path)
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # onnx raises DecodeError and friends
            raise ModelError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        self.info: ModelInfo = info_from_metadata({p.key: p.value for p in model.metadata_props}, str(path))
        self.module = OnnxGraphModule(model).to(device).eval()
        self.output_names = list(self.module.output_names)
        if threads is not None and device == "cpu":
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device)
        self.fp16 = fp16 and device == "cuda"
        self.cuda_graphs = cuda_graphs and device == "cuda"
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, dict[str, Any]]] = {}

    def run(self, batch: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Named outputs for one input batch (float32, the model's input layout)."""
        check_outputs(self.info, self.output_names, outputs)
        x = self.torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self.cuda_graphs and (x.shape in self._graphs or len(self._graphs) < MAX_CUDA_GRAPHS):
            values = self._replay(x)
        else:
            with self.torch.inference_mode():
                values = self._forward(x)
        return {name: values[name].float().cpu().numpy() for name in outputs}

    def _forward(self, x: Any) -> dict[str, Any]:
        with self.torch.autocast(self.device.type, dtype=self.torch.float16, enabled=self.fp16):
            outputs: dict[str, Any] = self.module(x)
        return outputs

    def _replay(self, x: Any) -> dict[str, Any]:
        """Copy ``x`` into the captured graph's input for its shape (capturing it first) and replay it."""
        key = tuple(x.shape)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        graph, static_input, static_outputs = self._graphs[key]
        static_input.copy_(x)
        graph.replay()
        return static_outputs

    def _capture(self, x: Any) -> tuple[Any, Any, dict[str, Any]]:
        torch = self.torch
        static_input = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self._forward(static_input)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_outputs = self._forward(static_input)
        return graph, static_input, static_outputs
