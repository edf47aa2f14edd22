"""Screenshots of the several-reviewers screens (issue 30) on a synthetic project:

    QT_QPA_PLATFORM=offscreen python scripts/reviewers_screenshots.py docs/screenshots

reviewers-takeover-question.png (a second window opens an image someone is reviewing),
reviewers-read-only.png (it opened read-only), second-opinion.png (Review > Second opinion...),
reviewers-conflict.png (an edit crossing a colleague's), reviewers-undo-conflict.png (an undo
that meets a grain a colleague changed since)."""
import sys, tempfile, pathlib
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication, QMessageBox
app = QApplication([])
from pollenstudio.gui.sample_project import make_review_project
from pollenstudio.gui.main_window import MainWindow
from pollenstudio.gui.reviewers import open_second_opinion
out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
tmp = pathlib.Path(tempfile.mkdtemp())
proj = make_review_project(tmp / "proj", n_images=3, seed=1, width=640, height=480, n_grains=(4, 5)); proj.close()

def settle(ms=400):
    import time
    t = time.time()
    while time.time() - t < ms / 1000:
        app.processEvents()

def window(name):
    s = QSettings(str(tmp / f"s-{name}.ini"), QSettings.Format.IniFormat)
    s.setValue("review/reviewer_name", name)
    w = MainWindow(s); w.resize(1400, 860); w.show()
    w.open_project(str(tmp / "proj")); settle(800)
    return w

asked = []
def exec_(box):
    box.show(); box.adjustSize(); settle(200)
    box.grab().save(str(out / "reviewers-takeover-question.png")); asked.append(box.text())
    next(b for b in box.buttons() if b.text() == "Open read-only").click()
    return 0
QMessageBox.exec = exec_

anna = window("Anna")
props = [a for a in anna.ctl.annotations() if a.status.value == "proposed"]
for a in props[:3]:
    anna.ctl.select(a.id); anna.ctl.accept()
settle(300)
ben = window("Ben")
settle(1500)
ben.grab().save(str(out / "reviewers-read-only.png"))
print("asked:", asked)
# a second opinion: Ben checks Anna's names
dlg = open_second_opinion(ben); settle(300)
dlg.confirm(); settle(200)
dlg.grab().save(str(out / "second-opinion.png"))
dlg.close(); settle(200)
ben.close(); settle(300)

# two people change one grain: a colleague (another window, here a Project object) moves a
# box on Anna's image before her window has read it; Anna's nudge is refused in words
from pollenstudio.core.types import Box
from pollenstudio.project import Project
from pollenstudio.project import reviewers as rv

other = Project.open(tmp / "proj")
rv.set_reviewer(other, "Ben")
iid = anna.ctl.image_id
aid = next(a.id for a in anna.ctl.annotations() if a.status.value == "proposed")
rv.claim(other, iid, takeover=True)
b = other.annotation(aid).box
other.move_annotation(aid, Box(b.x1 + 6, b.y1 + 4, b.x2 + 6, b.y2 + 4))
rv.release(other)
anna.ctl.select(aid)
anna.ctl.nudge(1, 0)  # before her window polled: the edit crosses Ben's
settle(300)
boxes = [w for w in app.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
boxes[-1].grab().save(str(out / "reviewers-conflict.png")); print("conflict:", boxes[-1].text())
boxes[-1].close(); settle(1500)  # the poll brings Ben's version

# an undo that meets a grain someone changed since
rv.claim(anna.ctl.project, iid)
aid2 = next(a.id for a in anna.ctl.annotations() if a.id != aid)
anna.ctl.select(aid2)
anna.ctl.nudge(2, 0)
rv.claim(other, iid, takeover=True)
b = other.annotation(aid2).box
other.move_annotation(aid2, Box(b.x1 + 5, b.y1, b.x2 + 5, b.y2))
rv.release(other)
settle(1500)
rv.claim(anna.ctl.project, iid)
anna.ctl.undo(); settle(300)
boxes = [w for w in app.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
boxes[-1].grab().save(str(out / "reviewers-undo-conflict.png")); print("undo:", boxes[-1].text())
other.close()
anna.close()
print("done")
