"""Boxes follow the pixels under every augmentation.

Each test renders the boxes as a label mask (box i filled with value i), pushes the mask
through the same transform as the boxes (nearest-neighbour, zero border) and checks that
each surviving box is the bounding box of its label in the transformed mask, and that a
box is dropped exactly when most of its grain left the frame.
"""

import cv2
import numpy as np
import pytest

from pollenstudio.engine import augment as A


def letterbox_params(w: int, h: int, imgsz: int) -> tuple[float, float, float]:
    """(ratio, pad_x, pad_y) that fit a ``w x h`` image into an ``imgsz`` square, centred."""
    r = min(imgsz / w, imgsz / h)
    nw, nh = round(w * r), round(h * r)
    return r, float((imgsz - nw) // 2), float((imgsz - nh) // 2)


def letterbox(
    img: np.ndarray, boxes, imgsz: int, pad_value: int = A.PAD_VALUE, interpolation: int = cv2.INTER_LINEAR
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Reference letterbox for label masks (any channel count, chosen interpolation):
    resize keeping the aspect ratio and pad to ``imgsz x imgsz``.

    Returns (image, boxes, (ratio, pad_x, pad_y)); a box maps as ``x * ratio + pad_x``.
    """
    h, w = img.shape[:2]
    r, px, py = letterbox_params(w, h, imgsz)
    nw, nh = round(w * r), round(h * r)
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=interpolation)
    left, top = (imgsz - nw) // 2, (imgsz - nh) // 2
    right, bottom = imgsz - nw - left, imgsz - nh - top
    channels = 1 if img.ndim == 2 else img.shape[2]
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * channels)
    b = A._as_boxes(boxes if boxes is not None else np.zeros((0, 4))).copy()
    # exact per-axis factors: rounding the resized size changes the ratio slightly
    sx, sy = nw / w, nh / h
    b[:, [0, 2]] = b[:, [0, 2]] * sx + left
    b[:, [1, 3]] = b[:, [1, 3]] * sy + top
    return img, b, (r, float(left), float(top))


def _random_sample(rng, w, h, n, first_label=1):
    """Non-overlapping integer boxes; mask has label first_label+i inside box i."""
    mask = np.zeros((h, w, 3), np.uint8)
    boxes, labels = [], []
    tries = 0
    while len(boxes) < n and tries < 500:
        tries += 1
        bw, bh = int(rng.integers(6, w // 3)), int(rng.integers(6, h // 3))
        x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        if mask[y1 : y1 + bh, x1 : x1 + bw].any():
            continue
        lab = first_label + len(boxes)
        mask[y1 : y1 + bh, x1 : x1 + bw] = lab
        boxes.append((x1, y1, x1 + bw, y1 + bh))
        labels.append(lab)
    return mask, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


def _mask_box(mask, lab):
    ys, xs = np.nonzero(mask[:, :, 0] == lab)
    if len(xs) == 0:
        return None, 0
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32), len(xs)


def _check(mask_out, boxes_out, labels_out, labels_in, areas_in, scale, min_visible, tol):
    """Every kept box matches its mask; every dropped box really was mostly cut off."""
    kept = set(int(v) for v in labels_out)
    for b, lab in zip(boxes_out, labels_out):
        mb, npx = _mask_box(mask_out, int(lab))
        assert mb is not None, f"box {lab} kept but its grain is not in the image"
        np.testing.assert_allclose(b, mb, atol=tol, err_msg=f"label {lab}")
    for lab, area in zip(labels_in, areas_in):
        if int(lab) in kept:
            continue
        _, npx = _mask_box(mask_out, int(lab))
        # dropped: what is left is below the threshold (slack for pixel rounding)
        assert npx <= (min_visible + 0.1) * area * scale * scale + 4 * tol * np.sqrt(area) * scale, (lab, npx, area)


def _areas(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


@pytest.mark.parametrize("fn", ["hflip", "vflip", "rot1", "rot2", "rot3"])
def test_flips_and_rotations_are_exact(fn):
    rng = np.random.default_rng(1)
    for _ in range(5):
        w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))  # non-square on purpose
        mask, boxes, labels = _random_sample(rng, w, h, 4)
        if fn == "hflip":
            out, b = A.hflip(mask, boxes)
        elif fn == "vflip":
            out, b = A.vflip(mask, boxes)
        else:
            out, b = A.rot90(mask, boxes, int(fn[-1]))
        assert out.flags.c_contiguous
        for bb, lab in zip(b, labels):
            mb, _ = _mask_box(out, int(lab))
            np.testing.assert_array_equal(bb, mb)


def test_affine_scale_translate_clips_and_drops():
    rng = np.random.default_rng(2)
    dropped_any = kept_any = 0
    for _ in range(20):
        w, h = int(rng.integers(60, 120)), int(rng.integers(60, 120))
        mask, boxes, labels = _random_sample(rng, w, h, 5)
        m = A.random_affine_params(rng, w, h, 96, 96, scale=0.5, translate=0.3)
        out, b, c = A.warp(mask, boxes, labels, m, 96, 96, min_visible=0.4, interpolation=cv2.INTER_NEAREST, pad_value=0)
        s = m[0, 0]
        assert (b[:, [0, 2]] >= 0).all() and (b[:, [0, 2]] <= 96).all()
        assert (b[:, [1, 3]] >= 0).all() and (b[:, [1, 3]] <= 96).all()
        _check(out, b, c, labels, _areas(boxes), s, 0.4, tol=max(1.0, s) + 0.51)
        dropped_any += len(labels) - len(c)
        kept_any += len(c)
    assert dropped_any > 0 and kept_any > 0  # the sweep exercised both cases


def test_clip_and_filter_threshold():
    boxes = np.array([[-6, 0, 4, 10], [-4, 0, 6, 10], [0, 0, 1, 10]], np.float32)  # 40 %, 60 %, 1 px wide
    b, c = A.clip_and_filter(boxes, np.array([0, 1, 2]), 50, 50, min_visible=0.5, min_size=2)
    assert c.tolist() == [1]
    np.testing.assert_array_equal(b[0], [0, 0, 6, 10])


def test_letterbox_maps_boxes_like_pixels():
    rng = np.random.default_rng(3)
    for w, h in [(120, 60), (50, 100), (64, 64), (33, 71)]:
        mask, boxes, labels = _random_sample(rng, w, h, 3)
        out, b, (r, px, py) = letterbox(mask, boxes, 64, pad_value=0, interpolation=cv2.INTER_NEAREST)
        assert out.shape == (64, 64, 3)
        for bb, lab in zip(b, labels):
            mb, _ = _mask_box(out, int(lab))
            np.testing.assert_allclose(bb, mb, atol=1.51)
        # the padding is centred and the image touches two opposite sides
        assert min(px, py) == 0


def test_mosaic_of_four_keeps_each_grain_with_its_box():
    rng = np.random.default_rng(4)
    for _ in range(6):
        samples, labels_in, areas_in, scales = [], [], [], []
        for i in range(4):
            w, h = int(rng.integers(50, 100)), int(rng.integers(50, 100))
            mask, boxes, labels = _random_sample(rng, w, h, 3, first_label=1 + 10 * i)
            samples.append((mask, boxes, labels))
            labels_in += labels.tolist()
            scales.append(64 / max(w, h))
            areas_in += (_areas(boxes) * (64 / max(w, h)) ** 2).tolist()
        canvas, b, c = A.mosaic4(samples, 64, rng, pad_value=0, interpolation=cv2.INTER_NEAREST)
        assert canvas.shape == (128, 128, 3)
        # canvas boxes are clipped to the visible tile but not yet filtered
        for bb, lab in zip(b, c):
            mb, npx = _mask_box(canvas, int(lab))
            if npx == 0:
                assert (bb[2] - bb[0]) * (bb[3] - bb[1]) < 3.0 * max(bb[2] - bb[0], bb[3] - bb[1], 1)
                continue
            np.testing.assert_allclose(bb, mb, atol=max(1.0, max(scales)) + 0.51)


@pytest.mark.parametrize("mosaic", [0.0, 1.0])
def test_full_pipeline_boxes_match_pixels(mosaic):
    """The whole Augmenter (flips, rotations, mosaic, affine) with a fresh label per load."""
    rng = np.random.default_rng(5)
    state = {"next": 1}
    record = {}

    def load(i):
        r = np.random.default_rng(100 + i)
        w, h = int(r.integers(60, 110)), int(r.integers(60, 110))
        mask, boxes, labels = _random_sample(r, w, h, 3, first_label=state["next"])
        state["next"] += 10
        for lab, a in zip(labels, _areas(boxes)):
            record[int(lab)] = (a, 64 / max(w, h))
        return mask, boxes, labels

    cfg = A.AugmentConfig(mosaic=mosaic, scale=0.4, translate=0.2, min_visible=0.4)
    aug = A.Augmenter(cfg, 64, load, n=8, interpolation=cv2.INTER_NEAREST, pad_value=0, photometric=False)
    total_kept = 0
    for k in range(12):
        state["next"] = 1
        record.clear()
        img, b, c = aug(k % 8, rng, use_mosaic=True)
        assert img.shape == (64, 64, 3)
        for bb, lab in zip(b, c):
            mb, _ = _mask_box(img, int(lab))
            assert mb is not None
            area, base_scale = record[int(lab)]
            np.testing.assert_allclose(bb, mb, atol=2.6, err_msg=str(lab))
        total_kept += len(c)
    assert total_kept > 0


def test_photometric_jitter_keeps_shape_and_dtype_and_changes_pixels():
    rng = np.random.default_rng(6)
    img = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    out = A.hsv_jitter(img, rng, 0.015, 0.7, 0.4)
    out = A.brightness_contrast(out, rng, 0.1, 0.2)
    out = A.gaussian_blur(out, rng)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() > 1.0


def test_off_config_is_plain_letterbox():
    rng = np.random.default_rng(7)
    mask, boxes, labels = _random_sample(rng, 80, 40, 3)
    aug = A.Augmenter(A.AugmentConfig.off(), 64, lambda i: (mask, boxes, labels), n=1, pad_value=0, interpolation=cv2.INTER_NEAREST)
    img, b, c = aug(0, rng)
    ref, rb, _ = letterbox(mask, boxes, 64, pad_value=0, interpolation=cv2.INTER_NEAREST)
    np.testing.assert_allclose(b, rb, atol=0.51)
    assert c.tolist() == labels.tolist()


def _detail(img):
    """High-frequency energy: mean absolute Laplacian."""
    return float(np.abs(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F)).mean())


def test_low_resolution_degrades_pixels_not_boxes():
    rng = np.random.default_rng(8)
    img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 70, 70], [80, 20, 150, 90]], np.float32)
    out = A.low_resolution(img, boxes, rng, 4.0)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert _detail(out) < 0.5 * _detail(img)  # fine detail gone, as in an upsampled low-res frame
    # the same draw gives the same frame
    a = A.low_resolution(img, boxes, np.random.default_rng(3), 4.0)
    b = A.low_resolution(img, boxes, np.random.default_rng(3), 4.0)
    assert np.array_equal(a, b)


def test_low_resolution_leaves_tiny_grains_and_empty_frames_alone():
    rng = np.random.default_rng(9)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    tiny = np.array([[5, 5, 15, 15]], np.float32)  # 10 px: degrading by 1.5 would leave < 8 px
    assert np.array_equal(A.low_resolution(img, tiny, rng, 4.0), img)
    assert np.array_equal(A.low_resolution(img, np.zeros((0, 4), np.float32), rng, 4.0), img)


def test_low_res_in_the_pipeline_keeps_boxes_exact():
    rng = np.random.default_rng(10)
    mask, boxes, labels = _random_sample(rng, 80, 40, 3)
    cfg = A.AugmentConfig.off()
    cfg.low_res = 0.999
    aug = A.Augmenter(cfg, 64, lambda i: (mask, boxes, labels), n=1)
    img, b, c = aug(0, np.random.default_rng(1))
    ref, rb, _ = letterbox(mask, boxes, 64)
    np.testing.assert_allclose(b, rb, atol=0.51)
    assert A.AugmentConfig.off().low_res == 0  # validation frames are never degraded
