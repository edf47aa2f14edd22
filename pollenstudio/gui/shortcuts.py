"""The keyboard map, in one table: the main window registers actions from it and the F1
help dialog lists it, so the two cannot disagree. No Qt here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shortcut:
    name: str  # action id
    text: str  # menu text
    keys: tuple[str, ...]  # QKeySequence strings
    group: str
    tip: str = ""
    enabled: bool = True


SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut("accept", "Accept proposal", ("A",), "Review", "Accept the selected proposal and go to the next"),
    Shortcut("reject", "Reject / delete box", ("X", "Delete"), "Review",
             "Reject the selected proposal (or delete a box you drew) and go to the next"),
    Shortcut("next_box", "Next proposal", ("Tab",), "Review", "Select the next undecided proposal"),
    Shortcut("prev_box", "Previous proposal", ("Shift+Tab", "Backtab"), "Review", "Select the previous undecided proposal"),
    Shortcut("next_image", "Next image", ("N",), "Review",
             "Open the next image in the list's order: by default \"Review this next\", the image whose review is "
             "expected to teach the model most"),
    Shortcut("prev_image", "Previous image", ("P",), "Review", "Open the previous image in the list"),
    Shortcut("gallery", "Taxon gallery...", ("Ctrl+G",), "Review",
             "Every grain of a taxon across the project as crops: filter, sort, relabel / accept / reject many"),
    Shortcut("finish_image", "Image finished", ("Return", "Enter"), "Review",
             "Mark the image reviewed (every grain boxed) and open the next image to review"),
    Shortcut("no_grains", "No grains on this image", ("0",), "Review",
             "Reject the image's proposals and mark it reviewed, in one step"),
    Shortcut("pick_taxon", "Choose taxon...", ("T",), "Review", "Search the taxa and assign one to the selected box"),
    *(
        Shortcut(f"taxon_{i}", f"Assign taxon {i}", (str(i),), "Review", f"Give the selected box the taxon with hotkey {i}")
        for i in range(1, 10)
    ),
    Shortcut("draw", "Draw new box", ("B",), "Edit",
             "Then drag on the image, or click a grain to box it (the model's candidate there, else the grain's "
             "outline); Esc cancels"),
    Shortcut("nudge_left", "Nudge left", ("Left",), "Edit", "Move the selected box 1 px (Shift: 10 px)"),
    Shortcut("nudge_right", "Nudge right", ("Right",), "Edit"),
    Shortcut("nudge_up", "Nudge up", ("Up",), "Edit"),
    Shortcut("nudge_down", "Nudge down", ("Down",), "Edit"),
    Shortcut("nudge_left_big", "Nudge left 10 px", ("Shift+Left",), "Edit"),
    Shortcut("nudge_right_big", "Nudge right 10 px", ("Shift+Right",), "Edit"),
    Shortcut("nudge_up_big", "Nudge up 10 px", ("Shift+Up",), "Edit"),
    Shortcut("nudge_down_big", "Nudge down 10 px", ("Shift+Down",), "Edit"),
    Shortcut("undo", "Undo", ("Ctrl+Z",), "Edit", "Undo the last edit (saved at once)"),
    Shortcut("redo", "Redo", ("Ctrl+Shift+Z", "Ctrl+Y"), "Edit", "Redo the edit you undid"),
    Shortcut("fit", "Fit image", ("F",), "View", "Show the whole image"),
    Shortcut("zoom_in", "Zoom in", ("+", "="), "View", "Also the mouse wheel"),
    Shortcut("zoom_out", "Zoom out", ("-",), "View", "Also the mouse wheel"),
    Shortcut("labels", "Show labels", ("L",), "View",
             "Taxon labels on / off; at low zoom they shrink to a short form by themselves"),
    Shortcut("show_rejected", "Show rejected boxes", ("R",), "View",
             "Show rejected proposals (red, crossed) to find a wrong reject; the Selected box panel lists them"),
    Shortcut("edge_map", "Edges the model sees", ("E",), "View",
             "Show / hide the edges the model sees: fine (exine outline, sculpture), medium or coarse (grain "
             "shape), chosen in the Overlay bar; computed for the part of the image on screen"),
    Shortcut("gradcam", "Grad-CAM overlay", ("G",), "View",
             "Show / hide what made the model call the selected box its taxon (follows the selection)"),
    Shortcut("plane_next", "Next focal plane", ("PgDown",), "Focus",
             "Focal stacks: one plane deeper (also Ctrl+wheel down); boxes stay put"),
    Shortcut("plane_prev", "Previous focal plane", ("PgUp",), "Focus",
             "Focal stacks: one plane shallower (also Ctrl+wheel up)"),
    Shortcut("best_focus", "Best focus", ("Home",), "Focus", "Focal stacks: the plane sharpest over the whole field"),
    Shortcut("edf_view", "All-in-focus view (EDF)", ("End",), "Focus",
             "Focal stacks: every pixel from the plane where it is sharpest (extended depth of field); again: back "
             "to a plane"),
    Shortcut("set_plane", "Set box plane to plane shown", ("Z",), "Focus",
             "Focal stacks: the selected grain is sharpest on the plane shown (undoable)"),
    Shortcut("next_field", "Next field of the slide", ("]",), "Slide",
             "Slide scans: the next field of view in the order a slide is traversed under the microscope (rows "
             "left to right, then right to left); it is marked traversed and counts in the Count panel"),
    Shortcut("prev_field", "Previous field of the slide", ("[",), "Slide",
             "Slide scans: the previous field of view in the traverse"),
    Shortcut("field_visited", "Field traversed (on / off)", ("V",), "Slide",
             "Slide scans: mark or unmark the field in the middle of the view as traversed. On a slide, Tab goes "
             "from grain to grain along the same traverse"),
    Shortcut("detect_image", "Detect this image", ("Ctrl+D",), "Model",
             "Run the active model on the image on screen (Model menu: selected, unreviewed, all)"),
    Shortcut("cancel_detect", "Cancel detection", ("Ctrl+.",), "Model",
             "Stop detection after the current batch; finished images keep their proposals"),
    Shortcut("train", "Train...", ("Ctrl+T",), "Model",
             "Retrain on the reviewed images with live curves, compare with the active model, choose a version"),
    Shortcut("export", "Export...", ("Ctrl+E",), "File", "Write COCO, YOLO or a CSV of counts"),
    Shortcut("help", "Keyboard shortcuts", ("F1",), "Help", "List every shortcut"),
)

# Not actions (handled by the canvas itself) but listed in help.
CANVAS_KEYS: tuple[tuple[str, str], ...] = (
    ("Space (hold) + drag", "Pan"),
    ("Drag on empty image / middle button", "Pan"),
    ("Mouse wheel", "Zoom at the pointer"),
    ("Ctrl + mouse wheel", "Focal stacks: step through the planes"),
    ("Click a box", "Select it (the smallest box under the pointer)"),
    ("Drag a box / its handles", "Move / resize the selected box"),
    ("B, then click a grain", "Box it: the model's candidate there, else its outline"),
    ("B, then drag", "Draw a box (a drag under 4 image px / 8 screen px is ignored)"),
    ("Esc", "Cancel drawing or dragging"),
)


def by_name() -> dict[str, Shortcut]:
    return {s.name: s for s in SHORTCUTS}
