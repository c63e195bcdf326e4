#!/usr/bin/env bash
# The GPU checks on a CUDA machine, as benchmarks/results/gpu was made: the backend tests (torch backend fp16 +
# CUDA graphs against ONNX Runtime; TensorRT where installed), `mde bench models --device cuda` (model alone,
# batches 1 / 32 / 256) and `mde bench e2e --device cuda` (audio files to embeddings). Needs mde importable,
# torch with CUDA, and the shared test data ($MDE_TEST_DATA: checkpoints/ and audio/).
# Usage: benchmarks/gpu_checks.sh [OUT]      (default OUT: benchmarks/results/gpu)
set -euo pipefail
OUT=${1:-benchmarks/results/gpu}
DATA=${MDE_TEST_DATA:?set MDE_TEST_DATA to the shared test data folder}
mkdir -p "$OUT"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU that torch sees'"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/device.csv"
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'CUDA', torch.version.cuda, '| onnxruntime',
onnxruntime.__version__, onnxruntime.get_available_providers())" >> "$OUT/device.csv"
python3 -m pytest -q -p no:cacheprovider tests/test_backends.py 2>&1 | tee "$OUT/test_backends_cuda.txt" || true
for ckpt in "$DATA"/checkpoints/FCN05*.ckpt "$DATA"/checkpoints/FCN29*.ckpt; do
    python3 -m mde import seed "$ckpt" > /dev/null
done
python3 -m mde bench models --device cuda -m MTT_musicnn -m fcn05-mtat -m fcn29-mtat -o "$OUT"
python3 -m mde bench e2e --device cuda -m MTT_musicnn -m fcn29-mtat -o "$OUT" \
    --seed-checkpoint "$(ls "$DATA"/checkpoints/FCN29*.ckpt)"
