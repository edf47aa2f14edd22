#!/usr/bin/env bash
# Recipe of the shipped default model (models/hieraedgenet-n.safetensors).
#
#   bash scripts/train_default_model.sh WORKDIR [THREADS]
#
# 1. 1,000 synthetic 640x480 micrographs at default difficulty (seed 7, six taxa, 8,650
#    grains), imported as reviewed ground truth into a project (80 % train / 20 % validation,
#    split by content hash);
# 2. stage 1: HieraEdgeNet-n from scratch, 30 epochs at 320 px input, batch 8, AdamW (the
#    "auto" choice for short runs, lr 0.002, cosine), 4-image mosaic (off for the last 10
#    epochs), seed 0, on the CPU;
# 3. stage 2: 12 more epochs fine-tuning stage 1 on the same data (lr 0.0005, seed 1):
#    stage 1 was still improving when its learning rate had decayed;
# 4. stage 3: 10 epochs fine-tuning stage 2 at 640 px input, i.e. at the frames' native
#    pixel scale (lr 0.001, seed 2): at 320 px a 640x480 frame is halved and the one- or
#    two-pixel furrows and pores that tell Quercus from Poaceae are lost (most of the
#    stage-2 model's errors were that confusion);
# 5. stage 4: 7 more epochs at 640 px from stage 3 (lr 0.0005, seed 3): stage 3 was still
#    improving in its last epoch;
# 6. a held-out set of 200 images generated with a different seed (99), scored with
#    `pollenstudio eval` (pycocotools), and the weights copied to models/.
# Measured time: see models/MODEL_CARD.md (about 3.9 hours on a 2-core CPU).
# Each step is the public CLI, so the recipe is also the documentation of how to train.
# Steps already done (their output exists) are skipped, so an interrupted run can go on.
set -euo pipefail
W=${1:?usage: train_default_model.sh WORKDIR [THREADS]}
T=${2:-1}
export OMP_NUM_THREADS=$T
HERE=$(cd "$(dirname "$0")/.." && pwd)
json() { python -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
mkdir -p "$W"
[ -f "$W/train-data/annotations.json" ] || pollenstudio synth --out "$W/train-data" --n 1000 --seed 7 --quiet
[ -f "$W/project/project.pollen" ] || pollenstudio import "$W/project" "$W/train-data/annotations.json" --quiet
if [ ! -s "$W/train.json" ]; then
    pollenstudio train "$W/project" --base scratch --epochs 30 --imgsz 320 --batch 8 --device cpu --threads "$T" --seed 0 \
        --variant full --scale n --activate --name hieraedgenet-n-synthetic --json > "$W/train.json.part"
    mv "$W/train.json.part" "$W/train.json"
fi
# finetune OUT BASE EPOCHS IMGSZ LR0 SEED NAME: train from the version recorded in
# $W/BASE.json into $W/OUT.json (skipped when that exists)
finetune() {
    [ -s "$W/$1.json" ] && return 0
    pollenstudio train "$W/project" --base "$(json "$W/$2.json" version_id)" --epochs "$3" --imgsz "$4" \
        --batch 8 --lr0 "$5" --device cpu --threads "$T" --seed "$6" --activate --name "$7" --json > "$W/$1.json.part"
    mv "$W/$1.json.part" "$W/$1.json"
}
finetune finetune train 12 320 0.0005 1 hieraedgenet-n-synthetic-ft
finetune finetune640 finetune 10 640 0.001 2 hieraedgenet-n-synthetic-640
finetune finetune640b finetune640 7 640 0.0005 3 hieraedgenet-n-synthetic-640b
[ -f "$W/heldout/annotations.json" ] || pollenstudio synth --out "$W/heldout" --n 200 --seed 99 --quiet
WEIGHTS=$(json "$W/finetune640b.json" weights)
pollenstudio eval "$W/heldout/annotations.json" --model "$WEIGHTS" --device cpu --json > "$W/heldout-eval.json"
cp "$WEIGHTS" "$HERE/models/hieraedgenet-n.safetensors"
echo "weights: $WEIGHTS -> models/hieraedgenet-n.safetensors"
cat "$W/heldout-eval.json"
