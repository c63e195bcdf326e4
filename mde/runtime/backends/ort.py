"""ONNX Runtime backend: runs a model file's graph on batches of log-mel inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mde.errors import ModelError
from mde.runtime.package import ModelInfo, info_from_session


class OrtBackend:
    """One ONNX Runtime session over a model file.

    threads: intra-op threads for the CPU provider (None lets ONNX Runtime choose, usually all cores).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT's own exception types carry multi-line text
            raise ModelError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        self.info: ModelInfo = info_from_session(self.session, str(path))
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Named outputs for one input batch (float32, the model's input layout)."""
        unknown = [name for name in outputs if name not in self.output_names]
        if unknown:
            raise ModelError(f"{self.info.name}: no output {unknown[0]!r}; it has {self.output_names}")
        values = self.session.run(list(outputs), {self.input_name: batch})
        return dict(zip(outputs, values))
