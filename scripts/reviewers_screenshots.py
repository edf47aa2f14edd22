"""Screenshots of the several-reviewers screens (issue 30) on a synthetic project:

    QT_QPA_PLATFORM=offscreen python scripts/reviewers_screenshots.py docs/screenshots

reviewers-takeover-question.png (a second window opens an image someone is reviewing),
reviewers-read-only.png (it opened read-only), second-opinion.png (Review > Second opinion...)."""
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
for w in (ben, anna):
    w.close()
print("done")
