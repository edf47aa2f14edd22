#!/usr/bin/env bash
# Recipe of the shipped default model (models/hieraedgenet-n-synthetic.safetensors).
#
#   bash scripts/train_default_model.sh WORKDIR [THREADS]
#
# 1. 1,000 synthetic 640x480 micrographs at default difficulty (seed 7, six taxa),
#    imported as reviewed ground truth into a project (80 % train / 20 % validation,
#    split by content hash);
# 2. HieraEdgeNet-n from scratch: 30 epochs at 320 px input, batch 8, AdamW (the "auto"
#    choice for short runs), 4-image mosaic (off for the last 10 epochs), seed 0, on the CPU;
# 3. a held-out set of 200 images generated with a different seed (99) scored with
#    `pollenstudio eval` (pycocotools).
# About 1.5-2 hours on one core of a 2-core CPU (measured: see models/MODEL_CARD.md).
# Each step is the public CLI, so the recipe is also the documentation of how to train.
set -euo pipefail
W=${1:?usage: train_default_model.sh WORKDIR [THREADS]}
T=${2:-1}
export OMP_NUM_THREADS=$T
mkdir -p "$W"
[ -f "$W/train-data/annotations.json" ] || pollenstudio synth --out "$W/train-data" --n 1000 --seed 7 --quiet
[ -f "$W/project/project.pollen" ] || pollenstudio import "$W/project" "$W/train-data/annotations.json" --quiet
pollenstudio train "$W/project" --epochs 30 --imgsz 320 --batch 8 --device cpu --threads "$T" --seed 0 \
    --variant full --scale n --activate --name hieraedgenet-n-synthetic --json > "$W/train.json"
[ -f "$W/heldout/annotations.json" ] || pollenstudio synth --out "$W/heldout" --n 200 --seed 99 --quiet
WEIGHTS=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["weights"])' "$W/train.json")
pollenstudio eval "$W/heldout/annotations.json" --model "$WEIGHTS" --device cpu --json > "$W/heldout-eval.json"
echo "weights: $WEIGHTS"
cat "$W/heldout-eval.json"
