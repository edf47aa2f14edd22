"""Where a lab stands: version points, the grains-to-learn threshold and the taxa short of it."""

import numpy as np
import pytest

from pollenstudio.core.types import Box
from pollenstudio.engine.learning_progress import (
    LEARNT_AP50,
    MIN_GRAINS_TO_LEARN,
    grains_to_learn,
    taxa_needs,
    version_points,
)
from pollenstudio.project import Project


@pytest.fixture
def project(tmp_path):
    import cv2

    folder = tmp_path / "p"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"i{i}.png"), np.full((200, 200, 3), 100 + i, np.uint8))
    p = Project.create(folder)
    p.add_folder(folder)
    ids = p.ensure_categories(["Alnus", "Betula", "Corylus", "pollen"])
    imgs = [r.id for r in p.images()]
    grains = {"Alnus": 40, "Betula": 12, "Corylus": 3, "pollen": 5}
    made = {}
    for name, n in grains.items():
        made[name] = [p.add_annotation(imgs[k % 3], Box(k % 19 * 10, k // 19 * 10 % 190, k % 19 * 10 + 8,
                                                           k // 19 * 10 % 190 + 8), ids[name])
                      for k in range(n)]
    yield p, made
    p.close()


def _version(p, name, ann_ids, map50, per_class):
    return p.add_model_version(name, None, metrics={"map50": map50, "map50_95": map50 / 2, "per_class": per_class},
                               annotation_ids=ann_ids, summary={"grains": len(ann_ids), "val_images": 1})


def test_points_count_each_versions_grains_per_taxon(project):
    p, made = project
    _version(p, "v1", made["Alnus"][:10] + made["Betula"][:5], 0.2,
             [{"name": "Alnus", "ap50": 0.3, "n_gt": 2}, {"name": "Betula", "ap50": 0.1, "n_gt": 1}])
    _version(p, "v2", made["Alnus"][:25] + made["Betula"] + made["pollen"], 0.6,
             [{"name": "Alnus", "ap50": 0.7, "n_gt": 4}, {"name": "Betula", "ap50": 0.4, "n_gt": 2},
              {"name": "Corylus", "ap50": 0.0, "n_gt": 0}])
    p.add_model_version("imported", None)  # no metrics: not a point
    pts = version_points(p)
    assert [x.name for x in pts] == ["v1", "v2"]
    assert pts[0].grains == 15 and pts[0].per_taxon == {"Alnus": (10, 0.3), "Betula": (5, 0.1)}
    assert pts[1].grains == 42 and pts[1].per_taxon["Alnus"] == (25, 0.7)
    assert "pollen" not in pts[1].per_taxon  # unidentified grains are not a taxon to learn
    # Alnus reached AP 0.5 with 25 grains: this project's own figure replaces the default
    n, source = grains_to_learn(pts)
    assert n == 25 and "Alnus 25" in source
    threshold, _src, needs = taxa_needs(p, pts)
    assert threshold == 25
    by = {t.name: t for t in needs}
    assert set(by) == {"Alnus", "Betula", "Corylus"}
    assert (by["Corylus"].reviewed, by["Corylus"].more) == (3, 22)
    assert (by["Betula"].reviewed, by["Betula"].more, by["Betula"].ap50) == (12, 13, 0.4)
    assert by["Alnus"].more == 0 and by["Alnus"].learnt
    assert [t.name for t in needs] == ["Corylus", "Betula", "Alnus"]  # fewest grains first


def test_without_a_learnt_taxon_the_measured_default_is_used(project):
    p, made = project
    _version(p, "v1", made["Alnus"][:5], 0.1, [{"name": "Alnus", "ap50": LEARNT_AP50 - 0.01, "n_gt": 1}])
    n, source = grains_to_learn(version_points(p))
    assert n == MIN_GRAINS_TO_LEARN and "no taxon" in source
    threshold, _s, needs = taxa_needs(p)
    assert threshold == MIN_GRAINS_TO_LEARN
    assert {t.name: t.more for t in needs} == {"Corylus": MIN_GRAINS_TO_LEARN - 3, "Betula": MIN_GRAINS_TO_LEARN - 12,
                                               "Alnus": max(0, MIN_GRAINS_TO_LEARN - 40)}
