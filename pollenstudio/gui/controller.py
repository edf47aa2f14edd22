"""Review controller: the review session and the one place views edit the project.

It holds the open project, the image on screen, the selection, navigation, edits and taxa.
Every user edit is one undoable store command, committed before the method returns (no
Save button). It turns the store's change events, which may arrive on a worker thread,
into Qt signals on the GUI thread, and schedules its own project-wide reads (review queue,
taxon counts) in workers once changes pause. Views never call the store themselves.

Model choice, detection and explanations are in ``model_controller.ModelController``;
import / export in ``transfer_controller.TransferController``; both follow this one's
project and store events.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from PySide6.QtCore import QElapsedTimer, QObject, QThreadPool, QTimer, Signal

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.core.types import (
    UNIDENTIFIED,
    UNIDENTIFIED_COLOR,
    Annotation,
    AnnotationStatus,
    Box,
    Category,
    ReviewStatus,
    display_taxon,
    is_unassigned_taxon,
)
from pollenstudio.gui import interaction
from pollenstudio.gui.box_items import BoxView
from pollenstudio.gui.image_list import ImageRow
from pollenstudio.gui.pyramid import DisplayImage
from pollenstudio.gui.review_queue import DEFAULT_REVIEW_THRESHOLD, QueueItem
from pollenstudio.gui.taxon_panel import TaxonRow
from pollenstudio.gui.workers import JobRunner

log = logging.getLogger(__name__)

SYNC_LOAD_PIXELS = 4_000_000  # images up to this size load on the GUI thread (a few ms)
QUEUE_PANEL_LIMIT = 1000  # the panel lists this many most-uncertain proposals (Tab goes on past them)
QUEUE_PAUSE_MS = 300  # the queue is re-read once changes pause this long
QUEUE_MAX_WAIT_MS = 1000  # while changes keep coming, the queue is re-read at least this often
COUNTS_PAUSE_MS = 700  # project-wide taxon counts likewise
COUNTS_MAX_WAIT_MS = 700
NUDGE_SMALL, NUDGE_BIG = 1.0, 10.0


def load_display_image(token, path: str) -> DisplayImage:
    """Worker job: what the canvas shows of an image file. A whole-slide file (a pyramidal
    or very large tiled TIFF) is a ``SlideImage``: its overview read from the file's smallest
    level, nothing decoded whole; any other image is decoded and its display pyramid built
    (cancellable between levels)."""
    from pollenstudio.gui.pyramid import open_display

    return open_display(path, name=Path(path).name, token=token)


class ReviewController(QObject):
    projectChanged = Signal()  # opened or closed
    projectClosing = Signal()  # the store is about to close: jobs outside this controller stop and wait
    imageShown = Signal(int)  # image id whose pixels are on the canvas now
    imageReady = Signal(object)  # DisplayImage for the canvas (None: could not read)
    boxesChanged = Signal()  # current image's boxes or the selection changed
    rowsChanged = Signal(object)  # list[ImageRow] whose status/counts changed
    queueReady = Signal(object, int, int)  # list[QueueItem], total, hidden (read in a worker)
    projectCountsReady = Signal()  # project-wide taxon counts were re-read (in a worker)
    categoriesChanged = Signal()
    historyChanged = Signal()
    centreRequested = Signal(object)  # Box to bring into view
    message = Signal(str)  # status-bar note
    errorRaised = Signal(str, str)  # title, message: shown in a dialog
    storeChanged = Signal(object)  # ChangeEvent, on the GUI thread, after this controller handled it
    _storeEvent = Signal(object)  # ChangeEvent from whatever thread made the change

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.project = None
        self.image_id: int | None = None
        self.image_record = None
        self.selected: int | None = None
        self.threshold = DEFAULT_REVIEW_THRESHOLD
        self.lowest_score: float | None = None  # least confident undecided proposal (last queue read)
        self.order = "score"  # queue order: "score" (lowest first) or "margin"
        # review order: "image" = the current image's proposals first (least certain first),
        # then the next image in the list's order; "queue" = one project-wide queue
        self.within_image = True
        self.last_category: int | None = None
        # a drawn box gets "unidentified" (default) or the last taxon used ("last")
        self.draw_taxon = "unidentified"
        self.show_rejected = False  # rejected boxes on the canvas (on demand, to find a wrong reject)
        self.user_taxa = None  # UserTaxa: keys and colours kept across projects (set by the window)
        self.teaches_taxa = True  # the open project's taxa join the user's list (not the demo's)
        self.image_order: callable = None  # () -> list of image ids in list order (set by the window)
        # (Box) -> whether the box is on screen now (set by the window): after a decision on a
        # box the reviewer clicked, the next one is selected only if it is in view
        self.box_in_view: callable = None
        # the selection came from a click on the canvas: decisions then never move the view
        # (it panned to the next box and the reviewer's next click landed on another box)
        self.pointer_review = False
        self.stacks = None  # StackController: the view of a focal stack (set by gui.stack_view.install_stacks)
        # a slide scan on screen: (annotations) -> the same in the order Tab walks them across
        # the slide (meander over its fields; set by gui.slide_overview), None otherwise
        self.slide_order: callable = None
        self._anns: list[Annotation] = []
        self._names: dict[int, str] = {}
        self._project_counts: dict[int, int] | None = None  # last read (may lag an edit): confirmed + undecided
        self._project_confirmed: dict[int, int] = {}  # confirmed grains per taxon, same read
        self._unsubscribe = None
        # the review's own reads (taxon counts, queue page, image pixels) get threads of
        # their own: on the shared pool they waited behind model loads (the similar-grains
        # strip, an explanation) and the Taxa panel's counts lagged an action behind
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(2)
        self.jobs = JobRunner(self, pool=self._pool)
        self._storeEvent.connect(self._on_store_event)
        # the queue is re-read once the reviewer pauses: at 300,000 annotations a re-read
        # costs ~100 ms, too much for every key press (the panel keeps following meanwhile)
        self._queue_soon = _Coalesced(self, QUEUE_PAUSE_MS, QUEUE_MAX_WAIT_MS, self.refresh_queue)
        self._queue_again = False  # something changed while a queue read was running
        # project-wide taxon counts (~200 ms at 300,000 annotations) likewise
        self._counts_soon = _Coalesced(self, COUNTS_PAUSE_MS, COUNTS_MAX_WAIT_MS, self.refresh_project_counts)

    # ------------------------------------------------------------------ project
    def open_project(self, path: str | Path) -> None:
        from pollenstudio.project import Project

        proj = Project.open(path)
        self._set_project(proj)
        if getattr(proj, "upgraded_from", None):
            old, kept = proj.upgraded_from
            self.message.emit(f"Project upgraded from an older PollenStudio (schema {old}); a copy that version "
                              f"opens is kept in {kept}")

    def set_project(self, project) -> None:
        """Adopt an already-open Project (tests, demo)."""
        self._set_project(project)

    def _set_project(self, proj) -> None:
        self.close_project()
        self.project = proj
        from pollenstudio.engine.demo import is_demo_project

        # the demo's taxa never join the user's own list (they took its first digit keys)
        self.teaches_taxa = not is_demo_project(proj.folder)
        self._learn_taxa()
        self._unsubscribe = proj.subscribe(self._storeEvent.emit)
        self._names = {}  # filled by image_rows (the list asks for them on open)
        self._project_counts = None
        self._project_confirmed = {}
        self.lowest_score = None
        self.refresh_project_counts()
        self.projectChanged.emit()
        self.refresh_queue()
        self.historyChanged.emit()
        self.categoriesChanged.emit()

    def close_project(self) -> None:
        if self.project is not None:
            # a training run records itself as cancelled, a detection finishes its last
            # write: both before the database is closed under them
            self.projectClosing.emit()
        self.jobs.cancel_all()
        self._queue_soon.stop()
        self._counts_soon.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.project is not None:
            self.project.close()
        self.project = None
        self.image_id = None
        self.image_record = None
        self.selected = None
        self._anns = []
        self.projectChanged.emit()

    @property
    def title(self) -> str:
        if self.project is None:
            return "PollenStudio"
        name = self.project.name
        if self.image_record is not None:
            return f"{name} - {Path(self.image_record.path).name} - PollenStudio"
        return f"{name} - PollenStudio"

    # ------------------------------------------------------------------ reads for views
    def image_rows(self, image_ids=None) -> list[ImageRow]:
        p = self.project
        if p is None:
            return []
        if image_ids is None:
            recs = p.images()
            counts = p.image_counts()
        else:
            recs = [p.image(i) for i in image_ids]
            counts = p.image_counts(image_ids)
        rows = []
        folder = str(p.folder)
        for r in recs:
            c = counts.get(r.id)
            name = r.path.rsplit("/", 1)[-1]
            self._names[r.id] = name
            # plain join, not Path.resolve: 10,000 filesystem lookups would stall the open
            path = r.path if os.path.isabs(r.path) else os.path.join(folder, r.path)
            rows.append(ImageRow(
                id=r.id, name=name, path=path, width=r.width, height=r.height,
                status=r.status, n_proposed=c.undecided if c else 0, n_objects=c.objects if c else 0,
                finished=bool(c and c.finished),
            ))
        return rows

    def review_values(self) -> dict[int, float]:
        """"Review this next": per image not yet reviewed, what reviewing it is expected to
        teach the model (engine.review_order; one grouped query over the proposals)."""
        if self.project is None:
            return {}
        from pollenstudio.engine.review_order import project_review_values

        return project_review_values(self.project)

    def categories(self) -> list[Category]:
        return [] if self.project is None else self.project.categories()

    def hotkeys(self) -> dict[str, int]:
        """Digit -> category id. With the user's taxon list (``user_taxa``) a taxon's digit
        is its place there, the same in every project; without one, explicit hotkeys first
        and free digits go to the remaining taxa in list order. "Unidentified" / "pollen"
        never take a digit."""
        cats = [c for c in self.categories() if not is_unassigned_taxon(c.name)]
        if self.user_taxa is not None:
            keys = {}
            for c in cats:
                d = self.user_taxa.key_for(c.name)
                if d is not None and d not in keys:
                    keys[d] = c.id
            # taxa the user's list does not hold (the demo's: it does not teach the list)
            # take the digits left free, in the project's order
            free = [str(d) for d in range(1, 10) if str(d) not in keys]
            for c in cats:
                if free and not self.user_taxa.knows(c.name):
                    keys[free.pop(0)] = c.id
            return keys
        keys = {c.hotkey: c.id for c in cats if c.hotkey}
        free = [str(d) for d in range(1, 10) if str(d) not in keys]
        for c in cats:
            if not c.hotkey and free:
                keys[free.pop(0)] = c.id
        return keys

    def taxon_color(self, c: Category) -> str:
        """The colour a taxon is drawn in: the user's (kept across projects), else the project's."""
        if is_unassigned_taxon(c.name):
            return UNIDENTIFIED_COLOR
        col = self.user_taxa.color_for(c.name) if self.user_taxa is not None else None
        return col or c.color

    def _learn_taxa(self) -> None:
        """New taxa of the project join the user's taxon list (not the demo's), and the
        project keeps the colours and keys the app shows (``_store_looks``)."""
        if self.user_taxa is not None and self.project is not None and self.teaches_taxa:
            self.user_taxa.learn(self.project.categories())
        self._store_looks()

    def _store_looks(self) -> None:
        """Write the colour and digit key each taxon has on screen into the project, so a
        COCO export (app or command line) carries the app's colours and keys: the export
        wrote the project's own palette and no key at all. Not undoable, no history entry
        (what a taxon looks like is not a review decision); a read-only project keeps its own."""
        p = self.project
        if p is None or self.user_taxa is None:
            return
        keys = {cid: d for d, cid in self.hotkeys().items()}
        looks = {c.id: (self.taxon_color(c), keys.get(c.id)) for c in self.categories()}
        try:
            p.set_category_looks(looks)
        except PollenStudioError as exc:
            log.info("taxon colours not stored in the project: %s", exc)

    def set_taxon_key(self, cid: int, digit: str) -> None:
        """Give a taxon the digit ``digit`` in the user's taxon list (every project)."""
        if self.user_taxa is None or self.project is None:
            return
        c = self.project.category(cid)
        try:
            self.user_taxa.set_key(c.name, digit)
        except ValueError as exc:
            self.errorRaised.emit("Key not set", str(exc))
            return
        self._store_looks()
        self.categoriesChanged.emit()
        self.boxesChanged.emit()

    def taxon_rows(self) -> list[TaxonRow]:
        p = self.project
        if p is None:
            return []
        project_counts = self._project_counts or {}
        image_counts: dict[int, int] = {}
        image_confirmed: dict[int, int] = {}
        for a in self._anns:
            if a.status is not AnnotationStatus.REJECTED:
                image_counts[a.category_id] = image_counts.get(a.category_id, 0) + 1
            if a.status.is_object:
                image_confirmed[a.category_id] = image_confirmed.get(a.category_id, 0) + 1
        by_id = {cid: d for d, cid in self.hotkeys().items()}
        cats = self.categories()
        # "pollen" (the grain model's class) and "unidentified" (a drawn box) both mean "a
        # grain nobody named yet": one row, counted together, under the name boxes show
        unnamed = [c for c in cats if is_unassigned_taxon(c.name)]
        lead = self._unnamed_category(unnamed)
        rows = []
        for c in cats:
            group = [c]
            if c in unnamed:
                if c is not lead:
                    continue
                group = unnamed
            shown = Category(c.id, c.name, self.taxon_color(c), by_id.get(c.id), c.parent_id)
            rows.append(TaxonRow(shown, *(sum(d.get(g.id, 0) for g in group) for d in (
                image_counts, project_counts, image_confirmed, self._project_confirmed))))
        return rows

    @staticmethod
    def _unnamed_category(unnamed: list[Category]) -> Category | None:
        """Of a project's taxa that say "a grain, not named" the one a drawn box takes and
        the Taxa panel shows: the grain model's "pollen" when there is one."""
        return next((c for c in unnamed if c.name.strip().lower() != UNIDENTIFIED), unnamed[0] if unnamed else None)

    def refresh_project_counts(self) -> None:
        """Re-read the grains per taxon in the whole project: one GROUP BY over every
        annotation (~200 ms at 300,000), so it runs in a worker on a read-only connection
        (a newer request cancels the older) and ``projectCountsReady`` says when it landed.
        Until then taxon_rows shows the last counts read."""
        from pollenstudio.gui.store_reads import category_counts_job

        p = self.project
        if p is None:
            return

        def done(counts, p=p):
            if self.project is p:
                self._project_counts, self._project_confirmed = counts
                self.projectCountsReady.emit()

        self.jobs.submit("counts", category_counts_job, str(p.db_path), str(p.folder), on_done=done,
                         on_error=lambda msg: log.warning("taxon counts not read: %s", msg))

    def _count_delta(self, before: list[Annotation], after: list[Annotation]) -> None:
        """An edit on the image on screen only: move the project-wide counts by what
        changed on it, at once (the full re-read follows once edits pause). A read begun
        before this edit is dropped: it would bring back the counts of before."""
        if self._project_counts is None:
            return

        def tally(anns):
            total, confirmed = {}, {}
            for a in anns:
                if a.status is not AnnotationStatus.REJECTED:
                    total[a.category_id] = total.get(a.category_id, 0) + 1
                if a.status.is_object:
                    confirmed[a.category_id] = confirmed.get(a.category_id, 0) + 1
            return total, confirmed

        (t0, c0), (t1, c1) = tally(before), tally(after)
        counts, confirmed = dict(self._project_counts), dict(self._project_confirmed)
        for d, old, new in ((counts, t0, t1), (confirmed, c0, c1)):
            for cid in set(old) | set(new):
                d[cid] = max(0, d.get(cid, 0) + new.get(cid, 0) - old.get(cid, 0))
        self._project_counts, self._project_confirmed = counts, confirmed
        self.jobs.cancel("counts")

    def refresh_queue(self) -> None:
        """Re-read the review queue page in a worker; ``queueReady`` delivers it."""
        from pollenstudio.gui.store_reads import queue_job

        p = self.project
        if p is None:
            self.queueReady.emit([], 0, 0)
            return
        if self.jobs.busy("queue"):
            # One read at a time, and one more after it: cancelling the read in flight for
            # each change starved the queue while a detection wrote faster than a read took.
            self._queue_again = True
            return
        self._queue_again = False

        def done(res, p=p):
            if self.project is p:
                self._names.update(res.new_names)
                self.lowest_score = res.lowest
                cats = {c.id: c for c in p.categories()}
                items = []
                for aid, iid, cid, score, margin in res.rows:
                    c = cats.get(cid)
                    items.append(QueueItem(aid, iid, self._names.get(iid, str(iid)), display_taxon(c.name) if c else "?",
                                           self.taxon_color(c) if c else "#e6a23c", score, margin))
                self.queueReady.emit(items, res.total, res.hidden)
            self._queue_read_over()

        def failed(msg):
            log.warning("review queue not read: %s", msg)
            self._queue_read_over()

        self.jobs.submit("queue", queue_job, str(p.db_path), str(p.folder), self.threshold, self.order,
                         QUEUE_PANEL_LIMIT, frozenset(self._names), on_done=done, on_error=failed)

    def _queue_read_over(self) -> None:
        if self._queue_again:
            self.refresh_queue()  # what changed while it ran (threshold, order, proposals)

    def reads_pending(self) -> bool:
        """A project-wide read (taxon counts, queue page) is still running in a worker."""
        return self.jobs.busy("counts") or self.jobs.busy("queue")

    def annotations(self) -> list[Annotation]:
        """Current image's annotations (all, including hidden low-score proposals)."""
        return list(self._anns)

    def visible(self) -> list[Annotation]:
        """What the canvas shows: proposals under the threshold are hidden, not rejected;
        rejected boxes only while ``show_rejected`` (or while selected)."""
        return [
            a for a in self._anns
            if not (a.status is AnnotationStatus.PROPOSED and (a.score or 0.0) < self.threshold
                    and a.id != self.selected)
            and (a.status is not AnnotationStatus.REJECTED or self.show_rejected or a.id == self.selected)
        ]

    def rejected(self) -> list[Annotation]:
        """The current image's rejected proposals (for the panel listing them)."""
        return [a for a in self._anns if a.status is AnnotationStatus.REJECTED]

    def set_show_rejected(self, shown: bool) -> None:
        self.show_rejected = bool(shown)
        self.boxesChanged.emit()

    def box_views(self) -> list[BoxView]:
        cats = {c.id: c for c in self.categories()}
        colours = {cid: self.taxon_color(c) for cid, c in cats.items()}  # once per taxon, not per box
        out = []
        for a in self.visible():
            c = cats.get(a.category_id)
            name = display_taxon(c.name) if c else f"taxon {a.category_id}"
            color = colours.get(a.category_id, "#e6a23c")
            style = {"proposed": "proposed", "rejected": "rejected"}.get(a.status.value, "decided")
            out.append(BoxView(a.id, a.box, name, color, style, a.score))
        return out

    def queue_items(self) -> tuple[list[QueueItem], int, int]:
        """(most uncertain proposals above the threshold, up to QUEUE_PANEL_LIMIT; how many
        there are in all; how many the threshold hides)."""
        p = self.project
        if p is None:
            return [], 0, 0
        cats = {c.id: c for c in p.categories()}
        anns = p.review_queue(min_score=self.threshold, limit=QUEUE_PANEL_LIMIT, order=self.order)
        items = []
        for a in anns:
            if a.image_id not in self._names:
                self._names[a.image_id] = p.image(a.image_id).path.rsplit("/", 1)[-1]
            c = cats.get(a.category_id)
            margin = (a.topk[0][1] - a.topk[1][1]) if len(a.topk) >= 2 else None
            items.append(QueueItem(
                a.id, a.image_id, self._names.get(a.image_id, str(a.image_id)), display_taxon(c.name) if c else "?",
                self.taxon_color(c) if c else "#e6a23c", a.score, margin,
            ))
        total = p.undecided_count(self.threshold)
        hidden = p.undecided_count(0.0) - total
        return items, total, hidden

    def selected_annotation(self) -> Annotation | None:
        for a in self._anns:
            if a.id == self.selected:
                return a
        return None

    # ------------------------------------------------------------------ navigation
    def show_image(self, image_id: int, select: int | None = None) -> None:
        """Open an image: annotations at once, pixels on the GUI thread when small, in a
        worker when large (a newer request cancels the older one)."""
        p = self.project
        if p is None:
            return
        rec = p.image(image_id)
        changed = image_id != self.image_id
        if changed:
            self.pointer_review = False
        self.image_id = image_id
        self.image_record = rec
        self.selected = select
        self._anns = p.annotations(image_id)
        if not changed:
            self.boxesChanged.emit()
            self.categoriesChanged.emit()
            return
        if self.stacks is not None:
            if rec.is_stack:
                self.stacks.open(rec)  # a focal stack: its planes are read lazily, one view at a time
                return
            self.stacks.leave()
        path = str(p.image_path(rec))
        if rec.width * rec.height <= SYNC_LOAD_PIXELS:
            self.jobs.cancel("image")
            try:
                from pollenstudio.core.progress import CancelToken

                img = load_display_image(CancelToken(), path)
            except PollenStudioError as exc:
                self._image_failed(image_id, str(exc))
                return
            self._image_loaded(image_id, img)
        else:
            self.message.emit(f"Loading {Path(path).name} ({rec.width} x {rec.height} px)...")
            self.jobs.submit(
                "image", load_display_image, path,
                on_done=lambda img, i=image_id: self._image_loaded(i, img),
                on_error=lambda msg, i=image_id: self._image_failed(i, msg),
            )

    def _image_loaded(self, image_id: int, img: DisplayImage) -> None:
        if image_id != self.image_id:
            return
        self.imageReady.emit(img)
        self.boxesChanged.emit()
        self.categoriesChanged.emit()
        self.imageShown.emit(image_id)
        sel = self.selected_annotation()
        if sel is not None:
            self.centreRequested.emit(sel.box)

    def _image_failed(self, image_id: int, msg: str) -> None:
        if image_id != self.image_id:
            return
        self.imageReady.emit(None)
        self.boxesChanged.emit()
        self.errorRaised.emit("Cannot show image", msg)
        self.imageShown.emit(image_id)

    def step_image(self, step: int) -> None:
        """N / P: next or previous image in the list's order (its filter and sort)."""
        ids = self.image_order() if self.image_order else [r.id for r in self.project.images()] if self.project else []
        if not ids:
            return
        if self.image_id in ids:
            i = ids.index(self.image_id) + step
            if not 0 <= i < len(ids):
                self.message.emit("Last image in the list" if step > 0 else "First image in the list")
                return
        else:
            i = 0 if step > 0 else len(ids) - 1
        self.show_image(ids[i])

    def select(self, ann_id: int | None, centre: bool = False) -> None:
        self.selected = ann_id
        self.boxesChanged.emit()
        a = self.selected_annotation()
        if centre and a is not None:
            self.centreRequested.emit(a.box)
            if self.stacks is not None:
                self.stacks.focus_box(a)  # a grain of a focal stack is shown on its own plane

    def go_to(self, ann_id: int, image_id: int) -> None:
        """Queue click: open the image if needed, select and centre the proposal."""
        if image_id != self.image_id:
            self.show_image(image_id, select=ann_id)
        else:
            self.select(ann_id, centre=True)

    @property
    def review_mode(self) -> str:
        return "image" if self.within_image else "queue"

    def set_review_mode(self, mode: str) -> None:
        """"image": Tab / A / X stay on the image until its proposals are decided, then Tab
        (or Enter, image finished) goes on to the next image in the list; "queue": one
        project-wide queue, least certain first (images change as the queue says)."""
        if mode not in ("image", "queue"):
            raise ValueError(f"review mode is image or queue, got {mode!r}")
        self.within_image = mode == "image"

    def _next_in_image(self, anchor: int | None, backwards: bool = False) -> Annotation | None:
        p = self.project
        if self.image_id is None:
            return None
        if self.slide_order is not None:
            return self._next_on_slide(anchor, backwards)
        kw = dict(min_score=self.threshold, order=self.order, backwards=backwards, image_id=self.image_id)
        a = p.next_undecided(anchor, **kw)
        if a is None:  # wrap within the image before leaving it
            a = p.next_undecided(None, **kw)
            if a is not None and a.id == anchor:
                a = None
        return a

    def _next_on_slide(self, anchor: int | None, backwards: bool) -> Annotation | None:
        """On a slide scan: the next undecided proposal above the threshold along the
        slide's meander (``slide_order``), wrapping, after ``anchor`` (decided or not)."""
        keep = [a for a in self._anns
                if (a.status is AnnotationStatus.PROPOSED and (a.score or 0.0) >= self.threshold) or a.id == anchor]
        if not keep:
            return None
        order = self.slide_order(keep)
        if backwards:
            order.reverse()
        ids = [a.id for a in order]
        start = ids.index(anchor) + 1 if anchor in ids else 0
        for a in order[start:] + order[:start]:
            if a.id != anchor and a.status is AnnotationStatus.PROPOSED:
                return a
        return None

    def _next_undecided(self, anchor: int | None, backwards: bool = False) -> Annotation | None:
        p = self.project
        kw = dict(min_score=self.threshold, order=self.order, backwards=backwards)
        if self.within_image:
            a = self._next_in_image(anchor, backwards)
            if a is not None:
                return a
            iid = self._next_image_to_review(backwards, need_proposals=True)
            return None if iid is None else p.next_undecided(None, image_id=iid, **kw)
        a = p.next_undecided(anchor, **kw)
        if a is None:
            a = p.next_undecided(None, **kw)  # wrap to the start of the queue
            if a is not None and a.id == anchor:
                return None
        return a

    def _list_order(self) -> list[int]:
        if self.image_order:
            return list(self.image_order())
        return [r.id for r in self.project.images()] if self.project else []

    def _next_image_to_review(self, backwards: bool = False, need_proposals: bool = False) -> int | None:
        """The next image after the current one in the list's order (wrapping) that still
        has undecided proposals above the threshold; unless ``need_proposals``, else the next
        one not yet reviewed (nobody has finished it)."""
        p = self.project
        ids = self._list_order()
        if not ids:
            return None
        if self.image_id in ids:
            i = ids.index(self.image_id)
            ring = ids[i + 1:] + ids[:i] if not backwards else list(reversed(ids[:i])) + list(reversed(ids[i + 1:]))
        else:
            ring = ids if not backwards else list(reversed(ids))
        counts = p.image_counts()
        for iid in ring:
            c = counts.get(iid)
            if c is not None and c.undecided and p.next_undecided(None, min_score=self.threshold, image_id=iid):
                return iid
        if need_proposals:
            return None
        reviewed = {r.id for r in p.images(status=ReviewStatus.REVIEWED)}
        return next((iid for iid in ring if iid not in reviewed), None)

    def step_proposal(self, step: int) -> None:
        """Tab / Shift+Tab: next or previous undecided proposal (in the image first, in
        "image" mode; along the project-wide queue in "queue" mode)."""
        if self.project is None:
            return
        self.pointer_review = False  # the keyboard leads: the view follows the selection
        a = self._next_undecided(self.selected, backwards=step < 0)
        if a is None:
            self.message.emit("No undecided proposal left above the threshold")
            return
        if a.image_id != self.image_id:
            self.message.emit(f"Next image: {self._names.get(a.image_id) or Path(self.project.image(a.image_id).path).name}")
        self.go_to(a.id, a.image_id)

    def select_by_click(self, ann_id: int | None) -> None:
        """A click on the canvas selected ``ann_id`` (None: empty image): the reviewer works
        with the mouse, so a decision key leaves the view where it is."""
        self.pointer_review = ann_id is not None
        self.select(ann_id)

    def _advance_from(self, ann_id: int) -> None:
        if self.pointer_review:
            self._advance_in_view(ann_id)
            return
        if self.within_image:
            a = self._next_in_image(ann_id)
            if a is None:
                # the image's proposals are decided: stay, so the reviewer can look for
                # missed grains before calling it finished
                self._all_decided_here()
                return
            self.go_to(a.id, a.image_id)
            return
        a = self._next_undecided(ann_id)
        if a is None:
            self.selected = None
            self.boxesChanged.emit()
            self.message.emit("All proposals above the threshold are reviewed")
            return
        self.go_to(a.id, a.image_id)

    def _all_decided_here(self) -> None:
        """The image's last proposal was decided: stay, so the reviewer can look for missed
        grains, and say what the image is now (the rule is applied here, so it is said here)."""
        self.selected = None
        self.boxesChanged.emit()
        self.message.emit("Decided: now training data (unboxed grains teach 'no grain'). B boxes one; Enter = finished")

    def _advance_in_view(self, ann_id: int) -> None:
        """After a decision on a box the reviewer clicked: the next proposal of this image
        is selected only if it is on screen; the view and the image never move."""
        a = self._next_in_image(ann_id)
        if a is None:
            self._all_decided_here()
            return
        if self.box_in_view is None or self.box_in_view(a.box):
            self.select(a.id)
            return
        self.selected = None
        self.boxesChanged.emit()
        self.message.emit("Decided. Click the next grain, or Tab to go to the next proposal (off screen)")

    def finish_image(self) -> bool:
        """Enter: the reviewer has looked at the whole image (missed grains drawn): mark it
        reviewed (one undo step) and go on to the next image to review. Refused while
        proposals on it are undecided. Returns whether it was marked."""
        p = self.project
        if p is None or self.image_id is None:
            return False
        left = [a for a in p.annotations(self.image_id) if a.status is AnnotationStatus.PROPOSED]
        if left:
            n = len(left)
            hidden = sum(1 for a in left if (a.score or 0.0) < self.threshold)
            self.message.emit(f"{n} proposal{'s' if n != 1 else ''} on this image still undecided"
                              + (f", {hidden} under the slider" if hidden else "")
                              + " (Tab goes to them; 0 = no grains here rejects them all)")
            return False
        if self._edit(p.set_image_status, self.image_id, ReviewStatus.REVIEWED) is None:
            return False
        self._go_on_after_finishing("Image finished")
        return True

    def no_grains(self) -> bool:
        """0: "no grains on this image": reject its undecided proposals and mark it reviewed,
        one undo step. Refused when it holds confirmed grains (Enter finishes such an image)."""
        p = self.project
        if p is None or self.image_id is None:
            return False
        anns = p.annotations(self.image_id)
        n_obj = sum(1 for a in anns if a.status.is_object)
        if n_obj:
            self.message.emit(f"This image has {n_obj} confirmed grain{'s' if n_obj != 1 else ''}: "
                              "reject them first, or press Enter if the image is finished")
            return False
        iid = self.image_id

        def both():
            with p.batch("no grains on image"):
                p.reject_all(iid)
                p.set_image_status(iid, ReviewStatus.REVIEWED)
            return True

        if self._edit(both) is None:
            return False
        self._go_on_after_finishing("No grains here: image finished")
        return True

    def _go_on_after_finishing(self, what: str) -> None:
        nxt = self._next_image_to_review()
        if nxt is None:
            self.selected = None
            self.boxesChanged.emit()
            self.message.emit(f"{what}. Every image is reviewed")
            return
        a = self.project.next_undecided(None, min_score=self.threshold, order=self.order, image_id=nxt)
        self.show_image(nxt, select=a.id if a is not None else None)
        self.message.emit(f"{what}. Next: {Path(self.image_record.path).name}")

    def set_threshold(self, value: float) -> None:
        self.threshold = float(value)
        if self.selected_annotation() not in self.visible():
            self.selected = None
        self.boxesChanged.emit()
        self._queue_soon()

    # ------------------------------------------------------------------ edits
    def _edit(self, fn, *args):
        """Run one store command; a refused edit is shown, never raised into Qt."""
        if self.project is None:
            return None
        try:
            return fn(*args)
        except PollenStudioError as exc:
            self.errorRaised.emit("Edit not possible", str(exc))
            return None

    def _require_selection(self) -> Annotation | None:
        a = self.selected_annotation()
        if a is None:
            self.message.emit("Select a box first (click it, or Tab to the next proposal)")
        return a

    def accept(self) -> None:
        a = self._require_selection()
        if a is None:
            return
        self._edit(self.project.accept, a.id)
        if a.status is AnnotationStatus.PROPOSED:
            self._advance_from(a.id)

    def reject(self) -> None:
        """X / Delete: reject a proposal (kept as provenance) or delete a drawn box."""
        a = self._require_selection()
        if a is None:
            return
        self._edit(self.project.reject, a.id)
        if a.status is AnnotationStatus.PROPOSED:
            self._advance_from(a.id)
        else:
            self.select(None)

    def assign(self, category_id: int) -> None:
        a = self._require_selection()
        if a is None:
            return
        self.last_category = category_id
        if a.category_id == category_id:
            if a.status in (AnnotationStatus.PROPOSED, AnnotationStatus.REJECTED):
                self._edit(self.project.accept, a.id)  # "yes, it is that taxon" decides it
        else:
            self._edit(self.project.relabel, a.id, category_id)
        if a.status is AnnotationStatus.PROPOSED:
            self._advance_from(a.id)

    def _many(self, label: str, ids: list[int], one) -> None:
        if self.project is None or not ids:
            return
        p = self.project

        def run():
            with p.batch(label):
                for aid in ids:
                    one(aid)
            return True

        self._edit(run)

    def accept_many(self, ids: list[int]) -> None:
        """Accept several grains (gallery): one undo step."""
        n = len(ids)
        self._many(f"accept {n} grain{'s' if n != 1 else ''}", ids, self.project.accept if self.project else None)

    def reject_many(self, ids: list[int]) -> None:
        """Reject several grains (a drawn box is deleted): one undo step."""
        n = len(ids)
        self._many(f"reject {n} grain{'s' if n != 1 else ''}", ids, self.project.reject if self.project else None)

    def relabel_many(self, ids: list[int], category_id: int) -> None:
        """Give several grains one taxon (gallery): a proposal already of that taxon is
        accepted, as with a digit key in the review. One undo step."""
        p = self.project
        if p is None:
            return
        self.last_category = category_id

        def one(aid: int) -> None:
            a = p.annotation(aid)
            if a.category_id == category_id:
                if a.status in (AnnotationStatus.PROPOSED, AnnotationStatus.REJECTED):
                    p.accept(aid)
            else:
                p.relabel(aid, category_id)

        n = len(ids)
        self._many(f"relabel {n} grain{'s' if n != 1 else ''}", ids, one)

    def assign_hotkey(self, digit: str) -> None:
        cid = self.hotkeys().get(digit)
        if cid is None:
            self.message.emit(f"No taxon has hotkey {digit}")
            return
        self.assign(cid)

    def move(self, ann_id: int, box: Box) -> None:
        self._edit(self.project.move_annotation, ann_id, _tidy(box))

    def nudge(self, dx: float, dy: float) -> None:
        a = self._require_selection()
        if a is None or self.image_record is None:
            return
        bounds = (float(self.image_record.width), float(self.image_record.height))
        box = interaction.nudge(a.box, dx, dy, bounds)
        if box != a.box:
            self.move(a.id, box)

    def click_to_box(self, x: float, y: float, pixels, finder=None) -> str:
        """B then a click on a grain. The model's best undecided proposal whose box holds
        the click, even one under the review slider, is selected (A accepts it, 1-9 names
        it); a grain already boxed is selected. Else ``finder(x, y, on_result)`` (the model
        controller: the model's candidate at the click, under the detection threshold, else
        the grain's outline, in a worker) or, without one, classical segmentation
        (``engine.segment``) in ``pixels`` (a full-resolution array, or a callable giving one or
        a (window, x, y) triple of the part around the click) here; the box found is
        added like a drawn box. Returns "candidate", "boxed", "searching", "segmented" or
        "none"."""
        if self.project is None or self.image_id is None:
            return "none"
        self.pointer_review = True  # a click chose the grain: A / 1-9 on it keep the view still
        inside = [a for a in self._anns if a.box.contains(x, y)]
        props = [a for a in inside if a.status is AnnotationStatus.PROPOSED]
        if props:
            best = max(props, key=lambda a: a.score or 0.0)
            hidden = (best.score or 0.0) < self.threshold
            self.select(best.id, centre=True)
            name = next((display_taxon(c.name) for c in self.categories() if c.id == best.category_id), "?")
            self.message.emit(f"Model candidate at the click: {name} {best.score or 0:.2f}"
                              + (" (under the slider)" if hidden else "") + ". A accepts, 1-9 names it, X rejects")
            return "candidate"
        objs = [a for a in inside if a.status.is_object]
        if objs:
            self.select(min(objs, key=lambda a: a.box.area).id, centre=True)
            self.message.emit("This grain already has a box (selected)")
            return "boxed"
        if finder is not None:
            iid = self.image_id
            self.message.emit("Looking for the grain at the click...")

            def found(res, iid=iid):
                if iid != self.image_id or self.project is None:
                    return
                if res is None:
                    self.message.emit("No grain stands out at the click: B and drag to draw its box")
                    return
                box, how = res
                self.add(box, how=how)

            if finder(x, y, found):
                return "searching"
        from pollenstudio.engine.segment import box_around_point

        img = pixels() if callable(pixels) else pixels
        ox = oy = 0
        if isinstance(img, tuple):  # (window, x, y of its top-left pixel): a part of a large image
            img, ox, oy = img
        box = None if img is None else box_around_point(img, x - ox, y - oy)
        if box is not None and (ox or oy):
            box = Box(box.x1 + ox, box.y1 + oy, box.x2 + ox, box.y2 + oy)
        if box is None:
            self.message.emit("No grain stands out at the click: B and drag to draw its box")
            return "none"
        self.add(box, how="found around the click")
        return "segmented"

    def add(self, box: Box, how: str = "") -> None:
        """A box drawn by hand: it takes "unidentified" (the default) or, with the "last"
        preference, the last taxon used; the status bar says which."""
        p = self.project
        if self.image_id is None or p is None:
            return
        cats = {c.id: c for c in self.categories()}
        iid = self.image_id
        use_last = self.draw_taxon == "last" and self.last_category in cats

        def add_box():
            with p.batch("add box"):
                if use_last:
                    cid = self.last_category
                else:
                    # the project's own "not named yet" taxon: "pollen" next to the grain
                    # model's proposals (a second, "unidentified", listed the same grains twice)
                    c = self._unnamed_category([c for c in p.categories() if is_unassigned_taxon(c.name)])
                    cid = c.id if c is not None else p.add_category(UNIDENTIFIED, color=UNIDENTIFIED_COLOR)
                plane = self.stacks.plane_for_new_box(box) if self.stacks is not None else None
                return p.add_annotation(iid, _tidy(box), cid, plane=plane), cid

        res = self._edit(add_box)
        if res is not None:
            aid, cid = res
            self.select(aid)
            what = f"New box {how}" if how else "New box"
            if use_last:
                self.message.emit(f"{what}: {display_taxon(cats[cid].name)} (the last taxon used); 1-9 or T to change it")
            else:
                self.message.emit(f"{what}: {display_taxon(self.project.category(cid).name)}; "
                                  "press 1-9 or T to name its taxon")

    def undo(self) -> None:
        self._undo_redo(self.project.undo if self.project else None, "undo")

    def redo(self) -> None:
        self._undo_redo(self.project.redo if self.project else None, "redo")

    def _undo_redo(self, fn, word: str) -> None:
        if fn is None:
            return
        ev = self._edit(fn)
        if ev is None:
            self.message.emit(f"Nothing to {word}")
            return
        self.message.emit(f"{word.capitalize()}: {ev.label}")
        # show where the change happened, so undo is never invisible
        if ev.image_ids and self.image_id not in ev.image_ids:
            sel = next(iter(ev.annotation_ids), None)
            self.show_image(ev.image_ids[0], select=sel)

    def add_category(self, name: str) -> int | None:
        """A new taxon (Taxa panel > Add, or a new name typed after T); returns its id."""
        return self._edit(self.project.add_category, name) if self.project is not None else None

    def add_and_assign(self, name: str) -> None:
        """T, a name no taxon has, Enter: the taxon is made and the selected box takes it
        (two undo steps: the taxon stays if the box's new name is undone)."""
        if self._require_selection() is None:
            return
        existing = self.project.category_by_name(name.strip())
        cid = existing.id if existing is not None else self.add_category(name)
        if cid is not None:
            if existing is None:
                self.message.emit(f"New taxon {name.strip()}")
            self.assign(cid)

    def rename_category(self, cid: int, name: str) -> None:
        if self.project is None:
            return
        old = self.project.category(cid).name
        self._edit(self.project.rename_category, cid, name)
        if self.user_taxa is not None and self.project.category(cid).name == name:
            self.user_taxa.rename(old, name)
            self._store_looks()

    def recolour_category(self, cid: int, colour: str) -> None:
        if self.user_taxa is not None and self.project is not None:
            self.user_taxa.set_color(self.project.category(cid).name, colour)
        self._edit(self.project.recolor_category, cid, colour)

    def merge_categories(self, src: int, dst: int) -> None:
        self._edit(self.project.merge_categories, src, dst)

    # ------------------------------------------------------------------ store events
    def _on_store_event(self, ev) -> None:
        p = self.project
        if p is None:
            return
        taxa_changed = ev.kind in ("categories", "import") or bool(ev.category_ids) or "tax" in ev.label
        if taxa_changed:
            self._learn_taxa()
            # rare and visible at once (merge moves grains): re-read now, not on a pause;
            # submitting cancels a read that may have started before this change
            self.refresh_project_counts()
        else:
            self._counts_soon()  # grains may have moved between taxa: re-read once edits pause
        if self.image_id is not None and (
            self.image_id in ev.image_ids or ev.kind in ("categories", "import", "undo", "redo")
            or ev.category_ids or "taxon" in ev.label or "taxa" in ev.label
        ):
            before, self._anns = self._anns, p.annotations(self.image_id)
            if not taxa_changed and tuple(ev.image_ids) == (self.image_id,):
                self._count_delta(before, self._anns)
            if self.selected is not None and self.selected_annotation() is None:
                self.selected = None
            self.boxesChanged.emit()
        if ev.kind in ("images", "import"):
            self.rowsChanged.emit(None)
        elif ev.image_ids:
            self.rowsChanged.emit(self.image_rows(ev.image_ids))
        self.categoriesChanged.emit()
        self.historyChanged.emit()
        self._queue_soon()
        self.storeChanged.emit(ev)


class _Coalesced:
    """Call ``fn`` once changes pause for ``pause_ms``, and at least every ``max_wait_ms``
    while they keep coming: a detection writes an image's proposals every few hundred ms,
    and a plain debounce left the queue and the counts stale until the whole run ended."""

    def __init__(self, parent: QObject, pause_ms: int, max_wait_ms: int, fn):
        self._timer = QTimer(parent)
        self._timer.setSingleShot(True)
        self._timer.setInterval(pause_ms)
        self._timer.timeout.connect(fn)
        self._waiting = QElapsedTimer()  # since the first change the timer waits for
        self._max_wait = max_wait_ms

    def __call__(self) -> None:
        if self._timer.isActive():
            if self._waiting.elapsed() >= self._max_wait:
                return  # let the pending call fire
        else:
            self._waiting.start()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()


def _tidy(box: Box) -> Box:
    """Round to 1/100 px: mouse mapping leaves float noise nobody means."""
    return Box(*(round(v, 2) for v in box.xyxy()))
