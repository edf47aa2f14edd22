"""The automatic training recipe ("Auto"): what to train, and how, from what a lab has reviewed.

A pure function of (reviewed images, reviewed grains per taxon, device, frame size): the same
inputs always give the same recipe, so a unit test can pin it as a table and the dashboard can
say what it chose before Start. Every choice can be overridden (CLI flags, dashboard fields).

What the rules rest on (bench/learning_curve.py, bench/results/learning_curve.txt):

* with tens of reviewed images, fine-tuning the detector's taxon head learns almost nothing
  (mAP@.5 ~0.03 at 20 fields before, and the fine-tune rows of the curve), while the split
  design (grain model finds grains, a few-shot crop classifier names them) learns in seconds:
  so few reviewed grains per taxon -> ``stage = "classifier"`` (the detector is kept as is);
* the detector is retrained only once a lab has enough images for it to gain on its own
  slides (``DETECTOR_MIN_IMAGES``; fewer on a GPU where it costs minutes, not hours; the
  curve was measured up to 40 fields, so these thresholds are an extrapolation): then
  ``stage = "both"``: the detector is fine-tuned as a grain finder (every grain one class),
  and the classifier names its grains;
* a project whose grains carry no taxon, or a run without a base detector (from scratch),
  trains the detector alone (``stage = "detector"``);
* detector settings: while images are few, train the head only (at 20 reviewed fields, 320
  px, 15 epochs: head only mAP@.5 0.278, frozen backbone 0.191, every layer 0.080), the
  neck too from 100 images, the full network from 300; epochs so a run is a few thousand image passes and fits the time
  budget of the device; the frame's own size (up to 640 px) when that fits the budget, else
  320 px for frames up to 640 px (4x cheaper); mosaic augmentation only from 20 images on (a
  mosaic of three copies of few images teaches layout, not grains).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from pollenstudio.core.types import is_unassigned_taxon

STAGES = ("classifier", "both", "detector")
DETECTOR_MIN_IMAGES = {"cpu": 150, "mps": 80, "cuda": 40}
FEW_GRAINS = 10  # a taxon with fewer reviewed grains is named poorly: the recipe says so
BUDGET_S = {"cpu": 600.0, "mps": 900.0, "cuda": 1800.0}  # detector training time the recipe aims under
# seconds per training image per epoch at 640 px (training + validation share), measured on
# this project's CPU (2 shared cores: 3 min for 16 images x 15 epochs) and scaled for the others
SEC_PER_IMAGE_EPOCH_640 = {"cpu": 0.75, "mps": 0.12, "cuda": 0.02}
# What a run costs besides detector epochs, modelled on what it does (bench/classifier_stage_time.py,
# CPU seconds on this project's CPU with one thread, i.e. the wall time of one free core; issue 28:
# "about 3 s" was shown for a run that took 14 s, as the old model left out starting up, the
# held-out images' detection (per 640 px pass: a slide-sized frame is many tiles) and naming of
# every candidate box, and the comparison with the model in use that follows every run):
START_S = {"cpu": 2.5, "mps": 2.5, "cuda": 3.0}  # importing torch, reading the project, loading the base
CLASSIFIER_FIT_S = 1.0  # fitting the classifier twice (held-out split, then every grain) and its first import
SEC_PER_MPX_READ = {"cpu": 0.01, "mps": 0.01, "cuda": 0.01}  # decoding a reviewed image, per megapixel
SEC_PER_GRAIN_EMBED = {"cpu": 0.0075, "mps": 0.004, "cuda": 0.002}  # a reviewed grain's crop: detector features + hand
SEC_PER_TILE_DETECT = {"cpu": 0.12, "mps": 0.04, "cuda": 0.015}  # one 640 px detector pass (unfused training form)
SEC_PER_CANDIDATE_NAME = {"cpu": 0.009, "mps": 0.004, "cuda": 0.002}  # naming one candidate box (its embedding)
# candidate boxes a held-out image gives down to conf 0.001 (measured 34-45 on a 640 px frame,
# 97 on 6 tiles, 403 on 24): the classifier names each one
CANDIDATES_FIRST_TILE, CANDIDATES_PER_TILE = 30, 15
TILE_OVERLAP = 0.25  # engine.predict.DEFAULT_OVERLAP (not imported: that module loads torch)


def _device_kind(device: str) -> str:
    d = str(device).lower()
    return "cuda" if d.startswith("cuda") else "mps" if d.startswith("mps") else "cpu"


@dataclass(frozen=True)
class Recipe:
    stage: str  # classifier | both | detector
    epochs: int  # detector epochs (0 when the detector is not trained)
    imgsz: int
    freeze: str  # none | backbone | neck
    lr0: float
    mosaic: float
    expected_seconds: float
    reasons: tuple[str, ...] = field(default_factory=tuple)
    thin_taxa: tuple[str, ...] = ()  # taxa with fewer than FEW_GRAINS reviewed grains

    @property
    def trains_detector(self) -> bool:
        return self.stage in ("both", "detector")

    def train_config(self, **overrides):
        """A TrainConfig with these choices (``overrides`` win: explicit flags, dashboard edits)."""
        from pollenstudio.engine.augment import AugmentConfig
        from pollenstudio.engine.train import TrainConfig

        aug = AugmentConfig()
        aug.mosaic = self.mosaic
        kw = dict(epochs=max(1, self.epochs), imgsz=self.imgsz, freeze=self.freeze, lr0=self.lr0, augment=aug)
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig(**kw)

    def describe(self) -> str:
        what = {"classifier": "names grains with a taxon classifier on the detector's crops (the detector is kept)",
                "both": "fine-tunes the detector to find this project's grains, then names them with a taxon classifier",
                "detector": "trains the detector"}[self.stage]
        parts = [f"Auto: {what}"]
        if self.trains_detector:
            parts.append(f"{self.epochs} epochs at {self.imgsz} px, "
                         f"{ {'none': 'all layers', 'backbone': 'backbone frozen', 'neck': 'head only'}[self.freeze] }, "
                         f"lr {self.lr0:g}, mosaic {'on' if self.mosaic else 'off'}")
        parts.append(f"about {format_duration(self.expected_seconds)}")
        text = "; ".join(parts) + "."
        if self.thin_taxa:
            text += f" Few reviewed grains (< {FEW_GRAINS}) of {', '.join(self.thin_taxa)}: more would help."
        return text


def format_duration(seconds: float) -> str:
    s = max(1, int(round(seconds)))
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{round(s / 60)} min"
    return f"{s / 3600:.1f} h"


def detector_passes(frame: tuple[int, int], imgsz: int = 640) -> int:
    """640 px detector passes over one frame of ``frame`` = (width, height) px, as detection
    runs it (``tiling.resolve_tile_size("auto")``: tiled at native resolution above twice the
    model input, else one letterboxed pass)."""
    from pollenstudio.engine.tiling import plan_tiles, resolve_tile_size

    w, h = max(1, int(frame[0])), max(1, int(frame[1]))
    tile = resolve_tile_size("auto", w, h, imgsz)
    return len(plan_tiles(w, h, tile, int(round(tile * TILE_OVERLAP)))) if tile else 1


def auto_recipe(images: int, grains: Mapping[str, int], device: str = "cpu", frame: tuple[int, int] = (640, 640),
                has_detector: bool = True, val_images: int | None = None) -> Recipe:
    """The recipe for a project with ``images`` reviewed images and ``grains`` reviewed grains
    per taxon (unnamed grains under "pollen"/"unidentified" count as grains, not taxa), trained
    on ``device`` ("cpu", "cuda[:N]", "mps"), whose frames are ``frame`` = (width, height) px.
    ``has_detector``: a base detector exists (without one the detector must be trained).
    ``val_images``: images the split holds out (None: a fifth of them); the expected time
    counts scoring them, and the comparison with the model in use on them."""
    dev = _device_kind(device)
    images = max(0, int(images))
    named = {t: int(n) for t, n in grains.items() if not is_unassigned_taxon(t) and int(n) > 0}
    total = sum(max(0, int(n)) for n in grains.values())
    reasons = []
    if not named:
        stage = "detector"
        reasons.append("no reviewed grain carries a taxon: only the detector can learn")
    elif not has_detector:
        stage = "detector"
        reasons.append("no base detector: the detector learns grains and taxa from scratch (start from the grain "
                       "model to name taxa from few grains)")
    elif images >= DETECTOR_MIN_IMAGES[dev]:
        stage = "both"
        reasons.append(f"{images} reviewed images (>= {DETECTOR_MIN_IMAGES[dev]} on {dev}): the detector can gain on these slides")
    else:
        stage = "classifier"
        reasons.append(f"{images} reviewed images (< {DETECTOR_MIN_IMAGES[dev]} on {dev}): a crop classifier learns taxa "
                       "from few grains; the detector is kept")
    long_side = max(int(frame[0]), int(frame[1]), 32)
    native = min(640, int(math.ceil(min(long_side, 640) / 32.0) * 32))
    imgsz = native
    freeze = "none" if not has_detector or images >= 300 else ("neck" if images < 100 else "backbone")
    mosaic = 1.0 if images >= 20 else 0.0
    lr0 = 0.001 if has_detector else 0.002
    epochs = 0
    seconds = START_S[dev]
    n_val = max(0, int(val_images)) if val_images is not None else (round(0.2 * images) if images >= 2 else 0)
    passes = detector_passes(frame)
    candidates = CANDIDATES_FIRST_TILE + CANDIDATES_PER_TILE * (passes - 1)
    mpx = max(1, int(frame[0])) * max(1, int(frame[1])) / 1e6
    if stage != "detector":  # embedding the reviewed grains once, then fitting the classifier
        seconds += CLASSIFIER_FIT_S + SEC_PER_MPX_READ[dev] * mpx * images + SEC_PER_GRAIN_EMBED[dev] * sum(named.values())
    if stage == "classifier":  # scoring it: detecting on the held-out images and naming every candidate
        seconds += n_val * (passes * SEC_PER_TILE_DETECT[dev] + candidates * SEC_PER_CANDIDATE_NAME[dev])
    # the comparison after the run: the model in use detects on the same images, and (a grain
    # model in use, finding only) the new version detects and names again
    seconds += n_val * (2 * passes * SEC_PER_TILE_DETECT[dev] + candidates * SEC_PER_CANDIDATE_NAME[dev])
    if stage in ("both", "detector"):
        n_train = max(1, round(images * 0.8))
        epochs = int(min(100, max(10, round(3000 / max(1, n_train)))))
        # the frame's own size when the run fits the budget (at 20 fields, all layers: 640 px
        # 0.106 mAP@.5 in 205 s, 320 px 0.080 in 116 s); else 320 px for frames of at most
        # 640 px (larger frames shrunk to 320 would lose their small grains)
        sizes = [native] + ([320] if native > 320 and long_side <= 640 else [])
        for imgsz in sizes:
            per_epoch = SEC_PER_IMAGE_EPOCH_640[dev] * (imgsz / 640.0) ** 2 * n_train
            per_epoch *= {"neck": 0.4, "backbone": 0.55, "none": 1.0}[freeze]  # measured: 45 / 61 / 116 s
            fit = int(BUDGET_S[dev] // max(per_epoch, 1e-6))
            if fit >= epochs:
                break
        if imgsz != native:
            reasons.append(f"{imgsz} px input instead of {native} to stay near {format_duration(BUDGET_S[dev])} on {dev}")
        if fit < epochs:
            epochs = max(5, fit)
            reasons.append(f"epochs cut to {epochs} to stay near {format_duration(BUDGET_S[dev])} on {dev}")
        seconds += epochs * per_epoch
    thin = tuple(sorted(t for t, n in named.items() if n < FEW_GRAINS))
    if total == 0:
        reasons.append("no reviewed grain yet")
    return Recipe(stage, epochs, imgsz, freeze, lr0, mosaic, round(seconds, 1), tuple(reasons), thin)


def auto_plan(project, base=None, device: str = "auto"):
    """``engine.train.plan_training`` with ``.recipe`` = the auto recipe for its reviewed
    images and grains on ``device`` ("auto" resolves to the device training would use)."""
    from dataclasses import replace

    from pollenstudio.core.types import GRAIN_CLASS
    from pollenstudio.engine.train import plan_training

    plan = plan_training(project, base)
    kind = str(device or "auto")
    if kind == "auto":
        from pollenstudio.engine.predict import select_device

        kind = select_device("auto").type
    grains = dict(plan.grains)
    if plan.unidentified:
        grains[GRAIN_CLASS] = grains.get(GRAIN_CLASS, 0) + plan.unidentified
    recipe = auto_recipe(plan.images, grains, kind, plan.frame, has_detector=plan.base_classes is not None,
                         val_images=plan.val_images)
    return replace(plan, recipe=recipe)
