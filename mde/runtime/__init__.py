"""The serving path: audio windows -> C log-mel front end -> ONNX Runtime. Imports no torch."""
