#!/usr/bin/env bash
# Linear probes of every stored model on the two synthesized corpora (a 6-genre single-label one and the
# tagged one), the table issue 19 asks for: imports MTT/MSD musicnn and vgg (the musicnn package) and the
# first seed's FCN05 / FCN29 checkpoints (from SHARED_DATA, default ../shared/data) into a store under
# WORK_DIR, synthesizes both corpora (FluidSynth when installed) and probes every model on each.
# Writes benchmarks/results/probe/{genres,tags}_cpu.{md,json}. About 25 minutes on 2 CPU cores.
# Usage: benchmarks/probe_synth.sh [WORK_DIR] [SHARED_DATA]
set -euo pipefail
WORK=${1:-/tmp/mde-probe}
DATA=${2:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
OUT=$(cd "$(dirname "$0")" && pwd)/results/probe
mkdir -p "$OUT" "$WORK"
export MDE_HOME=$WORK/home
[ -f "$MDE_HOME/models/MSD_vgg.onnx" ] || mde import musicnn all > /dev/null
[ -f "$MDE_HOME/models/fcn05-mtat.onnx" ] || mde import seed "$DATA"/checkpoints/FCN05-*.ckpt --name fcn05-mtat > /dev/null
[ -f "$MDE_HOME/models/fcn29-mtat.onnx" ] || mde import seed "$DATA"/checkpoints/FCN29-*.ckpt --name fcn29-mtat > /dev/null
[ -d "$WORK/genres/genres" ] || mde synth --kind genres --out "$WORK/genres" --n 240 --seconds 10 --workers 2
[ -f "$WORK/tags/manifest.csv" ] || mde synth --out "$WORK/tags" --n 240 --seconds 10 --workers 2
MODELS=(MTT_musicnn MSD_musicnn MTT_vgg MSD_vgg fcn05-mtat fcn29-mtat)
for corpus in genres tags; do
    if [ "$corpus" = genres ]; then ARGS=(--dataset gtzan --data "$WORK/genres"); else
        ARGS=(--dataset manifest --data "$WORK/tags/manifest.csv"); fi
    start=$(date +%s)
    mde probe "${MODELS[@]}" "${ARGS[@]}" --cache "$WORK/cache" --out "$WORK/probe-$corpus" > /dev/null
    { echo "wall time (embedding every clip once per model, then the probes): $(( $(date +%s) - start )) s"; echo
      cat "$WORK/probe-$corpus/probe.md"; } > "$OUT/${corpus}_cpu.md"
    cp "$WORK/probe-$corpus/probe.json" "$OUT/${corpus}_cpu.json"
    cat "$OUT/${corpus}_cpu.md"
done
