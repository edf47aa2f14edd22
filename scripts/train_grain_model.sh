#!/usr/bin/env bash
# Recipe of the taxon-agnostic grain model (models/pollen-grain-n.safetensors, one class "pollen").
#
#   bash scripts/train_grain_model.sh WORKDIR [DATA] [THREADS]
#
# DATA (default ../shared/data next to the checkout) holds the real imagery described in the
# model card: pollen73s/<taxon>/*.jpg single-grain crops, atlas/*.png crops, debris/*.jpg
# tiles of a real slide. Never committed to the repository (licences: see the card).
#
# 1. 900 composited 640x640 frames (seed 1, JPEG 92): real grains of the *training* taxa
#    (POLLEN73S split by taxon: 20 % of the taxa are held out for bench/real_grains.py) and
#    the atlas crops, cut out and pasted on grain-free generated mounts and real debris;
# 2. 250 generated 640x480 frames at "hard" difficulty (seed 2), every grain "pollen";
# 3. both imported as reviewed ground truth into one project;
# 4. stage 1: 7 epochs fine-tuning the six-taxon model (its backbone and box branch know
#    micrographs; the head shrinks to one class), 640 px input, batch 8, AdamW lr 0.001,
#    cosine, 15 % of the frames for validation, seed 0, CPU;
# 5. the grain sizes the model saw are recorded in the checkpoint and the head keeps "pollen"
#    only (stage 1 ran before training did both itself; see the card). Stage 1 was stopped
#    after 6 of its 7 epochs (session time); its best checkpoint is what this step reads;
# 6. stage 2: 3 epochs from stage 1, lr 0.0003, seed 1: the shipped weights.
# Each step is skipped when its output exists, so an interrupted run goes on.
set -euo pipefail
W=${1:?usage: train_grain_model.sh WORKDIR [DATA] [THREADS]}
HERE=$(cd "$(dirname "$0")/.." && pwd)
DATA=${2:-$HERE/../shared/data}
T=${3:-2}
export OMP_NUM_THREADS=$T
json() { python -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
[ -d "$DATA/pollen73s" ] || { echo "no real imagery in $DATA (needs pollen73s/, atlas/, debris/)"; exit 1; }
mkdir -p "$W"
[ -f "$W/comp/annotations.json" ] || pollenstudio synth --out "$W/comp" --n 900 --seed 1 --size 640x640 --jpeg 92 \
    --grains "$DATA/pollen73s" --grains "$DATA/atlas" --debris "$DATA/debris" --class-agnostic \
    --split train --split-by taxon --quiet
[ -f "$W/gen/annotations.json" ] || pollenstudio synth --out "$W/gen" --n 250 --seed 2 --size 640x480 \
    --difficulty hard --class-agnostic --quiet
if [ ! -f "$W/proj/project.pollen" ]; then
    pollenstudio import "$W/proj" "$W/comp/annotations.json" --quiet
    pollenstudio import "$W/proj" "$W/gen/annotations.json" --quiet
fi
if [ ! -s "$W/stage1.json" ]; then
    pollenstudio train "$W/proj" --base "$HERE/models/hieraedgenet-n.safetensors" --epochs 7 --imgsz 640 --batch 8 \
        --lr0 0.001 --device cpu --threads "$T" --seed 0 --val-fraction 0.15 --name pollen-grain-n-stage1 \
        --no-compare --json > "$W/stage1.json.part"
    mv "$W/stage1.json.part" "$W/stage1.json"
fi
[ -f "$W/stage1-grain.safetensors" ] || python "$HERE/scripts/record_grain_sizes.py" "$W/proj" \
    "$(json "$W/stage1.json" weights)" "$W/stage1-grain.safetensors" --only-class pollen
if [ ! -s "$W/stage2.json" ]; then
    pollenstudio train "$W/proj" --base "$W/stage1-grain.safetensors" --epochs 3 --imgsz 640 --batch 8 \
        --lr0 0.0003 --device cpu --threads "$T" --seed 1 --val-fraction 0.15 --name pollen-grain-n-stage2 \
        --no-compare --json > "$W/stage2.json.part"
    mv "$W/stage2.json.part" "$W/stage2.json"
fi
cp "$(json "$W/stage2.json" weights)" "$HERE/models/pollen-grain-n.safetensors"
