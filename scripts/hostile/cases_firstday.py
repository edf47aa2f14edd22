"""Hostile CLI cases of issue 28 (a palynologist's first day), items 2-4, loaded by
scripts/hostile_cli.py: ``build(w) -> (cases, check)``.

- I28-2: `pollenstudio train` starts from the model in use; when the model in use is an
  active version whose file is gone it refuses in words (never a new network instead), and
  `--base scratch --stage classifier` is refused (a classifier needs a detector); neither
  starts a run or adds a version.
- I28-3: `pollenstudio eval` of a taxon-labelled project with the shipped grain model in use
  scores it class-agnostic (finding only) instead of failing with "no taxon in common".
- I28-4: a project too small to hold an image out: `eval --split val` says there is nothing
  to score; `train` says "too few reviewed images to score" instead of a figure.
"""

from __future__ import annotations

from common import expect

from pathlib import Path


_expect = expect  # the shared check (scripts/hostile/common.py)


def _field(path: Path, k: int, grains) -> None:
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((160, 160, 3), 205, np.uint8)
    cv2.putText(img, str(k), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1)  # every file differs
    for x, y, r in grains:
        cv2.circle(img, (x, y), r, (60, 110, 170), -1)
        cv2.circle(img, (x, y), r, (30, 50, 90), 2)
    assert cv2.imwrite(str(path), img)


def _reviewed(folder: Path, taxa_per_image: list[list[str]]):
    """A project of one 160 px field per list, each grain drawn by hand with its taxon (so reviewed)."""
    from pollenstudio.core.types import Box
    from pollenstudio.project import Project

    spots = [(40, 40, 16), (110, 50, 18), (60, 115, 15), (120, 120, 17)]
    for i, taxa in enumerate(taxa_per_image):
        _field(folder / "images" / f"field{i}.png", i, spots[:len(taxa)])
    p = Project.create(folder)
    p.add_folder(folder / "images")
    ids = p.ensure_categories(sorted({t for taxa in taxa_per_image for t in taxa}))
    for rec in p.images():
        i = int(Path(rec.path).stem.removeprefix("field"))
        for (x, y, r), t in zip(spots, taxa_per_image[i]):
            p.add_annotation(rec.id, Box(x - r - 2, y - r - 2, x + r + 2, y + r + 2), ids[t])
    return p


def _counts(proj: Path) -> tuple[int, int]:
    from pollenstudio.project import Project

    with Project.open(proj) as p:
        return len(p.model_versions()), len(p.runs("train"))


def build(w: Path):
    import shutil

    from pollenstudio.engine.paths import default_model_path

    cases: list[tuple] = []
    facts: dict = {}
    grain = default_model_path()

    # I28-2: the model in use is an active version whose weights file was deleted
    gone = w / "gone"
    with _reviewed(gone, [["Poaceae", "Betula"], ["Poaceae", "Betula"], ["Poaceae"]]) as p:
        (gone / "models").mkdir(exist_ok=True)
        shutil.copy(grain, gone / "models" / "v1.safetensors")
        p.add_model_version("v1 spring", gone / "models" / "v1.safetensors", activate=True)
    (gone / "models" / "v1.safetensors").unlink()
    facts["gone"] = _counts(gone)
    cases.append(("I28-2 train when the model in use has lost its file", ["train", str(gone), "--device", "cpu"], 120,
                  _expect(False, "v1 spring", "missing")))
    cases.append(("I28-2 train a classifier from scratch", ["train", str(w / "tax"), "--base", "scratch", "--stage",
                                                            "classifier", "--device", "cpu"], 120,
                  _expect(False, "needs a detector")))

    # I28-3: a taxon-labelled project, nothing trained: the shipped grain model is in use
    tax = w / "tax"
    _reviewed(tax, [["Poaceae", "Betula", "Poaceae"], ["Betula", "Poaceae"], ["Poaceae", "Betula", "Betula"],
                    ["Poaceae", "Betula"]]).close()
    facts["tax"] = _counts(tax)
    if grain.name == "pollen-grain-n.safetensors":
        cases.append(("I28-3 eval a taxon-labelled project with the grain model", ["eval", str(tax), "--split", "all",
                                                                                   "--device", "cpu"], 180,
                      _expect(True, "class-agnostic (finding only)", "grain (any taxon)",
                              absent=("Traceback", "no taxon in common"))))

    # I28-4: two fields, each the only one of its taxon: nothing can be held out
    two = w / "two"
    _reviewed(two, [["Poaceae", "Poaceae"], ["Betula", "Betula"]]).close()
    cases.append(("I28-4 eval the validation split of a project that holds none out",
                  ["eval", str(two), "--device", "cpu"], 120, _expect(False, "no images to score", "--split all")))
    cases.append(("I28-4 train a project too small to score", ["train", str(two), "--device", "cpu", "--no-compare"],
                  240, _expect(True, "too few reviewed images to score")))

    def check() -> list[str]:
        problems = []
        for key in ("gone", "tax"):
            now = _counts(w / key)
            if now != facts[key]:
                problems.append(f"I28-2/3 {key}: model versions / training runs changed {facts[key]} -> {now}")
        return problems

    return cases, check
