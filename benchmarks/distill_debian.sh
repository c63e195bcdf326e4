#!/usr/bin/env bash
# The three shipped students, distilled from MTT_musicnn on the Debian game-soundtrack corpus, as they were
# made: build the corpus, run the three students at once (they share one teacher cache), export them, and
# tabulate their agreement with the teacher on the held-out packages. Writes benchmarks/results/distill/
# (each run's log.csv and metrics.json, agreement_cpu.md). About 100 minutes on 2 CPU cores; ~600 MB of
# downloads and ~15 h of audio under WORK_DIR (never commit it).
# Usage: benchmarks/distill_debian.sh [WORK_DIR]
set -euo pipefail
WORK=${1:-/tmp/mde-distill}
OUT=$(cd "$(dirname "$0")" && pwd)/results/distill
mkdir -p "$OUT" "$WORK"
[ -f "$WORK/corpus/manifest.csv" ] || mde corpus debian --out "$WORK/corpus"
M=$WORK/corpus/manifest.csv
C=$WORK/teacher
COMMON=(--teacher MTT_musicnn --data "$M" --cache "$C" --device cpu --memory-budget 4)
start=$(date +%s)
# the teacher's outputs first (one process: the three students then share the finished cache)
mde distill "${COMMON[@]}" --student fcn05 --out "$WORK/MTT_fcn05" --epochs 20 --batch-size 32 > /dev/null &
sleep 5
while [ "$(find "$C" -name '*.npz' -o -name '*.failed' 2>/dev/null | wc -l)" -lt "$(($(wc -l < "$M") - 1))" ]; do
    sleep 10
done
mde distill "${COMMON[@]}" --student shortchunk --out "$WORK/MTT_fcn037" --epochs 10 --crops-per-clip 16 \
    --eval-windows 16 --batch-size 16 > /dev/null &
mde distill "${COMMON[@]}" --student fcn --out "$WORK/MTT_fcn29" --epochs 10 --crops-per-clip 4 \
    --eval-windows 4 --batch-size 8 > /dev/null &
wait
echo "wall time of the three runs (teacher included): $(( $(date +%s) - start )) s" > "$OUT/agreement_cpu.md"
for run in MTT_fcn05 MTT_fcn037 MTT_fcn29; do
    mde export "$WORK/$run" -o "$WORK/$run.onnx"
    cp "$WORK/$run/log.csv" "$OUT/${run}_log.csv"
    cp "$WORK/$run/metrics.json" "$OUT/${run}_metrics.json"
done
for split in valid test; do
    echo -e "\n$split split (held-out packages):\n" >> "$OUT/agreement_cpu.md"
    mde eval "$WORK/MTT_fcn05" "$WORK/MTT_fcn037" "$WORK/MTT_fcn29" --split "$split" --markdown >> "$OUT/agreement_cpu.md"
done
cat "$OUT/agreement_cpu.md"
