#!/usr/bin/env bash
# Linear probes of every stored model on the two synthesized corpora (a 6-genre single-label one and the
# tagged one), the table issue 19 asks for: imports MTT/MSD musicnn and vgg (the musicnn package) and the
# first seed's FCN05 / FCN29 checkpoints (from SHARED_DATA, default ../shared/data) into a store under
# WORK_DIR, synthesizes both corpora (FluidSynth when installed) and probes every model on each, beside fcn05
# with random initial weights (a floor).
# The genre clips are short (3 s) and many (600); even so every model, random weights too, separates the six
# genres perfectly (each genre is its own set of General MIDI instruments), while the tag corpus ranks them. Writes benchmarks/results/probe/{genres,tags}_cpu.{md,json}. About 15 minutes on 2 CPU cores.
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
[ -d "$WORK/genres/genres" ] || mde synth --kind genres --out "$WORK/genres" --n 600 --seconds 3 --workers 2
[ -f "$WORK/tags/manifest.csv" ] || mde synth --out "$WORK/tags" --n 240 --seconds 10 --workers 2
# a floor to read the others against: fcn05 with its initial (random, He-normal) weights
if [ ! -f "$WORK/fcn05-random.onnx" ]; then
    mde train --model fcn05 --dataset manifest --data "$WORK/tags/manifest.csv" --out "$WORK/run-random" --epochs 1 \
        --device cpu > /dev/null 2>&1
    mde export "$WORK/run-random/checkpoints/initial.pt" -o "$WORK/fcn05-random.onnx" > /dev/null
fi
MODELS=(MTT_musicnn MSD_musicnn MTT_vgg MSD_vgg fcn05-mtat fcn29-mtat "$WORK/fcn05-random.onnx")
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
