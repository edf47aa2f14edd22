"""The shipped default model: small, loads with the safe loader, and finds most grains on
synthetic micrographs it has never seen.

Training used the image seeds that ``pollenstudio synth --seed 7`` and ``--seed 99`` (the
held-out set) derive: 63-bit hashes of (seed, index). The seeds below are small integers
passed straight to ``generate_image``, so they are not among them.
"""

from __future__ import annotations

import numpy as np
import pytest

from pollenstudio.core.types import Box
from pollenstudio.engine.paths import models_dir, taxa_model_path

FRESH_SEEDS = (20261127, 31337, 4242)


@pytest.fixture(scope="module")
def shipped():
    path = taxa_model_path()
    assert path.parent == models_dir()
    return path


def test_shipped_model_is_small_and_loads_with_the_safe_loader(shipped):
    from pollenstudio.detector.checkpoint import load_checkpoint
    from pollenstudio.engine.synthetic import TAXA

    assert shipped.suffix == ".safetensors"
    assert shipped.stat().st_size < 15 * 1024 * 1024
    model, cfg, meta = load_checkpoint(shipped)
    assert list(cfg.class_names) == list(TAXA)
    assert cfg.edge and cfg.cspokm  # the full HieraEdgeNet, not an ablation variant
    assert sum(p.numel() for p in model.parameters()) > 1_000_000


def test_shipped_model_finds_most_grains_on_fresh_images(shipped):
    from pollenstudio.engine.predict import Predictor
    from pollenstudio.engine.synthetic import SynthConfig, generate_image

    pred = Predictor.from_checkpoint(shipped, device="cpu", conf=0.25)
    found = right_taxon = total = false_pos = 0
    for seed in FRESH_SEEDS:
        img, objects = generate_image(seed, SynthConfig())
        dets = pred.predict(np.ascontiguousarray(img))
        used: set[int] = set()
        for o in objects:
            total += 1
            best, j = 0.0, -1
            truth = Box(*o["bbox"])
            for k, d in enumerate(dets):
                if k not in used and (iou := truth.iou(d.box)) > best:
                    best, j = iou, k
            if best >= 0.5:
                used.add(j)
                found += 1
                right_taxon += dets[j].label == o["name"]
        false_pos += len(dets) - len(used)
    assert total >= 15
    assert found / total >= 0.8, f"found {found} of {total} grains"
    assert right_taxon / total >= 0.7, f"right taxon for {right_taxon} of {total} grains"
    assert false_pos <= 0.25 * total, f"{false_pos} detections match no grain ({total} grains)"
