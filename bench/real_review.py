"""A palynologist's first review on real material, reproducibly: review one quarter, retrain
with Auto, detect the other three quarters (issue 27's real-material check).

    python bench/real_review.py propose NAME IMAGE [--level L] [--region x0 y0 x1 y1] [--work DIR]
    # look at DIR/NAME/review_sheet.png, write the decisions (see below), then
    python bench/real_review.py apply NAME --decisions bench/results/real_review_NAME.json [--work DIR]

(A JPEG-tiled slide scan needs a JPEG codec for tifffile: ``pip install imagecodecs``.)

``propose`` cuts IMAGE (a micrograph, or level L of a pyramidal slide scan, optionally a
region of it, in that level's pixels) into four quarters, makes a project of them and detects
with the shipped grain model through the CLI (``pollenstudio detect``); it writes a numbered
contact sheet of every proposal on the review quarter (the top-left one) and, for the other
three quarters, a sheet of their 50 highest-scoring proposals.

The decisions file is what the reviewer (a person, by eye on the sheet) decided:
``{"accept": {"3": "palynomorph", ...}, "reject": [1, 2, 4, ...], "add": [[x1, y1, x2, y2, "taxon"], ...]}``
(numbers from the review sheet; proposals in neither list are rejected too: a palynologist
finishing an image decides every box; ``add`` = grains the model missed, in the quarter's pixels).

``apply`` records the decisions as a person would in the app (accept/relabel, reject, draw,
mark the quarter finished), runs ``pollenstudio train PROJECT --activate`` (the Auto recipe,
from the model in use), detects the three unseen quarters again, and prints boxes per
megapixel before/after, the proposals withdrawn as "not pollen", and a sheet of the 50
highest-scoring boxes after (count the palynomorphs on both sheets by eye).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUARTERS = ("q0_review", "q1", "q2", "q3")


def _cli(*args) -> str:
    r = subprocess.run([sys.executable, "-m", "pollenstudio", *map(str, args)], capture_output=True, text=True)
    if r.returncode not in (0,):
        raise SystemExit(f"pollenstudio {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def read_source(path: Path, level: int, region):
    if path.suffix.lower() in (".tif", ".tiff") and level:
        import tifffile

        with tifffile.TiffFile(path) as t:
            img = t.series[0].levels[level].asarray()
    else:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
    if region:
        x0, y0, x1, y1 = region
        img = img[y0:y1, x0:x1]
    return np.ascontiguousarray(img)


def sheet(img_by_name, items, out: Path, cols: int = 10, cell: int = 112) -> None:
    """A numbered contact sheet: items = [(number, image name, box, caption)]."""
    rows = max(1, (len(items) + cols - 1) // cols)
    canvas = np.full((rows * (cell + 18), cols * cell, 3), 255, np.uint8)
    for k, (num, name, box, cap) in enumerate(items):
        img = img_by_name[name]
        x1, y1, x2, y2 = box
        side = max(x2 - x1, y2 - y1) * 1.3 + 4
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        c, d = int(min(img.shape[1], cx + side / 2)), int(min(img.shape[0], cy + side / 2))
        crop = img[b:d, a:c]
        if crop.size == 0:
            continue
        s = cell / max(crop.shape[:2])
        crop = cv2.resize(crop, (max(1, int(crop.shape[1] * s)), max(1, int(crop.shape[0] * s))))
        r, q = divmod(k, cols)
        y0, x0 = r * (cell + 18), q * cell
        canvas[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        cv2.putText(canvas, f"{num} {cap}", (x0 + 2, y0 + cell + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 160), 1)
    cv2.imwrite(str(out), canvas[:, :, ::-1])


def proposals(proj, rec):
    from pollenstudio.core.types import AnnotationStatus

    return [a for a in proj.annotations(rec.id) if a.status is AnnotationStatus.PROPOSED]


def top_sheet(proj, names, imgs, out: Path, n: int = 50):
    items = []
    for rec in proj.images():
        if Path(rec.path).stem in names:
            items += [(a.score or 0.0, Path(rec.path).stem, a) for a in proposals(proj, rec)]
    items.sort(key=lambda t: -t[0])
    items = items[:n]
    sheet(imgs, [(i + 1, nm, (a.box.x1, a.box.y1, a.box.x2, a.box.y2), f"{s:.2f}") for i, (s, nm, a) in enumerate(items)], out)
    return len(items)


def density(proj, names) -> tuple[int, float]:
    n = mp = 0
    for rec in proj.images():
        if Path(rec.path).stem in names:
            n += len(proposals(proj, rec))
            mp += rec.width * rec.height / 1e6
    return n, n / max(mp, 1e-9)


def main() -> int:
    from pollenstudio.project import Project

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["propose", "apply", "redetect", "retrain"])
    ap.add_argument("name")
    ap.add_argument("image", nargs="?")
    ap.add_argument("--level", type=int, default=0)
    ap.add_argument("--region", type=int, nargs=4)
    ap.add_argument("--decisions")
    ap.add_argument("--work", default=str(ROOT / "build" / "real_review"))
    a = ap.parse_args()
    work = Path(a.work) / a.name
    proj_dir = work / "proj"
    if a.step == "propose":
        img = read_source(Path(a.image), a.level, a.region)
        work.mkdir(parents=True, exist_ok=True)
        (proj_dir / "images").mkdir(parents=True, exist_ok=True)
        H, W = img.shape[:2]
        cuts = [(0, 0, W // 2, H // 2), (W // 2, 0, W, H // 2), (0, H // 2, W // 2, H), (W // 2, H // 2, W, H)]
        for name, (x0, y0, x1, y1) in zip(QUARTERS, cuts):
            cv2.imwrite(str(proj_dir / "images" / f"{name}.png"), img[y0:y1, x0:x1, ::-1])
        _cli("import", proj_dir, proj_dir / "images")
        print(_cli("detect", proj_dir, "--quiet"))
    proj = Project.open(proj_dir)
    imgs = {Path(r.path).stem: cv2.imread(str(proj.image_path(r)), cv2.IMREAD_COLOR)[:, :, ::-1] for r in proj.images()}
    review = next(r for r in proj.images() if Path(r.path).stem == QUARTERS[0])
    if a.step == "propose":
        props = sorted(proposals(proj, review), key=lambda x: -(x.score or 0))
        index = {i + 1: p.id for i, p in enumerate(props)}
        (work / "review_index.json").write_text(json.dumps(index))
        sheet(imgs, [(i, QUARTERS[0], (p.box.x1, p.box.y1, p.box.x2, p.box.y2), f"{p.score:.2f}")
                     for i, p in ((i, proj.annotation(aid)) for i, aid in index.items())], work / "review_sheet.png")
        n, per = density(proj, QUARTERS[1:])
        top_sheet(proj, QUARTERS[1:], imgs, work / "unseen_top50_before.png")
        print(f"review quarter: {len(props)} proposals ({review.width}x{review.height}); unseen quarters: {n} proposals, "
              f"{per:.1f} per megapixel; sheets in {work}")
        return 0
    if a.step in ("redetect", "retrain"):  # after a change of the app's naming rules or defaults
        before_n = json.loads((work / "before.json").read_text())["n"]
        proj.close()
        if a.step == "retrain":  # the same decisions, a new Auto version with today's defaults
            print(_cli("train", proj_dir, "--activate", "--no-compare"))
        print(_cli("detect", proj_dir, "--quiet"))
        proj = Project.open(proj_dir)
        return report(proj, imgs, work, before_n, None)
    dec = json.loads(Path(a.decisions).read_text())
    index = {int(k): v for k, v in json.loads((work / "review_index.json").read_text()).items()}
    before_n, before_per = density(proj, QUARTERS[1:])
    (work / "before.json").write_text(json.dumps({"n": before_n}))
    accept = {int(k): v for k, v in dec.get("accept", {}).items()}
    cats = {c.name: c.id for c in proj.categories()}
    for num, aid in index.items():
        if num in accept:
            taxon = accept[num]
            if taxon not in cats:
                cats[taxon] = proj.add_category(taxon)
            proj.relabel(aid, cats[taxon])
        else:
            proj.reject(aid)
    for x1, y1, x2, y2, taxon in dec.get("add", []):
        from pollenstudio.core.types import Box

        if taxon not in cats:
            cats[taxon] = proj.add_category(taxon)
        proj.add_annotation(review.id, Box(x1, y1, x2, y2), cats[taxon])
    proj.set_image_status(review.id, "reviewed")
    proj.close()
    print(_cli("train", proj_dir, "--activate", "--no-compare"))
    print(_cli("detect", proj_dir, "--quiet"))
    proj = Project.open(proj_dir)
    report(proj, imgs, work, before_n, dec)
    return 0


def report(proj, imgs, work: Path, before_n: int, dec) -> int:
    from pollenstudio.core.types import WITHDRAWN_BY_MODEL

    after_n, after_per = density(proj, QUARTERS[1:])
    mp = sum(r.width * r.height for r in proj.images() if Path(r.path).stem in QUARTERS[1:]) / 1e6
    withdrawn = sum(a.author == WITHDRAWN_BY_MODEL for r in proj.images() if Path(r.path).stem in QUARTERS[1:]
                    for a in proj.annotations(r.id))
    top_sheet(proj, QUARTERS[1:], imgs, work / "unseen_top50_after.png")
    print(f"unseen quarters: before {before_n} proposals ({before_n / mp:.1f} per MP), after {after_n} "
          f"({after_per:.1f} per MP), {withdrawn} withdrawn as not pollen"
          + (f"; reviewed: {len(dec.get('accept', {}))} accepted, {len(dec.get('reject', []))} rejected, "
             f"{len(dec.get('add', []))} drawn" if dec else "") + f"; sheets in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
