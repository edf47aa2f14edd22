"""The review panel's reference strip (issue 27): selecting a box shows the project's reviewed
grains most like it (crops, taxa) when the model in use keeps them; 1-9 still relabels."""

import numpy as np
import pytest
from PySide6.QtCore import Qt
from gui_windows import open_main_window

from pollenstudio.engine.classify import EmbedSpec, embed, embedder_file

pytestmark = pytest.mark.skipif(not embedder_file("pollen").is_file(), reason="the shipped embedding is not installed")


def _version_with_exemplars(project_dir, tmp_path):
    """A tiny detector + a classifier (pollen embedding) fitted on the project's grains, with
    their annotation ids: what a classifier version of this project stores."""
    from pollenstudio.core.imageio import read_image
    from pollenstudio.detector.checkpoint import save_checkpoint
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model
    from pollenstudio.engine.classify import TaxonClassifier
    from pollenstudio.project import Project

    p = Project.open(project_dir)
    names = {c.id: c.name for c in p.categories()}
    E, y, ids, taxa = [], [], [], []
    spec = EmbedSpec(features="pollen", views=1)
    for rec in p.images():
        img = read_image(p.image_path(rec))
        anns = p.annotations(rec.id)
        E.append(embed(None, img, np.array([[a.box.x1, a.box.y1, a.box.x2, a.box.y2] for a in anns]), spec))
        for a in anns:
            t = names[a.category_id]
            if t not in taxa:
                taxa.append(t)
            y.append(taxa.index(t))
            ids.append(a.id)
    p.close()
    clf = TaxonClassifier.fit(np.concatenate(E), y, taxa, spec, "prototype", ids=ids)
    cfg = ModelConfig.tiny("base", nc=1, class_names=["pollen"], imgsz=64)
    return save_checkpoint(tmp_path / "v.safetensors", build_model(cfg), cfg, extra=clf.to_extra()), ids


def test_selected_grain_shows_its_most_similar_reviewed_grains(qtbot, settings, project_dir, tmp_path):
    weights, ids = _version_with_exemplars(project_dir, tmp_path)
    win = open_main_window(qtbot, settings, project_dir)
    win.models.choose_model(str(weights))
    qtbot.waitUntil(lambda: win.models.model_name() is not None, timeout=10000)
    first = win.ctl.annotations()[0]
    win.ctl.select(first.id)
    strip = win.topk.similar
    qtbot.waitUntil(lambda: len(strip.buttons) > 0, timeout=30000)
    shown = [it.ann_id for it in win.similar.items]
    assert first.id not in shown and set(shown) <= set(ids)
    assert all(it.crop is not None and it.crop.shape[2] == 3 for it in win.similar.items)
    sims = [it.similarity for it in win.similar.items]
    assert sims == sorted(sims, reverse=True)
    win.grab().save(str(tmp_path / "similar.png"))
    # the strip never takes the keyboard: a digit still relabels the selected box
    assert all(b.focusPolicy() == Qt.FocusPolicy.NoFocus for b in strip.buttons)
    # clicking a reference grain shows it (on its own image)
    target = win.similar.items[0]
    qtbot.mouseClick(strip.buttons[0], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.ctl.selected == target.ann_id, timeout=10000)
    win.close()


def test_no_reference_strip_without_a_classifier(qtbot, window):
    a = window.ctl.annotations()[0]
    window.ctl.select(a.id)
    qtbot.waitUntil(lambda: not window.similar.jobs.busy("nearest"), timeout=30000)
    assert window.topk.similar.buttons == [] and window.similar.note == ""
    assert not window.topk.similar.title.isVisibleTo(window.topk)
