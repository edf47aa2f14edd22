"""Projects with synthetic images and fake model proposals, for GUI tests, the UI stall
benchmark and screenshots, before any model exists. No Qt.

Proposals are the generator's ground-truth boxes jittered by a few pixels with random
scores and top-2 probabilities, written through ``Project.write_proposals`` like a model
run would, so the review queue, thresholds and statuses behave as they will in use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pollenstudio.core.types import Box, Detection


def fake_detections(objects, taxa, rng: np.random.Generator, jitter: float = 3.0) -> list[Detection]:
    dets = []
    for o in objects:
        x1, y1, x2, y2 = o["bbox"]
        j = rng.uniform(-jitter, jitter, 4)
        box = Box(x1 + j[0], y1 + j[1], x2 + j[2], y2 + j[3]).normalized()
        score = float(np.round(rng.uniform(0.3, 0.99), 3))
        label = o["name"]
        # sometimes the model's best guess is the wrong taxon, as in real review
        if rng.random() < 0.2:
            label = taxa[int(rng.integers(len(taxa)))]
        other = next(t for t in taxa if t != label)
        second = float(np.round(rng.uniform(0.0, 1.0 - score), 3))
        dets.append(Detection(box, taxa.index(label), label, score, topk=((label, score), (other, second))))
    return dets


def make_review_project(folder, n_images: int = 3, seed: int = 0, width: int = 320, height: int = 240,
                        n_grains: tuple[int, int] = (3, 5)):
    """Write ``n_images`` synthetic PNGs into ``folder``, create a project there, add them
    and write fake proposals for each. Returns the open Project."""
    import cv2

    from pollenstudio.engine.synthetic import TAXA, SynthConfig, generate_image
    from pollenstudio.project import Project

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cfg = SynthConfig(width=width, height=height, n_grains=n_grains, difficulty="easy")
    objects_per_file = []
    for i in range(n_images):
        img, objects = generate_image(seed * 1000 + i, cfg)
        path = folder / "images" / f"slide{i + 1:02d}.png"
        cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1]))
        objects_per_file.append((path, objects))
    proj = Project.create(folder)
    proj.ensure_categories(TAXA)
    proj.add_images([p for p, _ in objects_per_file])
    for rec in proj.images():
        objs = next(o for p, o in objects_per_file if p.name == Path(rec.path).name)
        proj.write_proposals(rec.id, fake_detections(objs, list(TAXA), rng))
    return proj
