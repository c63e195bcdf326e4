"""Inference backends, chosen by :func:`mde.runtime.backends.factory.make_backend`.

ort.py: ONNX Runtime (CPU, or CUDA through onnxruntime-gpu), the default, imports no torch.
torch_runner.py (with torch_graph.py, an ONNX graph interpreter in torch): the torch backend (CPU, or CUDA
with fp16 and CUDA graphs). tensorrt_runner.py: TensorRT engines (device buffers through torch), built by
tensorrt_engine.py. cuda.py: the CUDA device as torch sees it. torch, onnx and tensorrt are imported only
when a backend that needs them is made, so the default serving path never imports torch.
"""
