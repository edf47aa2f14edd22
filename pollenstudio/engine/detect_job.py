"""Detection over a project: run a Predictor on its images and store the proposals.

The job behind "Detect all / selected / unreviewed" in the GUI and ``pollenstudio detect``.
Each image's proposals go through :meth:`Project.write_proposals` in one transaction, with
the store's merge rule (human decisions are never overwritten or resurrected), so a
cancel or crash leaves every image either fully updated or untouched. The job is recorded
as a run (model version, thresholds, tiling, device) with its outcome.

Focal stacks (issue 19) are detected through focus: on their extended-depth-of-field
composite (``stack_mode="edf"``: one pass, every grain sharp), on every plane
(``"planes"``: one pass per plane, the boxes of one grain on several planes merged by IoU so
each grain is reported once), or on both (``"both"``: the EDF view and every plane, merged
alike). ``DEFAULT_STACK_MODE`` is the one measured best on generated stacks
(``bench/stack_mode.py``). Either way each proposal records the plane where its box is
sharpest (``core.stack.sharpest_planes``).

Whole-slide scans (issue 29) are detected tile by tile from the file (``engine.predict``),
and a slide of a thousand tiles must not start again from its first tile after a cancel or
a crash. The store keeps its all-or-nothing rule per image (an image's proposals are written
in one transaction once all its tiles are done, and a failed run takes its writes back), so
finished tiles are kept *outside* the store, in a tile journal per image
(:class:`TileJournal`: ``<project>/models/tile-journal/<image sha>-<plan key>.jsonl``, one
line per finished tile with its raw boxes). Committing per batch of tiles instead would put
half an image's proposals in the store, which the merge rule (a new run replaces an image's
undecided proposals) and the reviewers (an image that looks done) would both misread. The
next ``pollenstudio detect`` of the image (or Detect in the app) with the same model,
thresholds, tile plan and calibration reads the journal back and runs only the tiles
missing from it; the journal is removed once the image's proposals are stored. Journals of
other settings for the same image are removed when a new one starts, so they never pile up.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pollenstudio.core.errors import Cancelled, ImageReadError
from pollenstudio.core.progress import NullProgress, Progress
from pollenstudio.core.types import DEFAULT_STACK_MODE, STACK_MODES, ReviewStatus
from pollenstudio.engine.review_order import ImageProposals, flip_back, proposal_doubts


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
    stacks: int = 0  # focal stacks detected through focus
    stack_mode: str = "edf"  # "edf" (composite), "planes" (every plane, merged) or "both"
    tiles: int = 0  # model inputs planned over all images (1 per untiled image)
    tiles_skipped: int = 0  # of them, tiles not run because they held only background
    tiles_resumed: int = 0  # of them, tiles taken from a tile journal (run before a cancel or crash)
    size_dropped: int = 0  # boxes far outside the calibrated grain size, dropped (engine.scale.size_weights)
    # (image path, words): images whose known grains are far off the size they are calibrated to
    size_warnings: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failed"] = [{"image": p, "error": e} for p, e in self.failed]
        d["size_warnings"] = [{"image": p, "warning": w} for p, w in self.size_warnings]
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
    stack_mode: str | None = None,
    flip_pass: bool = False,
    on_tile: Callable[[int, int, list], None] | None = None,
) -> DetectSummary:
    """Detect on ``image_ids`` (default: all images) and write proposals.

    Returns a summary; ``summary.cancelled`` is True when ``progress`` was cancelled (the run
    is then recorded as cancelled and every image finished before the cancel keeps its
    proposals). An unreadable image is reported by name in ``summary.failed`` and the run
    goes on. ``on_image(image_id, detections)`` is called after each image is stored.
    ``stack_mode``: how focal stacks are detected, "edf", "planes" or "both" (module
    docstring; None: ``DEFAULT_STACK_MODE``).

    All or nothing: a run that fails part-way (an error, not a cancel) takes back what it
    wrote (``Project.take_back_proposals``: its proposals, the taxa it created, and the
    proposals it replaced come back) before the error goes on; the run is recorded as failed.
    A model whose class names cannot become taxa is refused before the project is touched.

    Every proposal is stored with its *doubt* for "review this next"
    (:mod:`pollenstudio.engine.review_order`). ``flip_pass`` runs the model a second time on
    the horizontally flipped image so the doubt includes the two passes' disagreement: it
    doubles the model time of the job (decode and calibration included), so it is an option
    (not for whole-slide scans, which are never read whole: their proposals get no flip doubt).

    Tiled images (whole-slide scans above all): ``on_tile(image_id, tile, detections)`` is
    called after each model tile with that tile's boxes (image pixels, before the fold across
    tile seams: a preview the image's stored proposals replace, for a view that shows them
    as they come); tiles finished before a cancel or crash are not run again by the next
    run (module docstring, ``summary.tiles_resumed``).
    """
    if stack_mode is None:
        stack_mode = DEFAULT_STACK_MODE
    if stack_mode not in STACK_MODES:
        raise ValueError(f"stack_mode must be one of {', '.join(STACK_MODES)}, got {stack_mode!r}")
    names = getattr(predictor, "class_names", None)
    if names is not None:  # a name that cannot be a taxon would fail on the image it is first found on
        from pathlib import Path

        from pollenstudio.engine.models import check_class_names

        source = getattr(predictor, "source", "") or ""
        check_class_names(names, f"model {Path(source).name}" if source else "the model")
    progress = progress or NullProgress()
    ids = list(image_ids) if image_ids is not None else [r.id for r in project.images()]
    records = [project.image(i) for i in ids]
    grain_sizes, calibration = image_grain_sizes(project, predictor, records)
    calibrated = getattr(predictor, "grain_size", None) is not None or any(v is not None for v in grain_sizes)
    band = reviewed_size_band(project) if calibrated else None
    warnings = calibration_warnings(project, predictor, records, grain_sizes) if calibrated else []
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
        "stack_mode": stack_mode,
        "flip_pass": bool(flip_pass),
    }
    run_id = project.start_run("detect", params)
    summary = DetectSummary(
        run_id=run_id,
        images=len(ids),
        device=predictor.device_description,
        model=predictor.source,
        model_version_id=predictor.model_version_id,
        calibration=calibration,
        stack_mode=stack_mode,
        size_warnings=warnings,
    )
    predictor.reset_timings()
    t0 = time.perf_counter()
    status = "done"
    created: list[int] = []  # taxa this run created: taken back with it if it fails
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
        stacks = [(r, z) for r, z in zip(ok, ok_sizes) if r.is_stack]
        ok_sizes = [z for r, z in zip(ok, ok_sizes) if not r.is_stack]
        records = [r for r in ok if not r.is_stack]
        paths = [project.image_path(r) for r in records]
        names = [r.path for r in records]
        # calibration per image only when some image has one (any predictor-like object works)
        extra = {"grain_sizes": ok_sizes} if any(v is not None for v in ok_sizes) else {}
        if calibrated:  # boxes far off the typical grain size lose weight, within the reviewed grains' band
            extra["size_band"] = band

        if stacks:  # the progress count covers the stacks that come after the single images
            extra["total"] = len(records) + len(stacks)

        journals: dict[int, TileJournal] = {}
        folder = TileJournal.folder_of(project)
        import inspect

        hooks = inspect.signature(predictor.iter_predict).parameters  # any predictor-like object works
        if folder is not None and "journal" in hooks:
            def journal(i: int, plan: dict):
                journals[i] = TileJournal.open(folder, records[i].sha256 or records[i].path, plan)
                return journals[i]

            extra["journal"] = journal
        if on_tile is not None and "on_tile" in hooks:
            extra["on_tile"] = lambda i, k, dets: on_tile(records[i].id, k, dets)

        def results():
            yield from ((records[res.index], res) for res in predictor.iter_predict(paths, progress, names=names,
                                                                                     **extra))
            for k, (rec, size) in enumerate(stacks):
                run_stack = detect_slide_stack if _slide_stack(project, rec) else detect_stack
                yield rec, run_stack(project, predictor, rec, size, stack_mode,
                                        _StepProgress(progress, len(records) + k, len(records) + len(stacks)),
                                        size_band=band)
                summary.stacks += 1

        for rec, res in results():
            if res.error is not None:
                summary.failed.append((rec.path, res.error))
                continue
            flipped = None
            if flip_pass and not rec.is_stack and not _whole_slide(paths[res.index]):
                # a stack's proposals come from its EDF view or planes; a whole slide is never read whole
                progress.check()
                flipped = _flipped_pass(predictor, paths[res.index], names[res.index],
                                        ok_sizes[res.index] if "grain_sizes" in extra else None, band)
            doubts, unmatched = proposal_doubts(ImageProposals(rec.id, res.detections, flipped))
            pr = project.write_proposals(rec.id, res.detections, predictor.model_version_id, run_id,
                                         doubts=[float(v) for v in doubts],
                                         flip_unmatched=unmatched if flipped is not None else None,
                                         journal=True)
            created.extend(pr.categories_created)
            if not rec.is_stack and res.index in journals:  # its tiles are in the store now
                journals.pop(res.index).remove()
            summary.done += 1
            summary.tiles_resumed += getattr(res, "resumed", 0)
            summary.merged += getattr(res, "merged", 0)
            summary.tiles += getattr(res, "tiles", 1)
            summary.tiles_skipped += getattr(res, "skipped", 0)
            summary.size_dropped += getattr(res, "size_dropped", 0)
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
            _forget(project, run_id)
            _finish(project, summary, status, t0, predictor)
            raise
    except BaseException as exc:
        status = "failed"
        summary_fail = summary.to_dict()
        summary_fail["error"] = str(exc)
        try:  # all or nothing: the images done so far lose this run's proposals again
            summary_fail["taken_back"] = project.take_back_proposals(run_id, created)
        except Exception as exc2:  # noqa: BLE001 - the first error is the one to report
            summary_fail["taken_back"] = f"could not take back this run's proposals: {exc2}"
        summary.seconds = time.perf_counter() - t0
        try:
            project.finish_run(run_id, status, summary_fail)
        except Exception:  # noqa: BLE001 - e.g. the disk that failed the run: it reads "interrupted" on the next open
            pass
        raise
    _forget(project, run_id)
    _finish(project, summary, status, t0, predictor)
    return summary


class TileJournal:
    """The finished tiles of one tiled image, kept on disk until its proposals are stored
    (module docstring). One JSON line per tile: its index, whether the model's own cap was
    hit, and its raw boxes (in the pixels the tiles were cut from, scores, classes, class
    probabilities, pyramid levels), exactly as the predictor found them, so a resumed image
    gives the same proposals as an uninterrupted run. The first line holds the plan the
    tiles belong to. A line cut short by a crash is ignored (that tile runs again). Lines are
    flushed to the operating system per tile, not synced to the disk: a power cut may cost
    the last few tiles, never a wrong box."""

    DIR = ("models", "tile-journal")

    def __init__(self, path: Path, plan: dict):
        self.path, self.plan = Path(path), plan

    @classmethod
    def folder_of(cls, project) -> Path | None:
        folder = getattr(project, "folder", None)
        return None if folder is None else Path(folder).joinpath(*cls.DIR)

    @classmethod
    def open(cls, folder: Path, image_key: str, plan: dict) -> "TileJournal":
        """The journal of an image (``image_key``: its SHA-256) for tiles of ``plan``;
        journals of the same image under other plans are removed."""
        plan = json.loads(json.dumps(plan, sort_keys=True, default=str))
        img = hashlib.sha256(str(image_key).encode()).hexdigest()[:16] if len(str(image_key)) != 64 else str(image_key)[:16]
        key = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(folder) / f"{img}-{key}.jsonl"
        if Path(folder).is_dir():
            for old in Path(folder).glob(f"{img}-*.jsonl"):
                if old != path:
                    old.unlink(missing_ok=True)
        return cls(path, plan)

    def done(self) -> dict[int, tuple]:
        """{tile: (boxes, scores, classes, probs, levels, capped)} of the tiles on disk."""
        import numpy as np

        out: dict[int, tuple] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (FileNotFoundError, UnicodeDecodeError):
            return out
        try:
            if not lines or json.loads(lines[0]).get("plan") != self.plan:
                return out  # not this plan's (a hash collision or a hand-made file): start afresh
        except (ValueError, AttributeError):
            return out
        for line in lines[1:]:
            try:
                d = json.loads(line)
                k, rows = int(d["tile"]), d["boxes"]
                nc = int(d["nc"])
                b = np.asarray([r[:4] for r in rows], np.float64).reshape(-1, 4)
                out[k] = (b, np.asarray([r[4] for r in rows], np.float32),
                          np.asarray([r[5] for r in rows], np.int64),
                          np.asarray([r[7:] for r in rows], np.float32).reshape(-1, nc),
                          np.asarray([r[6] for r in rows], np.int64), bool(d["capped"]))
            except (ValueError, KeyError, TypeError, IndexError):
                continue  # cut short by a crash
        return out

    def add(self, tile: int, part, capped: bool) -> None:
        """Record one finished tile (``part``: boxes, scores, classes, probs, levels)."""
        boxes, scores, classes, probs, levels = part[:5]
        rows = [[*(float(v) for v in boxes[i]), float(scores[i]), int(classes[i]), int(levels[i]),
                 *(float(v) for v in probs[i])] for i in range(len(scores))]
        nc = int(probs.shape[1]) if getattr(probs, "ndim", 1) == 2 else 0
        size = self.path.stat().st_size if self.path.is_file() else 0
        if not size:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [] if size else [json.dumps({"plan": self.plan}, sort_keys=True)]
        lines.append(json.dumps({"tile": int(tile), "capped": bool(capped), "nc": nc, "boxes": rows}))
        with open(self.path, "a+b") as f:
            if size:  # a line a crash cut short is ended here (and skipped when read)
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    lines.insert(0, "")
            f.write(("\n".join(lines) + "\n").encode("utf-8"))
            f.flush()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _whole_slide(path) -> bool:
    from pollenstudio.core.slide import is_whole_slide

    return is_whole_slide(path)


def _forget(project, run_id: int) -> None:
    """The run's writes stand: drop what was kept to take them back."""
    project.forget_proposal_journal(run_id)




@dataclass
class StackResult:
    """Detections of one focal stack (what ``iter_predict`` gives for an image)."""

    detections: list
    error: str | None = None
    merged: int = 0  # boxes of a grain seen on several planes, folded into one
    capped: bool = False
    dropped: int = 0
    size_dropped: int = 0  # boxes far outside the calibrated grain size


class _StepProgress:
    """Progress of one stack inside a run: the run's count stays at the stack's position
    while the message tells the plane (or tile) in flight."""

    def __init__(self, outer, done: int, total: int):
        self.outer, self.done, self.total = outer, done, total

    def update(self, done: int, total: int, message: str = "") -> None:
        self.outer.update(self.done, self.total, message)

    @property
    def cancelled(self) -> bool:
        return self.outer.cancelled

    def check(self) -> None:
        self.outer.check()


def merge_across_planes(detections: list, iou: float = 0.5) -> tuple[list, int]:
    """One detection per grain from detections on several planes: boxes of the same grain
    (IoU >= ``iou``, or one nearly inside the other, ``predict.same_grain_groups``) fold
    into the best-scoring one. Returns (kept, best first; number folded)."""
    import numpy as np

    from pollenstudio.engine.predict import same_grain_groups

    if not detections:
        return [], 0
    boxes = np.asarray([d.box.xyxy() for d in detections], np.float64)
    scores = np.asarray([d.score for d in detections], np.float64)
    keep, groups = same_grain_groups(boxes, scores, iou=iou)
    return [detections[i] for i in keep], sum(len(v) for v in groups.values())


def _detect_views(predictor, sources, names: list[str], progress, grain_size, size_band, merge: bool) -> StackResult:
    """The views of one stack (its EDF view and / or its planes, ``sources`` in the order of
    ``names``) through ``predictor.iter_predict``, gathered in one StackResult: the first
    error ends it; with ``merge`` the boxes of one grain on several views fold into one.
    ``plane`` is left for the caller to measure."""
    extra = {"grain_sizes": [grain_size] * len(names)} if grain_size is not None else {}
    if size_band is not None:
        extra["size_band"] = size_band
    out = StackResult([])
    for res in predictor.iter_predict(sources, progress, names=names, total=len(names), **extra):
        if res.error is not None:
            return StackResult([], error=res.error)
        out.detections.extend(res.detections)
        out.size_dropped += getattr(res, "size_dropped", 0)
        out.capped = out.capped or getattr(res, "capped", False)
        out.dropped += getattr(res, "dropped", 0)
    if merge:
        out.detections, out.merged = merge_across_planes(out.detections, iou=0.5)
    return out


def detect_stack(project, predictor, rec, grain_size: float | None = None, mode: str | None = None,
                 progress=None, size_band=None) -> StackResult:
    """Detect one focal stack (see the module docstring); every detection gets the plane
    where its box is sharpest. An unreadable plane gives a result with ``error``. ``mode``:
    "edf", "planes" or "both" (None: ``DEFAULT_STACK_MODE``)."""
    from dataclasses import replace

    from pollenstudio.core.stack import EDF, sharpest_planes

    progress = progress or NullProgress()
    mode = DEFAULT_STACK_MODE if mode is None else mode
    if mode not in STACK_MODES:
        raise ValueError(f"stack mode must be one of {', '.join(STACK_MODES)}, got {mode!r}")
    try:
        with project.open_stack(rec) as st:
            if mode == "edf":
                progress.update(0, 1, f"{rec.path}: all-in-focus view")
                sources, names = [st.view(EDF)], [f"{rec.path} (EDF)"]
            else:
                def sources_of(st=st):  # one plane in memory at a time (and the EDF view first in "both")
                    if mode == "both":
                        yield st.view(EDF)
                    yield from (st.plane(i) for i in range(st.n_planes))

                sources = sources_of()
                names = ([f"{rec.path} (EDF)"] if mode == "both" else []) + [
                    f"{rec.path} plane {i + 1}/{st.n_planes}" for i in range(st.n_planes)]
            got = _detect_views(predictor, sources, names, progress, grain_size, size_band, merge=mode != "edf")
            if got.error is not None:
                return got
            progress.update(0, 1, f"{rec.path}: sharpest plane of {len(got.detections)} grain(s)")
            planes = sharpest_planes(st, [d.box.xyxy() for d in got.detections])
    except ImageReadError as exc:
        return StackResult([], error=str(exc))
    return replace(got, detections=[replace(d, plane=p) for d, p in zip(got.detections, planes)])


def _slide_stack(project, rec) -> bool:
    """Whether a focal stack is one whole-slide file read tile by tile (its planes inside)."""
    return not rec.plane_files and _whole_slide(project.image_path(rec))


def detect_slide_stack(project, predictor, rec, grain_size: float | None = None, mode: str | None = None,
                       progress=None, size_band=None) -> StackResult:
    """:func:`detect_stack` for a focal stack that is one whole-slide file (a pyramidal
    OME-TIFF with Z planes): never decoded whole. Each view is detected tile by tile from
    the file (``core.slide.SlideArray``: the EDF view is computed over each tile's region,
    a plane is read as it is), and each box's sharpest plane is measured on the box's own
    region of every plane."""
    from dataclasses import replace

    from pollenstudio.core.slide import Slide, SlideArray
    from pollenstudio.core.stack import EDF, box_sharpness

    progress = progress or NullProgress()
    mode = mode or "edf"
    try:
        with Slide.open(project.image_path(rec)) as slide:
            views = ([EDF] if mode in ("edf", "both") else []) + (
                list(range(slide.planes)) if mode in ("planes", "both") else [])
            names = [f"{rec.path} (EDF)" if v == EDF else f"{rec.path} plane {v + 1}/{slide.planes}" for v in views]
            got = _detect_views(predictor, [SlideArray(slide, v) for v in views], names, progress, grain_size,
                                size_band, merge=len(views) > 1)
            if got.error is not None:
                return got
            progress.update(0, 1, f"{rec.path}: sharpest plane of {len(got.detections)} grain(s)")
            boxes = [d.box.xyxy() for d in got.detections]
            if slide.planes > 1 and boxes:
                table = box_sharpness((SlideArray(slide, k) for k in range(slide.planes)), boxes)
                planes = [int(k) for k in table.argmax(axis=0)]
            else:
                planes = [0] * len(boxes)
    except ImageReadError as exc:
        return StackResult([], error=str(exc))
    return replace(got, detections=[replace(d, plane=p) for d, p in zip(got.detections, planes)])


def _flipped_pass(predictor, path, name: str, grain_size, size_band=None) -> list | None:
    """The predictor's detections on the horizontally flipped image, in the original image's
    coordinates (None when the image cannot be read a second time: no disagreement then)."""
    import numpy as np

    from pollenstudio.core.errors import ImageReadError
    from pollenstudio.core.imageio import read_image

    try:
        img = read_image(path)
    except ImageReadError:
        return None
    img = np.ascontiguousarray(img[:, ::-1])
    kw = {"grain_sizes": [grain_size]} if grain_size is not None else {}
    if size_band is not None:
        kw["size_band"] = size_band
    res = next(iter(predictor.iter_predict([img], names=[f"{name} (flipped)"], **kw)))
    if res.error is not None:
        return None
    return flip_back(res.detections, img.shape[1])


def image_grain_sizes(project, predictor, records) -> tuple[list[float | None], str]:
    """Per image, the typical grain size (px) detection calibrates to, and a line saying how.

    The predictor's own calibration (``--grain-size`` / ``--um-per-px``) applies to every
    image; otherwise each image's own (``engine.scale.image_grain_px``: its own typical grain
    size, else its µm/px, else the project's typical grain size). A model that records no
    training grain sizes is run uncalibrated (the µm/px may have been set only for measuring
    sizes), and the line says so.
    """
    from pollenstudio.engine.scale import image_grain_px

    own = getattr(predictor, "grain_size", None)
    if own is not None:
        return [None] * len(records), f"every image: typical grain {own:.0f} px (given)"
    project_px = project.grain_size_px
    found = [image_grain_px(r, project_px) for r in records]
    sizes = [px for px, _ in found]
    n = sum(v is not None for v in sizes)
    if not n:
        return sizes, "none"
    if not getattr(predictor, "grain_range", None):
        return [None] * len(records), f"none: the model records no training grain sizes ({n} image(s) have a scale)"
    by = {k: sum(src == k for _, src in found) for k in ("image", "scale", "project")}
    how = [f"{by['image']} their own typical grain size" if by["image"] else "",
           f"{by['scale']} their µm/px" if by["scale"] else "",
           f"{by['project']} the project's typical grain size ({project_px:.0f} px)" if by["project"] else ""]
    return sizes, f"{n} of {len(records)} image(s) calibrated: " + ", ".join(h for h in how if h)


_CALIBRATION_FROM = {"image": "its own calibration", "scale": "from its µm/px",
                     "project": "the project's typical grain size, set on other images", "given": "given for this run"}


def calibration_warnings(project, predictor, records, sizes) -> list[tuple[str, str]]:
    """(image path, words) for each calibrated image whose grains known so far (its
    confirmed grains, else at least 3 undecided proposals) measure more than
    ``engine.scale.MISMATCH`` times larger or smaller than the size it is calibrated to: most
    likely an image at another magnification (calibrations belong to one)."""
    import numpy as np

    from pollenstudio.core.types import OBJECT_STATUSES, AnnotationStatus
    from pollenstudio.engine.scale import image_grain_px, size_mismatch

    own = getattr(predictor, "grain_size", None)
    project_px = project.grain_size_px
    todo = {}
    for rec, size in zip(records, sizes):
        g, src = (own, "given") if own is not None else image_grain_px(rec, project_px) if size is not None else (None, "")
        if g is not None:
            todo[rec.id] = (rec, g, src)
    if not todo:
        return []
    known: dict[int, list[float]] = {}
    proposed: dict[int, list[float]] = {}
    for rows, into in ((project.grain_table(statuses=OBJECT_STATUSES), known),
                       (project.grain_table(statuses=[AnnotationStatus.PROPOSED]), proposed)):
        for row in rows:
            if row[0] in todo:
                into.setdefault(row[0], []).append(float(np.sqrt(max(row[3], 0) * max(row[4], 0))))
    out = []
    for iid, (rec, g, src) in todo.items():
        sizes_of, need = (known[iid], 1) if iid in known else (proposed.get(iid, []), 3)
        ratio = size_mismatch(g, sizes_of, need)
        if ratio is None:
            continue
        what = "grains" if iid in known else "proposals"
        out.append((rec.path, f"{rec.path}: its {what} so far measure about {np.median(sizes_of):.0f} px, "
                              f"{ratio:.1f}x the typical grain size it is calibrated to ({g:.0f} px, "
                              f"{_CALIBRATION_FROM[src]}); it may be at another magnification: calibrate it "
                              "(or its sample) on its own"))
    return out


def reviewed_size_band(project) -> tuple[float, float]:
    """``engine.scale.size_band`` of the project's reviewed grains on calibrated images (their
    diameters over their images' typical grain size): boxes of sizes the lab confirmed are
    never down-weighted for their size."""
    import math

    from pollenstudio.engine.scale import image_grain_px, size_band

    rows = project.grain_table(reviewed_only=True)
    if not rows:
        return size_band([])
    project_px = project.grain_size_px
    typical = {}
    for rec in project.images():
        typical[rec.id] = image_grain_px(rec, project_px)[0]
    ratios = [math.sqrt(max(r[3], 0) * max(r[4], 0)) / typical[r[0]] for r in rows if typical.get(r[0])]
    return size_band(ratios)


def _finish(project, summary: DetectSummary, status: str, t0: float, predictor) -> None:
    summary.seconds = time.perf_counter() - t0
    summary.timings = dict(predictor.timings)
    project.finish_run(summary.run_id, status, summary.to_dict())
