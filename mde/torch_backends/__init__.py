"""Backends that need torch, loaded by :func:`mde.runtime.backends.factory.make_backend` only when asked for.

graph.py: an ONNX graph interpreter in torch; torch_runner.py: the torch backend (CPU, or CUDA with fp16 and
CUDA graphs); tensorrt_runner.py: TensorRT engines (device buffers through torch); cuda.py: the CUDA device.
Kept outside ``mde.runtime`` so that the default serving path never imports torch.
"""
