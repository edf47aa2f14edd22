"""File > Find missing images...: search, relink what was found, remove the rest (undoable)."""

import os


def test_find_missing_images_relinks_and_removes(qtbot, window, project_dir, tmp_path):
    from pollenstudio.gui.relink_dialog import RelinkDialog

    p = window.ctl.project
    recs = p.images()
    moved = tmp_path / "moved"
    moved.mkdir()
    first = p.image_path(recs[0])
    os.rename(first, moved / "renamed.png")  # found again by content
    os.unlink(p.image_path(recs[1]))  # gone for good
    assert len(p.missing_images()) == 2
    assert window.act_find_missing.text() == "Find missing images..."

    dlg = RelinkDialog(p, window)
    qtbot.addWidget(dlg)
    dlg.folders.addItem(str(moved))
    dlg.search()
    qtbot.waitUntil(lambda: dlg.report is not None, timeout=10000)
    assert "1 by content" in dlg.text.toPlainText()
    assert dlg.relink_button.isEnabled()
    dlg.relink()
    assert p.image_path(recs[0].id) == (moved / "renamed.png").resolve()
    assert [r.id for r in p.missing_images()] == [recs[1].id]

    n_ann = p.annotation_count()
    gone = len(p.annotations(recs[1].id))
    assert dlg.remove_missing(confirm=False) == 1
    assert p.image_count() == len(recs) - 1 and p.annotation_count() == n_ann - gone
    qtbot.wait(50)  # the views reload their lists from the "images" event without an error
    p.undo()  # the removed image comes back with its annotations
    assert p.image_count() == len(recs) and p.annotation_count() == n_ann


def test_remove_images_from_the_image_list_is_undoable(qtbot, window):
    from pollenstudio.gui.relink_dialog import remove_images

    p = window.ctl.project
    n_img, n_ann = p.image_count(), p.annotation_count()
    assert window.act_remove_images.text() == "Remove from project..."
    victim = p.images()[-1].id
    assert remove_images(window, [victim], confirm=False) == 1
    qtbot.waitUntil(lambda: window.images.model.total() == n_img - 1, timeout=5000)
    window.ctl.undo()  # Edit > Undo
    qtbot.waitUntil(lambda: window.images.model.total() == n_img, timeout=5000)
    assert p.image_count() == n_img and p.annotation_count() == n_ann
