"""A newly trained model version against the model in use, on the same validation images.

After a training run the user decides whether to switch models, so both models are scored
by the same evaluation on the new run's held-out validation images (the truth read from
the store now), overall and per taxon. The training dashboard and ``pollenstudio train``
both show this comparison; it lives here so they cannot disagree.

``reference_model(project)`` names the model in use (take it before a run that activates
its result); ``compare_with_reference(project, version_id, reference, ...)`` scores it and
returns a :class:`ModelComparison`. A comparison that cannot be made (no validation images,
no model before, its file gone, cancelled) is not an error: ``note`` says why, in words.
A model in use that names none of the project's taxa (the shipped grain model) is scored on
finding grains, class-agnostic, and so is the new version beside it (``finding``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pollenstudio.core import gcguard
from pollenstudio.core.errors import Cancelled, CheckpointError, PollenStudioError

SUMMARY_KEYS = ("map50", "map50_95", "precision", "recall")


@dataclass(frozen=True)
class Reference:
    """The model in use: its file (None when it is gone), name and version id (None for
    the shipped default model, or when there is no model at all)."""

    path: Path | None
    name: str | None
    version_id: int | None


@dataclass
class TaxonChange:
    name: str
    grains: int  # validation grains of this taxon
    old: float | None  # AP50 of the reference model (None: not scored / unknown taxon)
    new: float | None

    @property
    def delta(self) -> float | None:
        return None if self.old is None or self.new is None else self.new - self.old


@dataclass
class ModelComparison:
    """The new version's validation metrics and the reference's on the same images."""

    version_id: int
    name: str
    metrics: dict  # new version, EvalResult.to_dict on the validation split ({} without one)
    n_val: int
    reference_name: str | None = None
    reference_id: int | None = None
    reference_metrics: dict | None = None  # None: not scored (see note)
    note: str = ""  # why there is no comparison, in words
    taxa: list[TaxonChange] = field(default_factory=list)
    # the reference names none of the project's taxa (the grain model): it was scored on
    # finding grains only, and so was the new version (``finding``), on the same images
    class_agnostic: bool = False
    finding: dict | None = None  # the new version's class-agnostic EvalResult dict
    too_few: str = ""  # the validation images are too few for a score to mean anything (evaluate.too_few_to_score)

    def to_dict(self) -> dict:
        """Summary for JSON output: overall figures of both models and per-taxon AP50; with
        ``class_agnostic`` the reference's figures are finding only, set beside the new
        version's finding figures (``new_finding``)."""
        ref = self.reference_metrics
        return {
            "reference": None if self.reference_name is None else {
                "version_id": self.reference_id,
                "name": self.reference_name,
                **{k: (None if ref is None else ref.get(k)) for k in SUMMARY_KEYS},
            },
            "new": {"version_id": self.version_id, "name": self.name,
                    **{k: self.metrics.get(k) for k in SUMMARY_KEYS}},
            "val_images": self.n_val,
            "class_agnostic": self.class_agnostic,
            "too_few_to_score": self.too_few or None,
            "new_finding": None if self.finding is None else {k: self.finding.get(k) for k in SUMMARY_KEYS},
            "taxa": [{"name": t.name, "grains": t.grains, "reference_ap50": t.old, "new_ap50": t.new,
                      "change": t.delta} for t in self.taxa],
            "note": self.note,
        }


def taxon_changes(old: dict | None, new: dict) -> list[TaxonChange]:
    """Per-taxon AP50 of two EvalResult dicts, matched by taxon name, in the new model's
    order; taxa without validation grains are left out (their AP is undefined)."""
    old_rows = {r["name"]: r for r in (old or {}).get("per_class", [])}
    out = []
    for r in new.get("per_class", []):
        if not r.get("n_gt"):
            continue
        o = old_rows.get(r["name"])
        out.append(TaxonChange(r["name"], int(r["n_gt"]), None if o is None else o.get("ap50"), r.get("ap50")))
    return out


def reference_model(project) -> Reference:
    """The model detection uses now (the active version, else the shipped default), as
    :func:`pollenstudio.engine.models.resolve_model` resolves it; a version whose file is
    gone keeps its name with ``path`` None."""
    from pollenstudio.engine.models import resolve_model

    try:
        r = resolve_model(project, None)
    except CheckpointError:  # its file is gone, or no model at all
        mv = project.active_model_version()
        return Reference(None, mv.name if mv else None, mv.id if mv else None)
    return Reference(r.path, r.label, r.version_id)


def score_on_images(project, weights, class_names, image_ids, device, conf, batch, progress=None,
                    class_agnostic: bool | None = None) -> dict | None:
    """EvalResult dict of the checkpoint ``weights`` on the reviewed images ``image_ids``
    (the truth is read from the store now), or None when none of them is still reviewed.
    A model naming none of the taxa is scored on finding grains (``class_agnostic`` in the
    dict; True forces that score: see ``evaluate.evaluate_model``)."""
    from pollenstudio.detector.checkpoint import load_checkpoint
    from pollenstudio.engine.dataset import data_from_project
    from pollenstudio.engine.evaluate import evaluate_model

    ids = set(image_ids)
    data = data_from_project(project, list(class_names))
    samples = [s for s in data.samples if s.image_id in ids]
    if not samples:
        return None
    from pollenstudio.engine.classify import load_classifier

    with gcguard.held():
        model, mcfg, _ = load_checkpoint(weights, device="cpu")
        taxa = load_classifier(weights)
    res = evaluate_model(model, mcfg, samples, data.class_names, device, conf, batch, progress, taxa=taxa,
                         class_agnostic=class_agnostic)
    return res.to_dict()


def compare_with_reference(project, version_id: int, reference: Reference | None = None, device="auto",
                           conf: float = 0.25, batch: int = 8, progress=None,
                           on_phase: Callable[[str], None] | None = None) -> ModelComparison:
    """Score ``reference`` (default: :func:`reference_model` now) on the validation images
    of model version ``version_id`` and pair it with that version's own metrics.
    ``progress`` cancels the scoring only (the note says so); ``on_phase(text)`` hears
    what is being done."""
    mv = project.model_version(version_id)
    val_ids = mv.summary.get("val_image_ids") or []
    ref = reference_model(project) if reference is None else reference
    out = ModelComparison(mv.id, mv.name, dict(mv.metrics or {}), len(val_ids), ref.name, ref.version_id)
    from pollenstudio.engine.evaluate import too_few_to_score

    if not val_ids:
        out.too_few = ("too few reviewed images to score: none was held out for validation (there is one image, "
                       "or each holds most of some taxon's grains); review more images")
    else:
        out.too_few = too_few_to_score(out.metrics) or ""
    too_few = (out.too_few[0].upper() + out.too_few[1:] + ", then train again.") if out.too_few else ""
    if ref.name is None:
        out.note = " ".join(("There was no model before this one to compare with.", too_few)).strip()
    elif too_few:
        out.note = too_few + ("" if not val_ids else " Nothing was compared.")
    elif ref.path is None:
        out.note = f"The weights file of {ref.name} is missing; it could not be scored."
    else:
        if on_phase is not None:
            on_phase(f"Scoring {ref.name} on the same {len(val_ids)} validation images...")
        try:
            out.reference_metrics = score_on_images(
                project, ref.path, mv.config.get("model", {}).get("class_names") or [], val_ids, device,
                conf, batch, progress=progress)
            if out.reference_metrics is None:
                out.note = "Its validation images are no longer reviewed, so there is nothing to compare on."
            elif out.reference_metrics.get("class_agnostic"):
                _finding_too(out, project, mv, ref, val_ids, device, conf, batch, progress, on_phase)
        except Cancelled:
            out.note = f"Comparison with {ref.name} skipped (cancelled)."
        except PollenStudioError as exc:
            out.note = f"{ref.name} could not be scored on these images: {exc}"
    out.taxa = [] if out.too_few else taxon_changes(out.reference_metrics, out.metrics)
    return out


def _finding_too(out: ModelComparison, project, mv, ref: Reference, val_ids, device, conf, batch, progress,
                 on_phase) -> None:
    """The reference names none of the taxa (the grain model on a taxon-labelled project): it
    was scored on finding grains; score the new version the same way on the same images, so
    the two are compared like for like."""
    out.class_agnostic = True
    path = project.model_file(mv)
    if path is None or not Path(path).is_file():
        out.note = f"The model in use ({ref.name}) names none of these taxa: scored class-agnostic (finding only)."
        return
    if on_phase is not None:
        on_phase(f"Scoring {mv.name} on finding grains too (class-agnostic), on the same images...")
    out.finding = score_on_images(project, path, mv.config.get("model", {}).get("class_names") or [], val_ids,
                                  device, conf, batch, progress=progress, class_agnostic=True)
    out.note = (f"The model in use ({ref.name}) names none of these taxa, so both models are compared "
                "class-agnostic (finding only): every grain one class; the new version's taxon figures are its own.")


@dataclass
class GateDecision:
    """Whether a candidate version should replace the model in use: both scored by the same
    evaluation on the identical list of validation images (the candidate's held-out ones)."""

    activate: bool
    version_id: int
    name: str
    reference_name: str | None
    n_val: int
    candidate: dict | None = None  # EvalResult dict of the candidate on those images
    reference: dict | None = None  # the same for the model in use
    reason: str = ""  # in words, for the status bar

    def brief(self) -> str:
        def m(d):
            return "?" if d is None or d.get("map50") is None else f"{d['map50']:.3f}"

        return f"mAP@.5 {m(self.candidate)} vs {m(self.reference)} on {self.n_val} validation images"


def beats(candidate: dict, reference: dict) -> bool:
    """Strictly better mAP@.5, or the same mAP@.5 and a better mAP@.5:.95."""
    a, b = candidate.get("map50") or 0.0, reference.get("map50") or 0.0
    if abs(a - b) > 1e-9:
        return a > b
    return (candidate.get("map50_95") or 0.0) > (reference.get("map50_95") or 0.0) + 1e-9


def gate_candidate(project, version_id: int, reference: Reference | None = None, device="auto",
                   conf: float = 0.25, batch: int = 8, progress=None) -> GateDecision:
    """Score version ``version_id`` and ``reference`` (default: the model in use now) on the
    candidate's validation images with one evaluation, and decide: the candidate replaces
    the reference only if it :func:`beats` it. Without validation images, or when the
    reference cannot be scored, the answer is no (the reason says why); with no model at all
    before, a candidate that finds anything is taken."""
    mv = project.model_version(version_id)
    val_ids = list(mv.summary.get("val_image_ids") or [])
    ref = reference_model(project) if reference is None else reference
    out = GateDecision(False, mv.id, mv.name, ref.name, len(val_ids))
    if ref.version_id is not None and ref.version_id == mv.id:
        out.reason = f"{mv.name} is already in use"
        return out
    if not val_ids:
        out.reason = "no image was held out for validation, so it cannot be shown to be better"
        return out
    names = mv.config.get("model", {}).get("class_names") or []
    path = project.model_file(mv)
    if path is None or not Path(path).is_file():
        out.reason = f"the weights file of {mv.name} is missing"
        return out
    out.candidate = score_on_images(project, path, names, val_ids, device, conf, batch, progress=progress)
    if out.candidate is None:
        out.reason = "its validation images are no longer reviewed"
        return out
    if ref.name is None:
        out.activate = (out.candidate.get("map50") or 0.0) > 0.0
        out.reason = "there was no model before" if out.activate else "it finds none of the validation grains"
        return out
    if ref.path is None:
        out.reason = f"the weights file of {ref.name} (in use) is missing, so the two cannot be compared"
        return out
    out.reference = score_on_images(project, ref.path, names, val_ids, device, conf, batch, progress=progress)
    if out.reference is None:
        out.reason = "its validation images are no longer reviewed"
        return out
    if out.reference.get("class_agnostic"):  # the grain model: compare finding grains, like for like
        out.candidate = score_on_images(project, path, names, val_ids, device, conf, batch, progress=progress,
                                        class_agnostic=True)
    out.activate = beats(out.candidate, out.reference)
    out.reason = "better on the same validation images" if out.activate else "not better on the same validation images"
    if out.reference.get("class_agnostic"):
        out.reason += f" (finding grains, class-agnostic: {ref.name} names no taxon)"
    return out
