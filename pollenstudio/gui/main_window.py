"""Main window: wires the panels to the controllers and registers the shortcuts.

It owns no review logic: the canvas maps input to edits, the review controller (``ctl``)
talks to the store, the model controller (``models``) detects and explains, the transfer
controller (``transfer``) imports and exports, ``overlay`` keeps the explanation layer in
step; panels show lists. Layout and geometry are remembered with QSettings.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QProgressBar,
    QProgressDialog,
    QPushButton,
    QToolButton,
    QSlider,
    QStackedWidget,
    QToolBar,
    QWidget,
)

from pollenstudio.core import gcguard
from pollenstudio.core.types import display_taxon
from pollenstudio.core.words import plural
from pollenstudio.gui.app import error_text, show_error
from pollenstudio.gui.canvas import Canvas
from pollenstudio.gui.controller import NUDGE_BIG, NUDGE_SMALL, ReviewController
from pollenstudio.gui.help_dialog import HelpDialog
from pollenstudio.gui.model_controller import ModelController
from pollenstudio.gui.calibrate_dialog import install_calibration_notice, open_calibrate_dialog
from pollenstudio.gui.backend_menu import install_backend_menu
from pollenstudio.gui.counting import install_counting
from pollenstudio.gui.relink_dialog import install_remove_images, open_relink_dialog
from pollenstudio.gui.image_list import ImageListPanel
from pollenstudio.gui.review_queue import DEFAULT_REVIEW_THRESHOLD, ReviewQueuePanel
from pollenstudio.gui.reviewers import install_reviewers
from pollenstudio.gui.shortcuts import SHORTCUTS
from pollenstudio.gui.slide_overview import install_slide_review
from pollenstudio.gui.stack_view import install_stacks
from pollenstudio.gui.taxon_panel import TaxonPanel, TaxonPicker
from pollenstudio.gui.transfer_controller import TransferController
from pollenstudio.gui.user_taxa import UserTaxa
from pollenstudio.gui.welcome import WelcomePage, demo_hook

MAX_RECENT = 8
CLICK_HALF_WINDOW = 1024  # px around a click that B + click segments in (its search stops at 1536 px)
DEFAULT_SIZE = (1400, 900)


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings or QSettings()
        self.ctl = ReviewController(self)
        self.ctl.user_taxa = UserTaxa(self.settings)
        self.models = ModelController(self.ctl, self)
        self.transfer = TransferController(self.ctl, self)
        from pollenstudio.gui.continuous import ContinuousRetrainer

        # off by default: retrain in the background after every N newly reviewed images
        self.continuous = ContinuousRetrainer(self.models, self.settings, self)
        self.models.continuous = self.continuous  # the training dashboard shows its switch
        self.resize(*DEFAULT_SIZE)
        self.setObjectName("mainWindow")

        # --- central: welcome or canvas
        self.welcome = WelcomePage(self)
        self.canvas = Canvas(self)
        self.stack = QStackedWidget(self)
        self.stack.addWidget(self.welcome)
        self.stack.addWidget(self.canvas)
        self.setCentralWidget(self.stack)

        # --- docks
        self.images = ImageListPanel(self)
        self.queue = ReviewQueuePanel(self)
        self.taxa = TaxonPanel(self)
        # Ctrl/Shift+click picks several images for "Detect selected images"
        self.images.view.setSelectionMode(self.images.view.SelectionMode.ExtendedSelection)
        self.images_dock = self._dock("Images", self.images, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.queue_dock = self._dock("Review queue", self.queue, Qt.DockWidgetArea.RightDockWidgetArea)
        self.taxa_dock = self._dock("Taxa", self.taxa, Qt.DockWidgetArea.RightDockWidgetArea)
        self.resizeDocks([self.images_dock, self.queue_dock], [300, 320], Qt.Orientation.Horizontal)
        self.resizeDocks([self.queue_dock, self.taxa_dock], [520, 300], Qt.Orientation.Vertical)

        self._build_actions()
        self._build_view_toolbar()
        self._build_overlay()
        self._build_status_bar()
        self._wire()
        self.queue.set_threshold(float(self.settings.value("review/threshold", DEFAULT_REVIEW_THRESHOLD)))
        self.ctl.threshold = self.queue.threshold()
        self.set_review_mode(str(self.settings.value("review/mode", "image")))
        self.act_draw_last.setChecked(str(self.settings.value("review/draw_taxon", "unidentified")) == "last")
        self.set_labels_shown(str(self.settings.value("view/labels", True)).lower() not in ("false", "0"))
        install_counting(self)  # count dock, File > Report, Edit > Pixel scale / Set sample, View > Scale bar
        install_stacks(self)  # focal stacks: Focus toolbar, Page Up/Down, Home, End, Z, Ctrl+wheel
        install_slide_review(self)  # slide scans: Slide dock (overview, density), fields ] [ V, Tab across the slide
        install_backend_menu(self)  # Model > Inference backend
        install_calibration_notice(self)  # "calibrating the grain size is the first step", one click away
        install_reviewers(self)  # several reviewers: claims, others' edits, Review > Second opinion
        self._restore_layout()
        self._show_welcome()
        gcguard.freeze()  # the window's objects live as long as the app: out of full collections

    # ------------------------------------------------------------------ building
    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(title.replace(" ", "_") + "_dock")
        d.setWidget(widget)
        d.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                      | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, d)
        return d

    def _build_actions(self) -> None:
        c = self.ctl
        handlers = {
            "accept": c.accept,
            "reject": c.reject,
            "next_box": lambda: c.step_proposal(1),
            "prev_box": lambda: c.step_proposal(-1),
            "next_image": lambda: c.step_image(1),
            "prev_image": lambda: c.step_image(-1),
            "pick_taxon": self.pick_taxon,
            "finish_image": c.finish_image,
            "gallery": lambda: self.open_gallery(),
            "no_grains": c.no_grains,
            "draw": self.canvas.arm_draw,
            "nudge_left": lambda: c.nudge(-NUDGE_SMALL, 0),
            "nudge_right": lambda: c.nudge(NUDGE_SMALL, 0),
            "nudge_up": lambda: c.nudge(0, -NUDGE_SMALL),
            "nudge_down": lambda: c.nudge(0, NUDGE_SMALL),
            "nudge_left_big": lambda: c.nudge(-NUDGE_BIG, 0),
            "nudge_right_big": lambda: c.nudge(NUDGE_BIG, 0),
            "nudge_up_big": lambda: c.nudge(0, -NUDGE_BIG),
            "nudge_down_big": lambda: c.nudge(0, NUDGE_BIG),
            "undo": c.undo,
            "redo": c.redo,
            "fit": self.canvas.fit,
            "zoom_in": lambda: self.canvas.zoom_keys(1.5),
            "zoom_out": lambda: self.canvas.zoom_keys(1 / 1.5),
            "labels": lambda checked=False: self.set_labels_shown(checked),
            "show_rejected": lambda checked=False: self.set_rejected_shown(checked),
            "help": self.show_help,
            "detect_image": lambda: self.models.detect_which("image"),
            "cancel_detect": self.models.cancel_detection,
            "export": self.export_dialog,
            "train": self.training_dashboard,
            "edge_map": lambda checked=False: self.overlay.toggle("edge", checked),
            "gradcam": lambda checked=False: self.overlay.toggle("gradcam", checked),
        }
        for i in range(1, 10):
            handlers[f"taxon_{i}"] = lambda _checked=False, d=str(i): c.assign_hotkey(d)
        self.actions: dict[str, QAction] = {}
        for s in SHORTCUTS:
            a = QAction(s.text, self)
            a.setShortcuts([QKeySequence(k) for k in s.keys])
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            a.setStatusTip(s.tip)
            a.setToolTip(f"{s.text} ({s.keys[0]})")
            a.setEnabled(s.enabled)
            if s.name in ("edge_map", "gradcam", "labels", "show_rejected"):
                a.setCheckable(True)
            if s.name in handlers:
                a.triggered.connect(handlers[s.name])
            self.addAction(a)  # window-wide shortcuts even with no menu open
            self.actions[s.name] = a
        a = self.actions

        mb = self.menuBar()
        m = mb.addMenu("&File")
        self.act_open_folder = m.addAction("Open image folder...", self.open_folder_dialog)
        self.act_open_folder.setShortcut(QKeySequence("Ctrl+Shift+O"))
        self.act_open_project = m.addAction("Open project...", self.open_project_dialog)
        self.act_open_project.setShortcut(QKeySequence.StandardKey.Open)
        self.recent_menu = m.addMenu("Recent projects")
        m.addSeparator()
        self.act_import = m.addAction("Import...", self.import_dialog)
        self.act_import.setStatusTip("Add annotations from COCO or YOLO, or a folder of images")
        self.act_export = a["export"]
        m.addAction(self.act_export)
        self.act_find_missing = m.addAction("Find missing images...", lambda: open_relink_dialog(self))
        install_remove_images(self)  # image list context menu: Remove from project...
        m.addSeparator()
        self.act_choose_model = m.addAction("Choose model file...", self.choose_model_dialog)
        self.act_choose_model.setStatusTip("Use a trained model (.safetensors) for detection: it becomes the active version")
        m.addSeparator()
        self.act_close = m.addAction("Close project", self.close_project)
        m.addSeparator()
        quit_ = m.addAction("Quit", self.close)
        quit_.setShortcut(QKeySequence.StandardKey.Quit)
        m = mb.addMenu("&Edit")
        for n in ("undo", "redo", None, "draw", "reject"):
            m.addSeparator() if n is None else m.addAction(a[n])
        m = mb.addMenu("&Review")
        for n in ("accept", "reject", "next_box", "prev_box", "next_image", "prev_image", "pick_taxon",
                  None, "finish_image", "no_grains", None, "gallery"):
            m.addSeparator() if n is None else m.addAction(a[n])
        m.addSeparator()
        order = m.addMenu("Review order")
        group = QActionGroup(self)
        self.review_mode_actions = {}
        for mode, text, tip in (
            ("image", "Image by image (least certain first within each)",
             "Tab / A / X stay on the image until its proposals are decided; then the next image in the list"),
            ("queue", "Whole project, least certain first",
             "One project-wide queue: Tab / A / X jump to whichever image holds the next least certain proposal"),
        ):
            act = order.addAction(text)
            act.setCheckable(True)
            act.setStatusTip(tip)
            act.triggered.connect(lambda _=False, md=mode: self.set_review_mode(md))
            group.addAction(act)
            self.review_mode_actions[mode] = act
        self.act_draw_last = m.addAction("Drawn boxes take the last taxon used")
        self.act_draw_last.setCheckable(True)
        self.act_draw_last.setStatusTip("Off: a box you draw is 'unidentified' until you name it with 1-9 or T")
        self.act_draw_last.toggled.connect(self._draw_taxon_changed)
        m = mb.addMenu("&Model")
        self.act_detect_image = a["detect_image"]
        m.addAction(self.act_detect_image)
        self.act_detect_selected = m.addAction("Detect selected images", self.detect_selected)
        self.act_detect_selected.setStatusTip("Run the model on the images selected in the image list (Ctrl+click)")
        self.act_detect_unreviewed = m.addAction("Detect unreviewed images",
                                                 lambda: self.models.detect_which("unreviewed"))
        self.act_detect_all = m.addAction("Detect all images", lambda: self.models.detect_which("all"))
        m.addSeparator()
        flip = m.addMenu("Flipped second pass (for Review this next)")
        flip.setToolTipsVisible(True)
        flip_group = QActionGroup(self)
        self.flip_pass_actions = {}
        saved = str(self.settings.value("detect/flip_pass", "auto"))
        for value, text, tip in (
            ("auto", "With a GPU only (default)", "On a GPU the second pass is cheap; on a CPU it is skipped"),
            ("on", "Always", "Also on a CPU: detection takes about 2.3x as long"),
            ("off", "Never", "\"Review this next\" then weighs uncertainty, naming doubt and rarity only"),
        ):
            act = flip.addAction(text)
            act.setCheckable(True)
            act.setToolTip(tip)
            act.setChecked(value == saved)
            act.triggered.connect(lambda _=False, v=value: self.set_flip_pass(v))
            flip_group.addAction(act)
            self.flip_pass_actions[value] = act
        self.models.flip_pass = {"auto": None, "on": True, "off": False}.get(saved)
        m.addSeparator()
        self.act_cancel_detect = a["cancel_detect"]
        m.addAction(self.act_cancel_detect)
        self.act_cancel_detect.setEnabled(False)
        m.addSeparator()
        self.act_train = a["train"]
        m.addAction(self.act_train)
        m.addAction(self.act_choose_model)
        self.act_continuous = m.addAction("Retrain continuously")
        self.act_continuous.setCheckable(True)
        self.act_continuous.setStatusTip("After every N newly reviewed images, train a new version in the background; "
                                         "it is used only if it beats the model in use on the same validation images "
                                         "(N in Model > Train...)")
        self.act_continuous.setChecked(self.continuous.enabled)
        self.act_continuous.toggled.connect(self.continuous.set_enabled)
        self.continuous.stateChanged.connect(lambda: self.act_continuous.setChecked(self.continuous.enabled))
        self.continuous.message.connect(lambda text: self.statusBar().showMessage(text, 15000))
        self.act_progress = m.addAction("Model progress...", self.model_progress)
        self.act_progress.setStatusTip("How this project's model versions improved with the reviewed grains, and "
                                       "which taxa need more")
        self.act_calibrate = m.addAction("Calibrate grain size...", lambda: open_calibrate_dialog(self))
        self.act_calibrate.setStatusTip("How large a typical grain is on these images: detection resizes them to the "
                                        "model's grain sizes")
        self.model_menu = m
        m = self.view_menu = mb.addMenu("&View")
        for n in ("fit", "zoom_in", "zoom_out", None, "labels", "show_rejected", None, "edge_map", "gradcam"):
            m.addSeparator() if n is None else m.addAction(a[n])
        m.addSeparator()
        for d in (self.images_dock, self.queue_dock, self.taxa_dock):
            m.addAction(d.toggleViewAction())
        m = mb.addMenu("&Help")
        m.addAction(a["help"])

    def _build_view_toolbar(self) -> None:
        tb = QToolBar("Display", self)
        tb.setObjectName("display_toolbar")
        tb.setMovable(False)
        tb.addWidget(QLabel(" Brightness ", tb))
        self.brightness = QSlider(Qt.Orientation.Horizontal, tb)
        self.brightness.setRange(-50, 50)
        self.brightness.setFixedWidth(120)
        self.brightness.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        tb.addWidget(self.brightness)
        tb.addWidget(QLabel("  Contrast ", tb))
        self.contrast = QSlider(Qt.Orientation.Horizontal, tb)
        self.contrast.setRange(-50, 50)
        self.contrast.setFixedWidth(120)
        self.contrast.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        tb.addWidget(self.contrast)
        reset = tb.addAction("Reset", lambda: (self.brightness.setValue(0), self.contrast.setValue(0)))
        reset.setToolTip("Automatic levels (16-bit images: 0.1-99.9 percentile)")
        tb.addSeparator()
        for n in ("fit", "zoom_in", "zoom_out", "draw", "undo", "redo"):
            tb.addAction(self.actions[n])
        tb.addSeparator()
        self.detect_button = QToolButton(tb)
        self.detect_button.setDefaultAction(self.act_detect_image)
        self.detect_button.setText("Detect")
        self.detect_button.setToolTip("Detect this image (Ctrl+D); the arrow offers selected / unreviewed / all")
        menu = QMenu(self.detect_button)
        for act in (self.act_detect_image, self.act_detect_selected, self.act_detect_unreviewed, self.act_detect_all):
            menu.addAction(act)
        self.detect_button.setMenu(menu)
        self.detect_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        self.detect_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        tb.addWidget(self.detect_button)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)
        self.display_toolbar = tb

        def levels_changed(_=None):
            self.canvas.set_brightness_contrast(self.brightness.value() / 100.0, 2.0 ** (self.contrast.value() / 25.0))

        self.brightness.valueChanged.connect(levels_changed)
        self.contrast.valueChanged.connect(levels_changed)

    def _build_overlay(self) -> None:
        from pollenstudio.gui.overlay import OverlayBar, TopKPanel
        from pollenstudio.gui.overlay_state import ExplanationOverlay

        self.overlay_bar = OverlayBar(self.actions["edge_map"], self.actions["gradcam"], self)
        self.addToolBarBreak(Qt.ToolBarArea.TopToolBarArea)  # own row: its legend must never fold away
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.overlay_bar)
        self.overlay = ExplanationOverlay(
            self.canvas, self.overlay_bar, self.actions["edge_map"], self.actions["gradcam"], self.ctl, self.models,
            self._taxon_name, lambda text: self.statusBar().showMessage(text, 8000), self,
        )
        self.topk = TopKPanel(self)
        self.topk_dock = self._dock("Selected box", self.topk, Qt.DockWidgetArea.RightDockWidgetArea)
        self.topk.rejectedActivated.connect(lambda aid: self.ctl.select(aid, centre=True))
        # the reference strip: the project's reviewed grains most like the selected one
        from pollenstudio.gui.similar_grains import SimilarGrains

        self.similar = SimilarGrains(self.models, self)
        self.similar.ready.connect(lambda: self.topk.similar.set_items(self.similar.items, self.similar.note))
        self.topk.similar.activated.connect(lambda image_id, aid: self.ctl.go_to(aid, image_id))
        self.view_menu.addAction(self.topk_dock.toggleViewAction())

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.st_image = QLabel(self)
        self.st_zoom = QLabel(self)
        self.st_cursor = QLabel(self)
        self.st_counts = QLabel(self)
        # detection progress: shown only while a detection runs
        self.st_progress = QProgressBar(self)
        self.st_progress.setFixedWidth(150)
        self.st_eta = QLabel(self)
        self.st_cancel = QPushButton("Cancel", self)
        self.st_cancel.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.st_cancel.setToolTip("Stop detection after the current batch; finished images keep their proposals")
        self.st_cancel.clicked.connect(self.models.cancel_detection)
        for w in (self.st_progress, self.st_eta, self.st_cancel):
            sb.addWidget(w)
            w.hide()
        self.st_model = QLabel(self)
        self.st_model.setToolTip("Active model version and the device detection runs on")
        for w in (self.st_image, self.st_zoom, self.st_cursor, self.st_counts, self.st_model):
            sb.addPermanentWidget(w)
        self.st_cursor.setMinimumWidth(120)

    def _wire(self) -> None:
        c = self.ctl
        c.image_order = self.images.model.ids
        self.images.model.review_values = c.review_values
        c.projectChanged.connect(self._project_changed)
        c.imageReady.connect(self._image_ready)
        c.imageShown.connect(self._image_shown)
        c.boxesChanged.connect(self._refresh_boxes)
        c.rowsChanged.connect(self._rows_changed)
        c.queueReady.connect(self._queue_ready)
        c.projectCountsReady.connect(lambda: self.taxa.set_rows(self.ctl.taxon_rows()))
        c.categoriesChanged.connect(self._refresh_taxa)
        c.historyChanged.connect(self._refresh_history)
        c.centreRequested.connect(self.canvas.center_on)
        m = self.models
        for ctl in (c, m):
            ctl.message.connect(lambda text: self.statusBar().showMessage(text, 5000))
            ctl.errorRaised.connect(lambda t, text: show_error(self, t, text))
        m.detectStarted.connect(self._detect_started)
        m.detectProgress.connect(self._detect_progress)
        m.detectEnded.connect(self._detect_ended)
        m.modelChanged.connect(self._refresh_model_label)
        self.canvas.selectionRequested.connect(c.select_by_click)
        c.box_in_view = self.canvas.box_in_view
        self.canvas.boxEdited.connect(c.move)
        self.canvas.boxDrawn.connect(c.add)
        self.canvas.drawIgnored.connect(lambda text: self.statusBar().showMessage(text, 5000))
        self.canvas.boxClicked.connect(self._click_to_box)
        self.canvas.cursorMoved.connect(lambda x, y: self.st_cursor.setText(f"x {x:.0f}  y {y:.0f} px"))
        self.canvas.viewChanged.connect(lambda z: self.st_zoom.setText(f"zoom {z * 100:.0f} %"))
        self.images.imageActivated.connect(c.show_image)
        self.queue.itemActivated.connect(c.go_to)
        self.queue.thresholdChanged.connect(self._threshold_changed)
        self.taxa.assignRequested.connect(c.assign)
        self.taxa.addRequested.connect(c.add_category)
        self.taxa.renameRequested.connect(c.rename_category)
        self.taxa.recolourRequested.connect(c.recolour_category)
        self.taxa.mergeRequested.connect(c.merge_categories)
        self.taxa.keyRequested.connect(c.set_taxon_key)
        self.welcome.openFolderRequested.connect(self.open_folder_dialog)
        self.welcome.openProjectRequested.connect(self.open_project_dialog)
        self.welcome.openRecentRequested.connect(self.open_project)
        self.welcome.openDemoRequested.connect(self.open_demo)

    # ------------------------------------------------------------------ project
    def open_project(self, path: str) -> bool:
        self._save_review_state()
        try:
            self.ctl.open_project(path)
        except Exception as exc:  # a bad file must leave the window usable
            show_error(self, "Cannot open project", error_text(exc))
            return False
        self._remember(self.ctl.project.location)  # its folder, or a server project's URL
        return True

    def open_project_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open project folder")
        if path:
            self.open_project(path)

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open image folder")
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: str) -> None:
        """An image folder: open its project if it has one, else create one in a worker
        (reading 10,000 image headers takes a while) with progress and Cancel."""
        from pollenstudio.project.schema import DB_NAME

        if (Path(folder) / DB_NAME).exists():
            self.open_project(folder)
            return
        from pollenstudio.gui.welcome import folder_has_images, no_images_text

        if not folder_has_images(folder):  # no silent empty project on a blank canvas
            if self.ctl.project is None:
                self.welcome.set_notice(no_images_text(folder))
            else:
                show_error(self, "No images in this folder", no_images_text(folder))
            return
        self.welcome.set_notice("")
        dlg = QProgressDialog("Reading image folder...", "Cancel", 0, 0, self)
        dlg.setWindowTitle("New project")
        dlg.setMinimumDuration(300)

        def done(result):
            dlg.close()
            proj, res = result
            self.ctl.set_project(proj)
            self._remember(str(proj.folder))
            bad = res.summary["unreadable"]
            if bad:
                lines = "\n".join(u["reason"] for u in bad[:10])
                more = f"\n... and {len(bad) - 10} more" if len(bad) > 10 else ""
                show_error(self, "Some images were skipped", f"{plural(len(bad), 'file')} could not be read:\n{lines}{more}")

        def failed(msg):
            dlg.close()
            show_error(self, "Cannot create project", msg)

        def progress(done_, total, msg):
            dlg.setMaximum(total)
            dlg.setValue(done_)
            dlg.setLabelText(f"Reading {msg}")

        # the transfer service creates the project and removes it again on cancel or failure
        j = self.transfer.new_project(folder, on_done=done, on_error=failed, on_progress=progress)
        dlg.canceled.connect(j.token.cancel)

    def open_image_file(self, path: str) -> None:
        """One image file (a slide scan is one file): the project of its folder, created
        there with only this file when there is none, opened on that image. Registering the
        file (its hash) runs in a worker: a multi-gigabyte scan takes seconds."""
        from pollenstudio.project.transfer import project_with_image

        def add(token):
            proj, image_id, _ = project_with_image(path)
            folder = str(proj.folder)
            proj.close()
            return folder, image_id

        def done(result):
            folder, image_id = result
            if self.open_project(folder):
                self.ctl.show_image(image_id)

        def failed(msg):
            show_error(self, "Cannot open the image", msg)

        self.ctl.jobs.submit("open-image", add, on_done=done, on_error=failed)

    def open_demo(self) -> None:
        """Prepare the demo project in a worker (generating images and loading the model
        takes seconds the first time) with progress and Cancel, then open it."""
        hook = demo_hook()
        if hook is None:
            show_error(self, "Demo not available", "The demo project is not installed in this build.")
            return
        dlg = QProgressDialog("Preparing the demo project...", "Cancel", 0, 0, self)
        dlg.setWindowTitle("Demo project")
        dlg.setMinimumDuration(300)
        self._demo_dialog = dlg

        def done(path):
            dlg.close()
            self.open_project(str(path))

        def failed(msg):
            dlg.close()
            show_error(self, "Cannot open the demo", msg)

        def progress(done_, total, msg):
            dlg.setMaximum(max(total, 1))
            dlg.setValue(done_)
            dlg.setLabelText(f"Preparing the demo project: {msg}")

        self.ctl.jobs.submit("demo", hook, on_done=done, on_error=failed, on_progress=progress)
        # cancel through the runner: the job stops at its next check and late signals are dropped
        dlg.canceled.connect(lambda: self.ctl.jobs.cancel("demo"))

    def close_project(self) -> None:
        self._save_review_state()
        self.ctl.close_project()

    def _save_review_state(self) -> None:
        """Dock layout is remembered as it is while reviewing (welcome mode hides docks)."""
        if self.ctl.project is not None:
            self.settings.setValue("window/state", self.saveState())

    def _remember(self, path: str) -> None:
        recent = [p for p in self.recent_projects() if p != path]
        recent.insert(0, path)
        self.settings.setValue("recent", recent[:MAX_RECENT])
        self._refresh_recent()

    def recent_projects(self) -> list[str]:
        v = self.settings.value("recent", [])
        if isinstance(v, str):
            v = [v]
        return [p for p in (v or []) if p]

    def _refresh_recent(self) -> None:
        from pollenstudio.core.errors import ProjectError
        from pollenstudio.project.dialect import is_server_url, parse_server_url

        def can_reopen(p: str) -> bool:  # a folder still there, or a well-formed server URL
            if not is_server_url(p):
                return Path(p).exists()
            try:
                return bool(parse_server_url(p))
            except ProjectError:
                return False

        recent = [p for p in self.recent_projects() if can_reopen(p)]
        self.welcome.set_recent(recent)
        self.recent_menu.clear()
        for p in recent:
            self.recent_menu.addAction(p, lambda p=p: self.open_project(p))
        self.recent_menu.setEnabled(bool(recent))

    # ------------------------------------------------------------------ refresh
    def _show_welcome(self) -> None:
        self.stack.setCurrentWidget(self.welcome)
        for d in (self.images_dock, self.queue_dock, self.taxa_dock, self.topk_dock, getattr(self, "count_dock", None)):
            if d is None:
                continue
            d.hide()
        self.display_toolbar.hide()
        self.overlay_bar.hide()
        for w in (self.st_image, self.st_zoom, self.st_cursor, self.st_counts, self.st_model):
            w.clear()
            w.hide()  # an empty label still drew a stray glyph on the welcome page
        self._refresh_recent()

    def _project_changed(self) -> None:
        c = self.ctl
        self.setWindowTitle(c.title)
        review = c.project is not None
        for name in ("accept", "reject", "next_box", "prev_box", "next_image", "prev_image", "draw", "undo", "redo",
                     "finish_image", "no_grains", "gallery"):
            self.actions[name].setEnabled(review)
        self.act_close.setEnabled(review)
        for act in (self.act_detect_image, self.act_detect_selected, self.act_detect_unreviewed, self.act_detect_all,
                    self.act_choose_model, self.act_import, self.act_export, self.act_train, self.act_progress):
            act.setEnabled(review)
        if not review:
            self.canvas.set_image(None)
            self.images.set_rows([])
            self._show_welcome()
            return
        self.stack.setCurrentWidget(self.canvas)
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        else:
            for d in (self.images_dock, self.queue_dock, self.taxa_dock, self.topk_dock, self.count_dock):
                d.show()
            self.taxa_dock.raise_()  # the taxa (digit keys) in front of the count tab
        self.display_toolbar.show()
        self.overlay_bar.show()
        for w in (self.st_image, self.st_zoom, self.st_cursor, self.st_counts, self.st_model):
            w.show()
        self.images.set_rows(c.image_rows())
        ids = self.images.model.ids()
        self.welcome.set_notice("")
        self.canvas.set_hint("" if ids else "This project has no images yet.\n\nFile > Import... adds a folder of "
                                            "microscope images (or a COCO or YOLO set with its annotations).")
        if not ids:
            self.st_zoom.clear()
        if ids:
            from pollenstudio.gui.last_image import last_image

            last = last_image(self.settings, c.project.location)  # reopen where the user left off
            c.show_image(last if last in ids else ids[0])
        self.canvas.view.setFocus()

    def _image_ready(self, img) -> None:
        self.canvas.set_image(img)  # clears the overlay: it belonged to the previous image
        self.overlay.image_ready()

    def _image_shown(self, image_id: int) -> None:
        from pollenstudio.gui.last_image import remember_image

        rec = self.ctl.image_record
        if self.ctl.project is not None:
            remember_image(self.settings, self.ctl.project.location, image_id)
        self.statusBar().clearMessage()  # "Loading ..." is over
        self.setWindowTitle(self.ctl.title)
        self.images.show_current(image_id)
        if rec is not None:
            ch = "grey" if rec.channels == 1 else "RGB"
            # the name is in the window title and the image list: the status bar keeps the
            # room it has at 1400 px for what only it shows
            self.st_image.setText(f"{rec.width} x {rec.height} px · {rec.bit_depth}-bit {ch}")
            self.st_image.setToolTip(rec.path)

    def _refresh_boxes(self) -> None:
        self.canvas.set_boxes(self.ctl.box_views(), self.ctl.selected)
        self.queue.set_current(self.ctl.selected)
        anns = self.ctl.annotations()
        n_prop = sum(1 for a in anns if a.status.value == "proposed")
        n_obj = sum(1 for a in anns if a.status.is_object)
        grains = "grain" if n_obj == 1 else "grains"
        self.st_counts.setText(f"{n_obj} {grains} confirmed" + (f" + {n_prop} to review" if n_prop else "") + " on this image")
        a = self.ctl.selected_annotation()
        stacks = getattr(self, "stacks", None)
        plane = stacks.plane_name(a.plane) if stacks is not None and a is not None and a.plane is not None else None
        self.topk.set_annotation(a, self._taxon_name(a.category_id) if a is not None else "", plane)
        self.similar.request(a)
        rejected = self.ctl.rejected()
        names = {c.id: display_taxon(c.name) for c in self.ctl.categories()} if rejected else {}
        self.topk.set_rejected([(r.id, names.get(r.category_id, f"taxon {r.category_id}"), r.score) for r in rejected])
        self.overlay.selection_changed()

    def _rows_changed(self, rows) -> None:
        if rows is None:
            self.images.set_rows(self.ctl.image_rows())
            self.images.show_current(self.ctl.image_id)
        else:
            self.images.update_rows(rows)

    def _queue_ready(self, items, total: int, hidden: int) -> None:
        self.queue.set_floor(self.ctl.lowest_score)
        self.queue.set_items(items, hidden, total)
        if not total and not hidden:
            c = self.images.model.counts()
            if c["images"] and c["new"] == c["images"]:  # nothing detected or decided anywhere yet
                self.queue.set_nothing_detected()
        self.queue.set_current(self.ctl.selected)

    def _refresh_taxa(self) -> None:
        # image counts now; project counts as last read (the controller re-reads them in a
        # worker once edits pause, and projectCountsReady shows them)
        self.taxa.set_rows(self.ctl.taxon_rows())
        self.canvas.set_boxes(self.ctl.box_views(), self.ctl.selected)

    def _refresh_history(self) -> None:
        p = self.ctl.project
        can_undo = p is not None and p.can_undo()
        can_redo = p is not None and p.can_redo()
        self.actions["undo"].setEnabled(can_undo)
        self.actions["redo"].setEnabled(can_redo)
        self.actions["undo"].setText(f"Undo {p.undo_label()}" if can_undo else "Undo")
        self.actions["redo"].setText(f"Redo {p.redo_label()}" if can_redo else "Redo")

    def set_review_mode(self, mode: str) -> None:
        """Review order (Review > Review order), remembered across sessions."""
        if mode not in self.review_mode_actions:
            mode = "image"
        self.ctl.set_review_mode(mode)
        self.review_mode_actions[mode].setChecked(True)
        self.settings.setValue("review/mode", mode)

    def set_labels_shown(self, shown: bool) -> None:
        """L: taxon labels on / off (off: boxes only; a compact form shows at low zoom)."""
        self.actions["labels"].setChecked(shown)
        self.canvas.overlay.show_labels = bool(shown)
        self.canvas.overlay.update()
        self.settings.setValue("view/labels", bool(shown))

    def set_rejected_shown(self, shown: bool) -> None:
        """R: show rejected boxes (red, crossed) so a wrong reject can be found and undone."""
        self.actions["show_rejected"].setChecked(shown)
        self.ctl.set_show_rejected(bool(shown))

    def _draw_taxon_changed(self, last: bool) -> None:
        self.ctl.draw_taxon = "last" if last else "unidentified"
        self.settings.setValue("review/draw_taxon", self.ctl.draw_taxon)

    def _threshold_changed(self, value: float) -> None:
        self.settings.setValue("review/threshold", value)
        self.ctl.set_threshold(value)

    # ------------------------------------------------------------------ model
    def detect_selected(self) -> None:
        """The images selected in the list (Ctrl/Shift+click), else the one on screen."""
        sel = self.images.view.selectionModel()
        ids = [self.images.model.row_data(i.row()).id for i in sel.selectedIndexes()] if sel is not None else []
        if not ids and self.ctl.image_id is not None:
            ids = [self.ctl.image_id]
        self.models.detect(ids)

    def export_dialog(self):
        from pollenstudio.gui.transfer import ExportDialog

        return self._open_transfer(ExportDialog)

    def import_dialog(self):
        from pollenstudio.gui.transfer import ImportDialog

        return self._open_transfer(ImportDialog)

    def _open_transfer(self, dialog_cls):
        """Show an import/export dialog (non-modal: the job runs in a worker)."""
        if self.ctl.project is None:
            return None
        dlg = dialog_cls(self.transfer, self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self._transfer = dlg
        return dlg

    def training_dashboard(self):
        """Model > Train...: one dashboard per open project, non-modal; a run goes on while
        it is hidden and showing it again shows the run."""
        from pollenstudio.gui.training import TrainingDashboard

        if self.ctl.project is None:
            return None
        dlg = getattr(self, "_training", None)
        if dlg is None or dlg.project is not self.ctl.project:
            dlg = TrainingDashboard(self.models, self)
            self._training = dlg
        dlg.show()
        dlg.raise_()
        dlg.activateWindow()
        return dlg

    def model_progress(self):
        """Model > Model progress...: the learning curve of this project's versions and the
        taxa with too few reviewed grains (non-modal, one per project)."""
        from pollenstudio.gui.model_progress import ModelProgressDialog

        if self.ctl.project is None:
            return None
        dlg = getattr(self, "_progress", None)
        if dlg is None or dlg.project is not self.ctl.project:
            dlg = ModelProgressDialog(self.models, self)
            self._progress = dlg
        else:
            dlg.refresh()
        dlg.show()
        dlg.raise_()
        return dlg

    def choose_model_dialog(self) -> None:
        if self.ctl.project is None:
            show_error(self, "No project open", "Open a project first: a model version belongs to a project.")
            return
        path, _ = QFileDialog.getOpenFileName(self, "Choose model file", "", "PollenStudio models (*.safetensors)")
        if path:
            self.models.choose_model(path)

    def _taxon_name(self, cid: int) -> str:
        return next((display_taxon(c.name) for c in self.ctl.categories() if c.id == cid), f"taxon {cid}")

    def set_flip_pass(self, value: str) -> None:
        """Detection's second pass on the mirrored image: "auto" (with a GPU), "on", "off"."""
        self.models.flip_pass = {"auto": None, "on": True, "off": False}[value]
        self.settings.setValue("detect/flip_pass", value)
        self.flip_pass_actions[value].setChecked(True)

    def _detect_started(self, total: int) -> None:
        import time

        from pollenstudio.gui.model_jobs import detect_progress_text

        self._detect_t0 = time.monotonic()
        self._detect_total = total
        self._detect_first = None  # (time, done) when the first image finished: model loading excluded from the ETA
        self.statusBar().clearMessage()  # a note would be drawn over the progress widgets
        self.st_progress.setRange(0, max(total, 1))
        self.st_progress.setValue(0)
        self.st_progress.setFormat(detect_progress_text(0, total))
        self.st_eta.setText("loading the model...")
        for w in (self.st_progress, self.st_eta, self.st_cancel):
            w.show()
        self.act_cancel_detect.setEnabled(True)

    def _detect_progress(self, done: int, total: int, name: str) -> None:
        import time

        from pollenstudio.engine.predict import tile_progress
        from pollenstudio.gui.model_jobs import detect_progress_text, format_eta

        # a large scan is many tiles: the bar and the ETA move with them, not per image
        tiles = tile_progress(name)
        where = ""
        fdone = float(done)
        if tiles is not None:
            name, k, n = tiles
            fdone = done + k / max(n, 1)
            where = f" · tile {k}/{n}"
        self.st_progress.setRange(0, max(total, 1) * 100)
        self.st_progress.setValue(int(round(fdone * 100)))
        self.st_progress.setFormat(detect_progress_text(done, total))  # "%v / %m" read "0 / 100" for one image
        if fdone <= 0:
            return
        name = name.rsplit("/", 1)[-1]
        now = time.monotonic()
        if self._detect_first is None:
            self._detect_first = (now, fdone)
            self.st_eta.setText(name + where)
            return
        t1, d1 = self._detect_first
        rate = (fdone - d1) / max(now - t1, 1e-6)
        eta = (total - fdone) / rate if rate > 0 else None
        self.st_eta.setText(f"{name}{where}  ·  {format_eta(eta)}")

    def _detect_ended(self, words: str) -> None:
        for w in (self.st_progress, self.st_eta, self.st_cancel):
            w.hide()
        if self.ctl.project is not None and getattr(self, "_detect_total", 0) > 1:
            self.images.resort()  # new proposals: "review this next" has a new order
        self.act_cancel_detect.setEnabled(False)
        self.statusBar().showMessage(words, 8000)

    def _refresh_model_label(self) -> None:
        c = self.models
        if c.project is None:
            self.st_model.clear()
            return
        name = c.model_name()
        model = f"model {name}" if name else ("default model" if c.model_available() else "no model chosen")
        # the device is found in a worker (torch import): shown once known, never a placeholder
        # (known once a model was loaded: importing torch just for this label stalled the
        # GUI for 200-300 ms while a project opened, see bench/ui_stall.py)
        self.st_model.setText(f"{model} · {c.device_text}" if c.device_text else model)

    # ------------------------------------------------------------------ dialogs
    def _click_to_box(self, x: float, y: float) -> str:
        """B + click: with a model, its candidate at the click (in a worker), else the
        grain's outline found here."""
        finder = self.models.find_box_at if self.models.model_available() else None
        half = CLICK_HALF_WINDOW

        def pixels():  # full-resolution pixels around the click (a slide is never read whole)
            img = self.canvas.image
            return None if img is None else img.window(x - half, y - half, x + half, y + half)

        return self.ctl.click_to_box(x, y, pixels, finder)

    def open_gallery(self, category_id: int | None = None):
        """Review > Taxon gallery (Ctrl+G): the taxon of the selected box (or the one picked
        in the Taxa panel, or the first)."""
        from pollenstudio.gui.gallery import GalleryDialog

        c = self.ctl
        if c.project is None:
            return None
        if category_id is None:
            a = c.selected_annotation()
            picked = self.taxa.selected_category()
            category_id = a.category_id if a is not None else (picked.id if picked is not None else None)
        dlg = getattr(self, "_gallery", None)
        if dlg is None or dlg.ctl.project is not c.project:
            if dlg is not None:
                dlg.close()
            dlg = self._gallery = GalleryDialog(c, self)
            dlg.openRequested.connect(lambda *_: (self.raise_(), self.activateWindow(), self.canvas.view.setFocus()))
        if category_id is not None:
            dlg.show_taxon(category_id)
        dlg.show()
        dlg.raise_()
        dlg.activateWindow()
        dlg.view.setFocus()
        return dlg

    def pick_taxon(self) -> None:
        if self.ctl.selected_annotation() is None:
            self.statusBar().showMessage("Select a box first", 4000)
            return
        dlg = TaxonPicker([r.category for r in self.ctl.taxon_rows()], self, allow_new=True)
        if dlg.exec() and dlg.chosen is not None:
            self.ctl.assign(dlg.chosen)
        elif dlg.result() and dlg.new_name:  # a name no taxon has: made, and the box takes it
            self.ctl.add_and_assign(dlg.new_name)

    def show_help(self) -> None:
        dlg = HelpDialog(self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self._help = dlg

    # ------------------------------------------------------------------ layout memory
    def _restore_layout(self) -> None:
        geo = self.settings.value("window/geometry")
        if isinstance(geo, QByteArray) and not geo.isEmpty():
            self.restoreGeometry(geo)

    def closeEvent(self, ev) -> None:
        self._save_review_state()
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.ctl.close_project()
        super().closeEvent(ev)
