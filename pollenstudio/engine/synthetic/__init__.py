"""Synthetic brightfield pollen micrographs with exact boxes, for tests, demos and training.

The app and its tests must never download a dataset, so this module draws slides that look
like real brightfield photos: a warm, unevenly lit background with vignetting, translucent
yellow-to-brown grains of six morphotypes (:data:`TAXA`) with refractive exine rims and
granular interiors, debris, fibres, air bubbles and out-of-focus blobs that are not pollen,
per-grain defocus, camera noise and optional JPEG artefacts.

    from pollenstudio.engine.synthetic import TAXA, SynthConfig, generate_image, generate_dataset
    img, objects = generate_image(0, SynthConfig(width=640, height=480, difficulty="hard"))
    path = generate_dataset("out/", n=200, seed=0, cfg=SynthConfig())

To put a grain exactly where a test needs it (e.g. across a tile border) use
``SynthConfig(forced_grains=((cx, cy, taxon_index, diameter),), n_grains=(0, 0), clutter=0)``.
"""

from pollenstudio.engine.synthetic.config import DIFFICULTIES, TAXA, SynthConfig, SynthConfigError
from pollenstudio.engine.synthetic.dataset import generate_dataset, generate_image

__all__ = ["TAXA", "DIFFICULTIES", "SynthConfig", "SynthConfigError", "generate_image", "generate_dataset"]
