"""Limits shared by the serving path, the streamer and the engine builder (one place per number)."""

DEFAULT_BATCH_SIZE = 8
"""Frames (windows) per inference call by default; TensorRT engines are tuned for this batch size."""

MAX_CALL_SECONDS = 30.0
"""The most audio (seconds of windows) per inference call. Larger batches of long windows only grow ONNX
Runtime's memory arena without running faster (MTT_musicnn on 29 s windows: 4.1 GB peak at batch 8,
0.5 GB at batch 1, same speed)."""
