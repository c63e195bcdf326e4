#!/usr/bin/env bash
# Schindler et al.'s family on a synthesized corpus: train on the tag-set space, then the retrieval table of
# the run beside MTT_musicnn, both judged in one `mde eval --retrieval` run. Writes
# benchmarks/results/schindler/synth400_<loss>_cpu.{md,json} (and the run's log and metrics beside them).
# Usage: benchmarks/schindler_synth.sh [WORK_DIR] [LOSS]   (about 15 minutes on 2 CPU cores per loss)
set -euo pipefail
WORK=${1:-/tmp/mde-schindler}
LOSS=${2:-cosine}
OUT=$(cd "$(dirname "$0")" && pwd)/results/schindler
mkdir -p "$OUT"
[ -f "$WORK/corpus/manifest.csv" ] || mde synth --out "$WORK/corpus" --n 400 --seconds 10 --sample-rate 22050 --workers 2
start=$(date +%s)
mde train --model schindler --targets tags --loss "$LOSS" --dataset manifest --data "$WORK/corpus/manifest.csv" \
    --out "$WORK/run-$LOSS" --epochs 40 --batch-size 16 --lr 3e-4 --crops-per-clip 4 --device cpu > /dev/null
echo "training wall time: $(( $(date +%s) - start )) s" > "$OUT/synth400_${LOSS}_cpu.md"
mde eval "$WORK/run-$LOSS" --dataset manifest --data "$WORK/corpus/manifest.csv" --retrieval --baseline MTT_musicnn \
    --markdown --out "$OUT/synth400_${LOSS}_cpu.json" >> "$OUT/synth400_${LOSS}_cpu.md"
cp "$WORK/run-$LOSS/log.csv" "$OUT/synth400_${LOSS}_log.csv"
cp "$WORK/run-$LOSS/metrics.json" "$OUT/synth400_${LOSS}_metrics.json"
cat "$OUT/synth400_${LOSS}_cpu.md"
