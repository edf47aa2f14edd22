"""Detection over a project: run a Predictor on its images and store the proposals.

The job behind "Detect all / selected / unreviewed" in the GUI and ``pollenstudio detect``.
Each image's proposals go through :meth:`Project.write_proposals` in one transaction, with
the store's merge rule (human decisions are never overwritten or resurrected), so a
cancel or crash leaves every image either fully updated or untouched. The job is recorded
as a run (model version, thresholds, tiling, device) with its outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from pollenstudio.core.errors import Cancelled
from pollenstudio.core.progress import NullProgress, Progress
from pollenstudio.core.types import ReviewStatus


@dataclass
class DetectSummary:
    run_id: int
    images: int  # images asked for
    done: int = 0  # images whose proposals were written
    proposals: int = 0  # proposals written
    skipped: int = 0  # detections dropped because a human already decided that grain
    replaced: int = 0  # older undecided proposals replaced
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image path, reason)
    capped: list[tuple[str, int, int]] = field(default_factory=list)  # (image path, kept, dropped): a cap was hit
    merged: int = 0  # boxes folded into another box on the same grain
    per_taxon: dict[str, int] = field(default_factory=dict)
    cancelled: bool = False
    seconds: float = 0.0
    device: str = ""
    model: str = ""
    model_version_id: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    calibration: str = "none"  # how images were resampled for the model's grain sizes
    tiles: int = 0  # model inputs planned over all images (1 per untiled image)
    tiles_skipped: int = 0  # of them, tiles not run because they held only background

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failed"] = [{"image": p, "error": e} for p, e in self.failed]
        d["capped"] = [{"image": p, "kept": k, "dropped": n} for p, k, n in self.capped]
        return d


def select_images(project, which: str = "all") -> list[int]:
    """Image ids for "all", "unreviewed" (not yet reviewed) or "new" (never detected/edited)."""
    if which == "all":
        return [r.id for r in project.images()]
    if which == "unreviewed":
        return [r.id for r in project.images() if r.status is not ReviewStatus.REVIEWED]
    if which == "new":
        return [r.id for r in project.images(status=ReviewStatus.NEW)]
    raise ValueError(f"which must be all, unreviewed or new, got {which!r}")


def detect_project(
    project,
    predictor,
    image_ids: Iterable[int] | None = None,
    progress: Progress | None = None,
    on_image: Callable[[int, list], None] | None = None,
) -> DetectSummary:
    """Detect on ``image_ids`` (default: all images) and write proposals.

    Returns a summary; ``summary.cancelled`` is True when ``progress`` was cancelled (the run
    is then recorded as cancelled and every image finished before the cancel keeps its
    proposals). An unreadable image is reported by name in ``summary.failed`` and the run
    goes on. ``on_image(image_id, detections)`` is called after each image is stored.
    """
    progress = progress or NullProgress()
    ids = list(image_ids) if image_ids is not None else [r.id for r in project.images()]
    records = [project.image(i) for i in ids]
    grain_sizes, calibration = image_grain_sizes(project, predictor, records)
    params = {
        "model": predictor.source,
        "model_version_id": predictor.model_version_id,
        "conf": predictor.conf,
        "iou": predictor.iou,
        "max_det": predictor.max_det,
        "tile": str(predictor.tile),
        "overlap": predictor.overlap,
        "imgsz": predictor.imgsz,
        "batch": predictor.batch,
        "device": predictor.device_description,
        "backend": getattr(predictor, "backend", "torch"),
        "skip_blank": getattr(predictor, "skip_blank", False),
        "images": len(ids),
        "calibration": calibration,
    }
    run_id = project.start_run("detect", params)
    summary = DetectSummary(
        run_id=run_id,
        images=len(ids),
        device=predictor.device_description,
        model=predictor.source,
        model_version_id=predictor.model_version_id,
        calibration=calibration,
    )
    predictor.reset_timings()
    t0 = time.perf_counter()
    status = "done"
    try:
        taxon_names: dict[int, str] = {}
        # a file that is missing, or no longer the picture registered, is reported, not used
        ok, ok_sizes = [], []
        for rec, size in zip(records, grain_sizes):
            problem = project.file_problem(rec)
            if problem is None:
                ok.append(rec)
                ok_sizes.append(size)
            else:
                summary.failed.append((rec.path, problem))
        records = ok
        paths = [project.image_path(r) for r in records]
        names = [r.path for r in records]
        # calibration per image only when some image has one (any predictor-like object works)
        extra = {"grain_sizes": ok_sizes} if any(v is not None for v in ok_sizes) else {}
        for res in predictor.iter_predict(paths, progress, names=names, **extra):
            rec = records[res.index]
            if res.error is not None:
                summary.failed.append((rec.path, res.error))
                continue
            pr = project.write_proposals(rec.id, res.detections, predictor.model_version_id, run_id)
            summary.done += 1
            summary.merged += getattr(res, "merged", 0)
            summary.tiles += getattr(res, "tiles", 1)
            summary.tiles_skipped += getattr(res, "skipped", 0)
            if getattr(res, "capped", False):
                summary.capped.append((rec.path, len(res.detections), res.dropped))
            summary.proposals += len(pr.written)
            summary.skipped += pr.skipped
            summary.replaced += pr.replaced
            # count what was written: a detection of a grain a person already decided is not a proposal
            if pr.written:
                if pr.categories_created or not taxon_names:
                    taxon_names = {c.id: c.name for c in project.categories()}
                for aid in pr.written:
                    label = taxon_names.get(project.annotation(aid).category_id, "?")
                    summary.per_taxon[label] = summary.per_taxon.get(label, 0) + 1
            if on_image is not None:
                on_image(rec.id, res.detections)
    except (Cancelled, KeyboardInterrupt) as exc:
        summary.cancelled = True
        status = "cancelled"
        if isinstance(exc, KeyboardInterrupt):
            _finish(project, summary, status, t0, predictor)
            raise
    except BaseException as exc:
        status = "failed"
        summary_fail = summary.to_dict()
        summary_fail["error"] = str(exc)
        summary.seconds = time.perf_counter() - t0
        project.finish_run(run_id, status, summary_fail)
        raise
    _finish(project, summary, status, t0, predictor)
    return summary


def image_grain_sizes(project, predictor, records) -> tuple[list[float | None], str]:
    """Per image, the typical grain size (px) detection calibrates to, and a line saying how.

    The predictor's own calibration (``--grain-size`` / ``--um-per-px``) applies to every
    image; otherwise an image's µm/px (turned into pixels with the typical pollen size), then
    the project's typical grain size. A model that records no training grain sizes is run
    uncalibrated (the µm/px may have been set only for measuring sizes), and the line says so.
    """
    from pollenstudio.engine.scale import CalibrationError, typical_grain_px

    def from_scale(um_per_px):
        try:
            return typical_grain_px(um_per_px=um_per_px)
        except CalibrationError:  # a scale outside what microscopes give: not a calibration
            return None

    own = getattr(predictor, "grain_size", None)
    if own is not None:
        return [None] * len(records), f"every image: typical grain {own:.0f} px (given)"
    project_px = project.grain_size_px
    sizes = [(from_scale(r.um_per_px) if r.um_per_px else None) or project_px for r in records]
    n = sum(v is not None for v in sizes)
    if not n:
        return sizes, "none"
    if not getattr(predictor, "grain_range", None):
        return [None] * len(records), f"none: the model records no training grain sizes ({n} image(s) have a scale)"
    return sizes, f"{n} of {len(records)} image(s) from their µm/px or the project's typical grain size"


def _finish(project, summary: DetectSummary, status: str, t0: float, predictor) -> None:
    summary.seconds = time.perf_counter() - t0
    summary.timings = dict(predictor.timings)
    project.finish_run(summary.run_id, status, summary.to_dict())
