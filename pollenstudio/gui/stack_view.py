"""Focusing through a focal stack in the review view (issue 19).

A stack is one image with planes. :class:`StackController` keeps which view of the current
stack is on the canvas - a plane (0-based here, 1-based on screen), or the EDF all-in-focus
composite - reads views in a worker (a view small enough is read on the GUI thread), keeps
recent views in a :class:`PlaneCache` bounded in bytes, and reads the planes next to the one
shown ahead of time, so stepping through focus swaps pixels without a read. The canvas keeps
its zoom, pan and boxes while the planes change (``Canvas.swap_image``).

Keys (``shortcuts.py``): Page Up / Page Down (and Ctrl+wheel on the canvas) step a plane,
Home goes to the best-focus plane, End toggles the EDF view, Z sets the selected box's
plane to the plane shown (undoable). Tab / the review queue focus a box's own plane.
:class:`StackBar` is the plane slider with the plane number and the two view buttons.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QLabel, QSlider, QToolBar, QToolButton, QWidget

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.core.words import plural
from pollenstudio.gui.pyramid import DisplayImage, SlideImage, shared_slide

EDF = "edf"
CACHE_BYTES = 768 << 20  # recent views of stacks kept for instant focusing
SYNC_VIEW_PIXELS = 1_500_000  # a plane this small is read on the GUI thread (a few ms)


class PlaneCache:
    """Least-recently-used views ((image id, view) -> DisplayImage), bounded in bytes.
    Thread-safe: the prefetch worker fills it while the GUI thread reads it."""

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _size(img: DisplayImage) -> int:
        n = img.nbytes
        index = getattr(img, "plane_index", None)
        return n + (index.nbytes if index is not None else 0)

    def get(self, key):
        with self._lock:
            img = self._items.get(key)
            if img is not None:
                self._items.move_to_end(key)
            return img

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key, img: DisplayImage) -> None:
        size = self._size(img)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= self._size(old)
            if size > self.max_bytes:
                return
            self._items[key] = img
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= self._size(dropped)

    def drop_image(self, image_id: int) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == image_id]:
                self._bytes -= self._size(self._items.pop(key))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes


def read_view(project, rec, view) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels of one view of a stack: a plane index, "best" (resolved to the sharpest plane's
    pixels) or "edf" (with its per-pixel plane index)."""
    with project.open_stack(rec) as st:
        if view == EDF:
            from pollenstudio.core.stack import edf_composite

            return edf_composite(st.planes(), return_index=True)
        return st.view(view), None


def slide_of(project, rec):
    """The open whole-slide file of an image (read by region), or None when it is read whole."""
    return shared_slide(project.image_path(rec), project.plane_paths(rec))


def load_view(token, project, rec, view) -> DisplayImage:
    """Worker job: read one view and build its display pyramid; a view of a whole-slide file
    is a ``SlideImage`` (its overview read from the smallest level, the rest by region)."""
    token.check()
    name = f"{Path(rec.path).name} ({'EDF' if view == EDF else f'plane {int(view) + 1}/{rec.planes}'})"
    slide = slide_of(project, rec)
    if slide is not None:
        return SlideImage(slide, view=view, name=name, token=token, path=str(project.image_path(rec)))
    arr, index = read_view(project, rec, view)
    token.check()
    img = DisplayImage.from_array(arr, name=name, token=token)
    img.plane_index = index  # EDF: which plane every pixel came from (a drawn box's plane)
    return img


def best_plane_job(token, project, rec) -> int:
    from pollenstudio.core.stack import best_plane, focus_measure

    slide = slide_of(project, rec)
    if slide is not None:  # judged on the slide's small levels: no plane is read whole
        scores = []
        for k in range(slide.planes):
            token.check()
            scores.append(focus_measure(slide.thumbnail(1024, plane=k)))
        return int(np.argmax(scores))
    with project.open_stack(rec) as st:
        return best_plane(st)


def prefetch_job(token, project, rec, views, cache: PlaneCache) -> int:
    """Read the views next to the one shown into the cache (newest request wins)."""
    done = 0
    for view in views:
        token.check()
        if (rec.id, view) in cache:
            continue
        cache.put((rec.id, view), load_view(token, project, rec, view))
        done += 1
    return done


def plane_of_box(index: np.ndarray | None, box) -> int | None:
    """The plane most pixels of a box's central part come from in an EDF view."""
    if index is None:
        return None
    h, w = index.shape[:2]
    cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    hw, hh = max(1.0, box.width * 0.35), max(1.0, box.height * 0.35)
    x1, x2 = int(max(0, cx - hw)), int(min(w, cx + hw + 1))
    y1, y2 = int(max(0, cy - hh)), int(min(h, cy + hh + 1))
    if x2 <= x1 or y2 <= y1:
        return None
    return int(np.bincount(index[y1:y2, x1:x2].ravel()).argmax())


def pixel_source(project, rec, view):
    """What explanation / click-to-box jobs read: the file path of a single image, or a
    ``(path, plane_files, view)`` triple for the view of a stack on screen."""
    if rec is None or not rec.is_stack:
        return str(project.image_path(rec))
    files = [str(f) for f in project.plane_paths(rec)] if rec.plane_files else None
    return (str(project.image_path(rec)), files, EDF if view is None else view)


def _source_slide(src):
    """The open whole-slide file behind a :func:`pixel_source` value and the view to read
    (None when the source is read whole)."""
    if isinstance(src, tuple):
        path, files, view = src
        return shared_slide(path, files), view
    return shared_slide(src), 0


def source_size(src) -> tuple[int, int] | None:
    """(width, height) of a whole-slide source without reading pixels; None for others."""
    slide, _view = _source_slide(src)
    return None if slide is None else (slide.width, slide.height)


def read_source_window(src, rect=None, max_side: int | None = None):
    """Pixels of ``rect`` (x0, y0, x1, y1 image px; None: the whole image) of a
    :func:`pixel_source` value: ``(array, (x0, y0, x1, y1) covered, (width, height) of the
    image)``. A whole-slide file is read by region, from the coarsest level that still
    gives ``max_side`` px across (level 0 without it), so a map or a click never decodes
    the slide whole; another image is read whole and cut, as before (``max_side`` is then
    the caller's to apply)."""
    slide, view = _source_slide(src)
    if slide is None:
        img = read_source(src)
        h, w = img.shape[:2]
        if rect is None:
            return img, (0, 0, w, h), (w, h)
        x0, y0, x1, y1 = (int(round(v)) for v in rect)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        return img[y0:y1, x0:x1], (x0, y0, x1, y1), (w, h)
    W, H = slide.width, slide.height
    x0, y0, x1, y1 = rect if rect is not None else (0, 0, W, H)
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(W), x1), min(float(H), y1)
    level = 0
    if max_side:
        level = slide.level_for(max(1.0, max(x1 - x0, y1 - y0) / max_side))
    arr, (rx, ry, rw, rh) = slide.region0(x0, y0, x1, y1, level, view)
    if arr is None:
        raise PollenStudioError(f"{slide.name}: nothing of the image at ({x0:.0f}, {y0:.0f})")
    return arr, (int(round(rx)), int(round(ry)), int(round(rx + rw)), int(round(ry + rh))), (W, H)


def read_source(src) -> np.ndarray:
    """Pixels of a :func:`pixel_source` value."""
    if isinstance(src, tuple):
        from pollenstudio.core.stack import FocalStack

        path, files, view = src
        with FocalStack.open(path, files) as st:
            return st.view(view)
    from pollenstudio.core.imageio import read_image

    return read_image(src)


class StackController(QObject):
    """The view of the current stack (see the module docstring)."""

    planeChanged = Signal()  # the view (plane / EDF) or the stack changed: bars update
    planeImageReady = Signal(object)  # DisplayImage of a new view of the same stack (swap, keep the view)

    def __init__(self, review, parent: QObject | None = None):
        super().__init__(parent)
        self.review = review
        self.view: int | str | None = None  # plane index or EDF; None: the image is not a stack
        self.cache = PlaneCache()
        self.best: dict[int, int] = {}  # image id -> best-focus plane (read once)
        self.edf_index: np.ndarray | None = None  # the EDF view's plane map, for boxes drawn on it
        self.shown = None  # the DisplayImage / SlideImage of the view on screen
        self.timings: list[tuple[str, float]] = []  # (what, seconds) of recent view changes (bench)
        self._announced = False  # a "Reading ..." note is in the status bar
        from pollenstudio.gui.workers import JobRunner

        self.jobs = JobRunner(self)

    # -- state ----------------------------------------------------------------------------
    @property
    def record(self):
        rec = self.review.image_record
        return rec if rec is not None and rec.is_stack else None

    @property
    def planes(self) -> int:
        rec = self.record
        return rec.planes if rec is not None else 1

    def plane_shown(self) -> int | None:
        """The plane on screen (None: EDF, or not a stack)."""
        return self.view if isinstance(self.view, int) else None

    def label(self) -> str:
        if self.record is None:
            return ""
        if self.view == EDF:
            return f"EDF (all planes in focus) · {plural(self.planes, 'plane')}"
        best = self.best.get(self.record.id)
        star = " · best focus" if best == self.view else ""
        where = f"{int(self.view) + 1} / {self.planes}"
        name = self.plane_name(int(self.view))
        return f"Plane {name} ({where}){star}" if name != str(int(self.view) + 1) else f"Plane {where}{star}"

    def plane_name(self, plane: int) -> str:
        """A plane as its files name it (``z-3`` for ``..._z-3.png``, ``core.stack.plane_labels``),
        else its 1-based number."""
        from pollenstudio.core.stack import plane_labels

        rec = self.record
        names = plane_labels(rec.plane_files) if rec is not None else None
        return names[plane] if names and 0 <= plane < len(names) else str(plane + 1)

    # -- opening a stack ----------------------------------------------------------------------
    def open(self, rec) -> None:
        """A stack was opened: show its middle plane (or EDF, when EDF was on)."""
        self.jobs.cancel("prefetch")
        self.edf_index = None
        self.view = EDF if self.view == EDF else rec.planes // 2
        self.planeChanged.emit()
        self._load(rec, self.view, first=True)

    def leave(self) -> None:
        """The image shown is not a stack (any more)."""
        self.jobs.cancel("prefetch")
        if self.view is not None:
            self.view = None if self.view != EDF else EDF  # EDF stays on for the next stack
            self.planeChanged.emit()

    def _load(self, rec, view, first: bool = False) -> None:
        import time

        t0 = time.perf_counter()
        key = (rec.id, view)
        hit = self.cache.get(key)
        if hit is not None:
            self._loaded(rec.id, view, hit, first, t0, "cached")
            return
        from pollenstudio.core.progress import CancelToken

        if view != EDF and rec.width * rec.height <= SYNC_VIEW_PIXELS:
            try:
                img = load_view(CancelToken(), self.review.project, rec, view)
            except PollenStudioError as exc:
                self._failed(rec.id, str(exc), first)
                return
            self.cache.put(key, img)
            self._loaded(rec.id, view, img, first, t0, "read")
            return
        what = "all-in-focus view" if view == EDF else f"plane {int(view) + 1}"
        self.review.message.emit(f"Reading the {what} of {Path(rec.path).name}...")
        self._announced = True

        def done(img, i=rec.id, v=view):
            self.cache.put((i, v), img)
            self._loaded(i, v, img, first, t0, "read")

        self.jobs.submit("view", load_view, self.review.project, rec, view, on_done=done,
                         on_error=lambda msg, i=rec.id: self._failed(i, msg, first))

    def _loaded(self, image_id: int, view, img: DisplayImage, first: bool, t0: float, how: str) -> None:
        import time

        if image_id != self.review.image_id or view != self.view:
            return  # the user moved on
        if view == EDF:
            self.edf_index = getattr(img, "plane_index", None)
        self.shown = img
        if self._announced:
            self._announced = False
            self.review.message.emit("")  # "Reading ..." is over
        if first:
            self.review._image_loaded(image_id, img)
        else:
            self.planeImageReady.emit(img)
        self.timings.append((f"{'open' if first else 'step'} {how}", time.perf_counter() - t0))
        del self.timings[:-50]
        self._prefetch()

    def _failed(self, image_id: int, msg: str, first: bool) -> None:
        if image_id != self.review.image_id:
            return
        if first:
            self.review._image_failed(image_id, msg)
        else:
            self.review.errorRaised.emit("Cannot show the plane", msg)

    def _prefetch(self) -> None:
        rec = self.record
        if rec is None or not isinstance(self.view, int):
            return
        near = [v for v in (self.view + 1, self.view - 1, self.view + 2, self.view - 2) if 0 <= v < rec.planes]
        near = [v for v in near if (rec.id, v) not in self.cache]
        if near:
            self.jobs.submit("prefetch", prefetch_job, self.review.project, rec, near, self.cache,
                             on_done=lambda n: None, on_error=lambda msg: None)

    # -- focusing -------------------------------------------------------------------------------
    def set_view(self, view) -> bool:
        """Show a plane (clamped to the stack) or EDF; False when the image is not a stack."""
        rec = self.record
        if rec is None:
            return False
        if view != EDF:
            view = max(0, min(rec.planes - 1, int(view)))
        if view == self.view:
            return True
        self.view = view
        self.planeChanged.emit()
        self._load(rec, view)
        return True

    def step(self, delta: int) -> bool:
        """Page Down (+1) / Page Up (-1): the next plane deeper / shallower. From EDF the
        step starts at the best-focus plane when known, else the middle."""
        rec = self.record
        if rec is None:
            self.review.message.emit("This image has one focal plane")
            return False
        if self.view == EDF:
            start = self.best.get(rec.id, rec.planes // 2)
            return self.set_view(start)
        target = int(self.view) + int(delta)
        if not 0 <= target < rec.planes:
            self.review.message.emit("Deepest plane" if delta > 0 else "First plane")
            return False
        return self.set_view(target)

    def toggle_edf(self) -> bool:
        rec = self.record
        if rec is None:
            self.review.message.emit("This image has one focal plane: no EDF view")
            return False
        if self.view == EDF:
            return self.set_view(self.best.get(rec.id, rec.planes // 2))
        return self.set_view(EDF)

    def best_focus(self) -> bool:
        """Home: the plane sharpest over the whole field (read once per stack, in a worker)."""
        rec = self.record
        if rec is None:
            self.review.message.emit("This image has one focal plane")
            return False
        if rec.id in self.best:
            return self.set_view(self.best[rec.id])
        self.review.message.emit("Finding the best-focus plane...")

        def done(k, i=rec.id):
            self.best[i] = k
            if self.review.image_id == i:
                self.set_view(k)
                self.planeChanged.emit()

        self.jobs.submit("best", best_plane_job, self.review.project, rec, on_done=done,
                         on_error=lambda msg: self.review.errorRaised.emit("Best focus", msg))
        return True

    def focus_box(self, ann) -> None:
        """Tab / the queue went to a box: show its plane (unless the EDF view is on)."""
        if self.record is None or ann is None or ann.plane is None or self.view == EDF:
            return
        self.set_view(ann.plane)

    def plane_for_new_box(self, box) -> int | None:
        """The plane a box drawn now belongs to: the plane shown, or on the EDF view the
        plane its pixels come from."""
        if self.record is None:
            return None
        if isinstance(self.view, int):
            return self.view
        if self.edf_index is None:  # the EDF view of a slide: the plane sharpest in the box
            img = getattr(self, "shown", None)
            if isinstance(img, SlideImage) and img.slide.planes > 1:
                from pollenstudio.core.stack import focus_measure

                try:
                    scores = [focus_measure(img.slide.region0(box.x1, box.y1, box.x2, box.y2, 0, k)[0])
                              for k in range(img.slide.planes)]
                except PollenStudioError:
                    return None
                return int(np.argmax(scores))
        return plane_of_box(self.edf_index, box)

    def set_selected_plane(self) -> None:
        """Z: the selected box's plane becomes the plane shown (one undoable step)."""
        r = self.review
        a = r.selected_annotation()
        if self.record is None:
            r.message.emit("This image has one focal plane")
            return
        if a is None:
            r.message.emit("Select a box first, then focus and press Z to give it the plane shown")
            return
        if not isinstance(self.view, int):
            r.message.emit("The EDF view has no single plane: Page Up / Page Down to the grain's plane, then Z")
            return
        plane = self.view
        if a.plane == plane:
            r.message.emit(f"The box is already on plane {self.plane_name(plane)}")
            return
        if r._edit(lambda: r.project.set_annotation_plane(a.id, plane)) is not None:
            r.message.emit(f"Box set to plane {self.plane_name(plane)} (Ctrl+Z undoes)")


class StackBar(QToolBar):
    """Plane slider, plane number, Best focus and EDF buttons; hidden for single images."""

    def __init__(self, stacks: StackController, parent: QWidget | None = None):
        super().__init__("Focus", parent)
        self.setObjectName("focus_toolbar")
        self.stacks = stacks
        self.addWidget(QLabel(" Focus ", self))
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setFixedWidth(220)
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.slider.setPageStep(1)
        self.slider.setToolTip("Focal plane shown (Page Up / Page Down, Ctrl+wheel)")
        self.addWidget(self.slider)
        self.plane_label = QLabel(self)
        self.plane_label.setMinimumWidth(190)
        self.addWidget(self.plane_label)
        self.best_button = QToolButton(self)
        self.best_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.edf_button = QToolButton(self)
        self.edf_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.addWidget(self.best_button)
        self.addWidget(self.edf_button)
        self.box_label = QLabel(self)
        self.box_label.setStyleSheet("color: #e6a23c")
        self.addWidget(self.box_label)
        self.slider.valueChanged.connect(self._slid)
        stacks.planeChanged.connect(self.refresh)
        self._updating = False
        self.refresh()

    def set_actions(self, best_action, edf_action) -> None:
        self.best_button.setDefaultAction(best_action)
        self.edf_button.setDefaultAction(edf_action)

    def _slid(self, value: int) -> None:
        if not self._updating:
            self.stacks.set_view(value - 1)

    def refresh(self) -> None:
        st = self.stacks
        rec = st.record
        self.setEnabled(rec is not None)
        self._updating = True
        try:
            self.slider.setRange(1, max(1, st.planes))
            if isinstance(st.view, int):
                self.slider.setValue(st.view + 1)
        finally:
            self._updating = False
        self.plane_label.setText(f"  {st.label()}" if rec is not None else "  one focal plane")
        self.edf_button.setChecked(st.view == EDF)
        self.show_selected(self.stacks.review.selected_annotation())

    def show_selected(self, ann) -> None:
        """Where the selected box is sharpest, next to the plane shown."""
        st = self.stacks
        if st.record is None or ann is None or ann.plane is None:
            self.box_label.setText("")
            return
        here = " (shown)" if ann.plane == st.view else " (Z: set to the plane shown)"
        self.box_label.setText(f"   selected box: plane {st.plane_name(ann.plane)}{here}")


def install_stacks(win) -> StackController:
    """Wire focusing into the main window: the Focus toolbar, the plane keys' actions, the
    canvas' Ctrl+wheel and swap of planes, and the review controller's hooks."""
    ctl = win.ctl
    stacks = StackController(ctl, win)
    ctl.stacks = stacks
    acts = win.actions
    acts["plane_next"].triggered.connect(lambda: stacks.step(1))
    acts["plane_prev"].triggered.connect(lambda: stacks.step(-1))
    acts["best_focus"].triggered.connect(stacks.best_focus)
    acts["edf_view"].setCheckable(True)
    acts["edf_view"].triggered.connect(lambda _=False: (stacks.toggle_edf(), acts["edf_view"].setChecked(stacks.view == EDF)))
    acts["set_plane"].triggered.connect(stacks.set_selected_plane)
    bar = StackBar(stacks, win)
    bar.set_actions(acts["best_focus"], acts["edf_view"])
    win.addToolBarBreak(Qt.ToolBarArea.TopToolBarArea)  # a row of its own: the plane and the box's plane in view
    win.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
    bar.setVisible(False)

    def project_changed():  # the Focus row is there for projects that have stacks
        p = ctl.project
        stacks.cache.clear()
        stacks.best.clear()
        bar.setVisible(bool(p is not None and p.has_stacks()))

    ctl.projectChanged.connect(project_changed)
    ctl.imageShown.connect(lambda _i: bar.setVisible(bar.isVisible() or stacks.record is not None))
    win.stack_bar = bar
    win.stacks = stacks
    m = win.view_menu
    m.addSeparator()
    for n in ("plane_prev", "plane_next", "best_focus", "edf_view"):
        m.addAction(acts[n])
    win.menuBar().actions()  # the Edit menu takes Z next to the other box edits
    for menu_action in win.menuBar().actions():
        if menu_action.text() == "&Edit":
            menu_action.menu().addAction(acts["set_plane"])

    from PySide6.QtGui import QActionGroup

    from pollenstudio.core.types import DEFAULT_STACK_MODE

    modes = win.model_menu.addMenu("Focal stacks: detect on")
    modes.setToolTipsVisible(True)
    group = QActionGroup(modes)
    win.stack_mode_actions = {}
    for mode, text, tip in (
        ("edf", "All-in-focus view (EDF)", "One pass per stack on its EDF composite, every grain sharp"),
        ("planes", "Every plane", "One pass per plane, the boxes of one grain merged across planes"),
        ("both", "EDF and every plane", "One pass more than every plane: the EDF view's boxes join the merge"),
    ):
        act = modes.addAction(text + (" (default: measured best)" if mode == DEFAULT_STACK_MODE else ""))
        act.setCheckable(True)
        act.setToolTip(tip + "; either way each grain records its sharpest plane")
        act.setChecked(mode == DEFAULT_STACK_MODE)
        act.triggered.connect(lambda _=False, m=mode: setattr(win.models, "stack_mode", m))
        group.addAction(act)
        win.stack_mode_actions[mode] = act
    win.models.stack_mode = DEFAULT_STACK_MODE

    def swap(img):
        win.canvas.swap_image(img)
        win.overlay.image_ready()  # explanations follow the plane shown

    stacks.planeImageReady.connect(swap)
    stacks.planeChanged.connect(lambda: acts["edf_view"].setChecked(stacks.view == EDF))
    win.canvas.planeStep.connect(stacks.step)
    ctl.boxesChanged.connect(lambda: bar.show_selected(ctl.selected_annotation()))
    return stacks
