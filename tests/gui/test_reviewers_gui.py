"""Two windows on one project (issue 30): the second opens the first's image read-only or
takes it over after a question, each sees the other's decisions without reopening, and
Review > Second opinion... records confirmations and disputes."""

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox
from gui_windows import open_main_window

from pollenstudio.core.types import AnnotationStatus
from pollenstudio.project import opinions as op
from pollenstudio.project import reviewers as rv


def open_window(qtbot, tmp_path, project_dir, name):
    settings = QSettings(str(tmp_path / f"settings-{name}.ini"), QSettings.Format.IniFormat)
    settings.setValue("review/reviewer_name", name)
    win = open_main_window(qtbot, settings, project_dir)
    qtbot.waitUntil(lambda: not win.ctl.reads_pending(), timeout=5000)
    return win


@pytest.fixture
def answer(monkeypatch):
    """Answer the takeover question with the button named in ``answer.text``."""
    class Answer:
        text = "Open read-only"
        asked: list = []

    def exec_(box):
        Answer.asked.append((box.text(), box.informativeText()))
        next(b for b in box.buttons() if b.text() == Answer.text).click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", exec_)
    return Answer


def close_all(qtbot, *wins):
    """Close after the windows' background reads (counts, queue) are over."""
    for w in wins:
        qtbot.waitUntil(lambda w=w: not w.ctl.reads_pending(), timeout=5000)
    qtbot.wait(300)
    for w in wins:
        w.close()


def proposals(win):
    return [a for a in win.ctl.annotations() if a.status is AnnotationStatus.PROPOSED]


def test_second_window_is_read_only_sees_edits_and_takes_over(qtbot, tmp_path, project_dir, answer):
    anna = open_window(qtbot, tmp_path, project_dir, "Anna")
    assert anna.ctl.project.reviewer == "Anna" and not anna.reviewers.read_only
    ben = open_window(qtbot, tmp_path, project_dir, "Ben")
    assert ben.ctl.image_id == anna.ctl.image_id  # both start on the same image
    qtbot.waitUntil(lambda: ben.reviewers.read_only, timeout=3000)
    qtbot.waitUntil(lambda: bool(answer.asked), timeout=3000)
    text, more = answer.asked[0]
    assert "Being reviewed by Anna since " in text and "take it over" in more
    assert ben.reviewers.banner.isVisible() and "Read-only: Being reviewed by Anna" in ben.reviewers.banner.text()
    assert ben.act_take_over.isEnabled()

    # Anna accepts a grain: Ben's window shows it within the poll interval, without reopening
    target = proposals(anna)[0]
    anna.ctl.select(target.id)
    anna.ctl.accept()
    qtbot.waitUntil(lambda: next(a for a in ben.ctl.annotations() if a.id == target.id).status
                    is AnnotationStatus.ACCEPTED, timeout=3000)
    assert next(a for a in ben.ctl.annotations() if a.id == target.id).author == "Anna"

    # Ben's own edit on Anna's image is refused in words, nothing changes
    errors = []
    ben.ctl.errorRaised.connect(lambda title, msg: errors.append(msg))
    other = proposals(ben)[0]
    ben.ctl.select(other.id)
    ben.ctl.accept()
    assert errors and "Being reviewed by Anna" in errors[-1]
    assert ben.ctl.project.annotation(other.id).status is AnnotationStatus.PROPOSED

    # Ben takes over: his edit goes through, Anna's window turns read-only
    ben.act_take_over.trigger()
    assert not ben.reviewers.read_only and not ben.reviewers.banner.isVisible()
    ben.ctl.select(other.id)
    ben.ctl.accept()
    assert ben.ctl.project.annotation(other.id).author == "Ben"
    qtbot.waitUntil(lambda: anna.reviewers.read_only, timeout=3000)
    assert "Being reviewed by Ben" in anna.reviewers.banner.text()
    qtbot.waitUntil(lambda: next(a for a in anna.ctl.annotations() if a.id == other.id).status
                    is AnnotationStatus.ACCEPTED, timeout=3000)
    close_all(qtbot, ben, anna)


def test_takeover_answer_in_the_question(qtbot, tmp_path, project_dir, answer):
    anna = open_window(qtbot, tmp_path, project_dir, "Anna")
    answer.text = "Take over"
    ben = open_window(qtbot, tmp_path, project_dir, "Ben")
    qtbot.waitUntil(lambda: bool(answer.asked), timeout=3000)
    assert not ben.reviewers.read_only
    qtbot.waitUntil(lambda: anna.reviewers.read_only, timeout=3000)
    close_all(qtbot, ben, anna)


def test_second_opinion_pass_records_confirm_and_dispute(qtbot, tmp_path, project_dir, answer):
    from pollenstudio.gui.reviewers import open_second_opinion

    anna = open_window(qtbot, tmp_path, project_dir, "Anna")
    ids = [a.id for a in proposals(anna)[:2]]
    for aid in ids:
        anna.ctl.select(aid)
        anna.ctl.accept()
    ben = open_window(qtbot, tmp_path, project_dir, "Ben")
    dlg = open_second_opinion(ben)
    assert [a.id for a in dlg.queue] == ids and "Named by <b>Anna</b>" in dlg.who.text()
    assert not dlg.picture.pixmap().isNull()
    dlg.confirm()
    dlg.taxa.setCurrentIndex(dlg.taxa.findData(next(c.id for c in dlg.categories
                                                    if c.id != dlg.current().category_id)))
    dlg.dispute()
    assert dlg.current() is None and dlg.name.text() == "Nothing left to check"
    got = op.opinions(ben.ctl.project)
    assert [(o.annotation_id, o.confirms, o.reviewer) for o in got] == [(ids[0], True, "Ben"), (ids[1], False, "Ben")]
    assert "1 of 2 confirmed = 50 %" in dlg.agreement.text()
    dlg.close()
    close_all(qtbot, ben, anna)


def test_read_only_window_takes_the_image_when_the_holder_moves_on(qtbot, tmp_path, project_dir, answer):
    anna = open_window(qtbot, tmp_path, project_dir, "Anna")
    ben = open_window(qtbot, tmp_path, project_dir, "Ben")
    qtbot.waitUntil(lambda: ben.reviewers.read_only, timeout=3000)
    first = anna.ctl.image_id
    anna.ctl.step_image(1)  # Anna moves on: her claim goes with her
    assert anna.ctl.image_id != first
    ben.reviewers.heartbeat()  # every 15 s
    assert not ben.reviewers.read_only and not ben.reviewers.banner.isVisible()
    assert rv.claim_of(anna.ctl.project, first).reviewer == "Ben"
    close_all(qtbot, ben, anna)


def test_on_a_server_project_edits_arrive_by_notify(qtbot, tmp_path, project_dir, pg_url, answer):
    """The same walk on PostgreSQL: the window listens (LISTEN/NOTIFY on a thread)."""
    import uuid

    import psycopg

    from pollenstudio.project.server_copy import push

    url = f"{pg_url}{'&' if '?' in pg_url else '?'}project=t{uuid.uuid4().hex[:12]}"
    push(project_dir, url)
    try:
        anna = open_window(qtbot, tmp_path, url, "Anna")
        ben = open_window(qtbot, tmp_path, url, "Ben")
        assert ben.reviewers._thread is not None and ben.reviewers._feed is None  # listening, not polling
        qtbot.waitUntil(lambda: ben.reviewers.read_only, timeout=3000)
        target = proposals(anna)[0]
        anna.ctl.select(target.id)
        anna.ctl.accept()
        qtbot.waitUntil(lambda: next(a for a in ben.ctl.annotations() if a.id == target.id).status
                        is AnnotationStatus.ACCEPTED, timeout=3000)
        ben.act_take_over.trigger()
        qtbot.waitUntil(lambda: anna.reviewers.read_only, timeout=3000)
        close_all(qtbot, ben, anna)
    finally:
        from pollenstudio.project.dialect import parse_server_url

        with psycopg.connect(pg_url, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{parse_server_url(url).project}" CASCADE')


def test_crossing_edit_is_refused_in_words_and_the_window_shows_theirs(qtbot, tmp_path, project_dir, answer):
    from pollenstudio.core.types import Box
    from pollenstudio.project import Project

    anna = open_window(qtbot, tmp_path, project_dir, "Anna")
    ben = Project.open(project_dir)  # a colleague's window, before Anna's has polled
    rv.set_reviewer(ben, "Ben")
    iid = anna.ctl.image_id
    aid = proposals(anna)[0].id
    rv.claim(ben, iid, takeover=True)
    b = ben.annotation(aid).box
    theirs = ben.move_annotation(aid, Box(b.x1 - 6, b.y1 - 4, b.x2 - 6, b.y2 - 4)).box
    assert theirs != b
    rv.release(ben)
    errors = []
    anna.ctl.errorRaised.connect(lambda title, msg: errors.append(msg))
    anna.ctl.select(aid)
    anna.ctl.nudge(1, 0)
    assert errors and errors[-1].startswith("Ben changed this grain ") and "your move was not applied" in errors[-1]
    assert ben.annotation(aid).box == theirs  # not overwritten
    assert next(a for a in anna.ctl.annotations() if a.id == aid).box == theirs  # shown at once
    ben.close()
    close_all(qtbot, anna)
