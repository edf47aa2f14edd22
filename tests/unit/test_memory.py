"""Memory after working on a large image (issue 28 item 15: the app reached about 4 GB after
detection, edge map and Grad-CAM on one 2592 x 1944 field; ``bench/memory_image.py``)."""

import gc
import sys
import weakref

import numpy as np
import pytest
from fixtures_models import IMGSZ, render_scene, tiny_model_path, tiny_predictor  # noqa: F401

from pollenstudio.core.types import Box, Detection


def _mass_inside(cam, box, factor=1.5):
    b = box.expanded(factor).clipped(cam.shape[1], cam.shape[0])
    inside = cam[int(b.y1) : int(np.ceil(b.y2)), int(b.x1) : int(np.ceil(b.x2))].sum()
    return inside / max(cam.sum(), 1e-12)


def test_grad_cam_runs_a_large_window_at_a_bounded_input_and_keeps_no_graph(tiny_predictor, monkeypatch):
    """A window larger than the Grad-CAM input limit is shrunk to it (its autograd graph
    grows with the input's area: 3.3 GB at 2048 px); the map still covers the whole window
    and lands on the grain, and nothing of the pass stays referenced afterwards."""
    from pollenstudio.engine import explain

    limit = 2 * IMGSZ
    monkeypatch.setattr(explain, "GRADCAM_MAX_INPUT", limit, raising=False)
    side = 4 * IMGSZ  # grains twice the size the tiny model knows: at the limit, their own size
    img, boxes, classes = render_scene(side, side, [(300, 340, 0, 100), (760, 700, 1, 100)], seed=9)
    ep = explain.whole_image_predictor(tiny_predictor, side, side)  # as the app's Grad-CAM job does
    assert ep.imgsz == side
    seen, inputs = [], []

    def record(_mod, args):
        seen.append(tuple(args[0].shape))
        inputs.append(weakref.ref(args[0]))

    handle = ep.explain_model.register_forward_pre_hook(record)
    try:
        box = Box(*map(float, boxes[0]))
        cam = explain.grad_cam(ep, img, Detection(box, int(classes[0]), "a", 0.9))
    finally:
        handle.remove()
    assert seen and max(max(s[2:]) for s in seen) <= limit, seen
    assert cam.shape == (side, side) and cam.max() == pytest.approx(1.0)
    assert _mass_inside(cam, box) > 0.5
    gc.collect()
    assert all(r() is None for r in inputs), "the Grad-CAM pass is still referenced after it returned"


def test_detection_on_a_cpu_runs_one_model_input_at_a_time(tiny_model_path):
    """On a CPU batches are no faster and OpenVINO / ONNX Runtime keep a batch's activations
    for as long as the model is loaded: without an explicit batch, one tile per pass; a GPU
    keeps batching; an explicit batch is honoured."""
    import torch

    from pollenstudio.engine.predict import Predictor

    pred = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3)
    assert pred.batch == 1
    sizes = []
    handle = pred.model.register_forward_pre_hook(lambda _m, args: sizes.append(int(args[0].shape[0])))
    try:
        img, _b, _c = render_scene(3 * IMGSZ, 3 * IMGSZ, [(200, 200, 0, 50), (560, 500, 1, 50)], seed=4)
        dets = pred.predict(img)
    finally:
        handle.remove()
    assert len(sizes) > 1 and set(sizes) == {1}
    assert len(dets) >= 2
    from pollenstudio.engine.predict import GPU_BATCH, default_batch

    assert default_batch(torch.device("cuda")) == GPU_BATCH > 1
    assert Predictor.from_checkpoint(tiny_model_path, device="cpu", batch=4).batch == 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; malloc_trim is glibc's")
def test_freed_heap_goes_back_to_the_system():
    """Memory freed between blocks still in use stays resident until the allocator is asked
    to hand it back (what a worker job leaves behind)."""
    from pollenstudio.core.memory import release_freed_heap

    def rss_mb() -> float:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS")) / 1024

    blocks = [bytearray(64 * 1024) for _ in range(2048)]  # 128 MB in malloc's heap (under mmap's threshold)
    kept = blocks[::8]  # every 8th stays: the freed ones are holes, not the heap's top
    del blocks
    gc.collect()
    before = rss_mb()
    if not release_freed_heap():
        pytest.skip("no glibc malloc_trim here")
    after = rss_mb()
    assert before - after > 64, (before, after)
    assert len(kept) == 256


def test_release_soon_runs_once_after_a_burst_of_jobs_and_not_at_once(monkeypatch):
    """Jobs ending together ask for one release, a moment later, off the caller's thread
    (a release the moment a job ended stalled the GUI that drew its result)."""
    import threading
    import time

    from pollenstudio.core import memory

    calls = []
    monkeypatch.setattr(memory, "release_freed_heap", lambda: calls.append(threading.current_thread()) or True)
    for _ in range(5):
        memory.release_freed_heap_soon(0.2)
    assert calls == []
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert len(calls) == 1 and calls[0] is not threading.current_thread()
