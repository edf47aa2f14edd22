"""ONNX Runtime / OpenVINO backends and ONNX exports give PyTorch's detections.

Skipped cleanly where the optional runtimes (pip install 'pollenstudio[cpu-fast]') are not
installed; the auto-fallback test runs everywhere."""

import os

import numpy as np
import pytest
import torch
from fixtures_models import IMGSZ, render_scene, tiny_model_path  # noqa: F401

from pollenstudio.engine import runtime as rt
from pollenstudio.engine.export import RuntimeMissingError, installed
from pollenstudio.engine.predict import Predictor

HAVE_EXPORT = installed("onnx") and installed("onnxscript")
needs_ort = pytest.mark.skipif(not (HAVE_EXPORT and installed("onnxruntime")), reason="onnx/onnxruntime not installed")
needs_ov = pytest.mark.skipif(not (HAVE_EXPORT and installed("openvino")), reason="onnx/openvino not installed")


def _images():
    frame, fb, _ = render_scene(IMGSZ + 64, IMGSZ, [(80.0, 90.0, 0, 46.0), (220.0, 160.0, 1, 52.0)], seed=11)
    scan, sb, _ = render_scene(3 * IMGSZ + 40, 2 * IMGSZ + 30,
                               [(100.0, 100.0, 0, 44.0), (IMGSZ - 5.0, 300.0, 1, 50.0), (600.0, 420.0, 0, 40.0)], seed=12)
    return [frame, scan], [fb, sb]


def _same(a, b, box_tol=0.5, score_tol=1e-3):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.label == y.label
        assert abs(x.score - y.score) <= score_tol
        assert np.abs(np.array(x.box.xyxy()) - np.array(y.box.xyxy())).max() <= box_tol


@pytest.fixture(scope="module")
def torch_results(tiny_model_path):  # noqa: F811
    imgs, _ = _images()
    pred = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4)
    res = list(pred.iter_predict(imgs))
    assert res[1].tiles > 1 and res[0].tiles == 1  # a letterboxed frame and a tiled scan
    return res


@pytest.mark.parametrize("backend", [pytest.param("onnxruntime", marks=needs_ort), pytest.param("openvino", marks=needs_ov)])
def test_runtime_backend_matches_pytorch(backend, tiny_model_path, torch_results):  # noqa: F811
    imgs, _ = _images()
    pred = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4, backend=backend)
    assert pred.backend == backend and pred.runtime is not None
    assert ("OpenVINO" if backend == "openvino" else "ONNX Runtime") in pred.device_description
    for r, t in zip(pred.iter_predict(imgs), torch_results):
        assert r.tiles == t.tiles and r.skipped == t.skipped
        _same(r.detections, t.detections)
    # edge maps and Grad-CAM stay on PyTorch: forward() is still the torch model
    out = pred.forward(pred.to_tensor([pred.letterbox_image(imgs[0])[0]]))
    assert isinstance(out[0], torch.Tensor)


@needs_ort
def test_export_is_cached_per_model_and_size(tiny_model_path):  # noqa: F811
    from pollenstudio.engine.export import cached_onnx, file_sha256
    from pollenstudio.detector.checkpoint import load_checkpoint

    model, cfg, meta = load_checkpoint(tiny_model_path)
    p1 = cached_onnx(model, cfg, IMGSZ, tiny_model_path, meta)
    t1 = p1.stat().st_mtime_ns
    p2 = cached_onnx(model, cfg, IMGSZ, tiny_model_path, meta)
    assert p1 == p2 and p2.stat().st_mtime_ns == t1  # reused, not exported again
    assert file_sha256(tiny_model_path)[:16] in p1.name and f"-{IMGSZ}-" in p1.name
    assert p1.parent.name == tiny_model_path.name + ".exports"


@needs_ort
def test_onnx_metadata_names_classes_and_preprocessing(tiny_model_path):  # noqa: F811
    import ast
    import json

    from pollenstudio.detector.checkpoint import load_checkpoint
    from pollenstudio.engine.export import cached_onnx, read_metadata

    model, cfg, meta = load_checkpoint(tiny_model_path)
    md = read_metadata(cached_onnx(model, cfg, IMGSZ, tiny_model_path, meta))
    assert ast.literal_eval(md["names"]) == {i: n for i, n in enumerate(cfg.class_names)}
    assert ast.literal_eval(md["imgsz"]) == [IMGSZ, IMGSZ]
    pre = json.loads(md["preprocessing"])
    assert pre["channels"] == "RGB" and "114" in pre["resize"]
    assert json.loads(md["pollenstudio"])["class_names"] == list(cfg.class_names)


def _np_nms(boxes, scores, iou):
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        ov = inter / (area(boxes[i]) + area(boxes[rest]) - inter)
        order = rest[ov <= iou]
    return np.array(keep, np.int64)


@needs_ort
def test_yolo_convention_export_decodes_to_the_same_boxes(tiny_model_path, tmp_path):  # noqa: F811
    """One output (1, 4 + nc, anchors) of xywh in input px + class scores, decoded by a plain
    numpy decoder (what X-AnyLabeling and other YOLOv8 tools do), gives PyTorch's boxes."""
    import onnxruntime as ort

    from pollenstudio.detector.checkpoint import load_checkpoint
    from pollenstudio.detector.postprocess import postprocess
    from pollenstudio.engine.export import export_onnx

    model, cfg, meta = load_checkpoint(tiny_model_path)
    path = export_onnx(model, cfg, tmp_path / "y.onnx", IMGSZ, "yolo", meta)
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # like any new file, not mkstemp's 0600 (issue 31)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert list(inp.shape) == [1, 3, IMGSZ, IMGSZ]
    pred = Predictor(model, cfg, device="cpu", conf=0.3)
    imgs, _ = _images()
    arr, _ = pred.letterbox_image(imgs[0])
    x = pred.to_tensor([arr])
    (out,) = sess.run(None, {inp.name: x.numpy()})
    nc = len(cfg.class_names)
    n_anchors = sum((IMGSZ // s) ** 2 for s in (8, 16, 32))
    assert out.shape == (1, 4 + nc, n_anchors)
    # numpy decoder: per anchor best class, threshold, xywh -> xyxy, class-aware NMS
    p = out[0].T
    cls, score = p[:, 4:].argmax(1), p[:, 4:].max(1)
    m = score > 0.3
    xyxy = np.concatenate([p[m, :2] - p[m, 2:4] / 2, p[m, :2] + p[m, 2:4] / 2], 1)
    shifted = xyxy + cls[m, None] * 4096.0
    keep = _np_nms(shifted, score[m], 0.7)
    got = sorted(zip(cls[m][keep].tolist(), np.round(score[m][keep], 3).tolist(), xyxy[keep].tolist()), key=lambda t: -t[1])
    ref = postprocess(pred.forward(x), pred.strides, conf=0.3, iou=0.7, reg_max=cfg.reg_max)[0]
    assert len(got) == len(ref) > 0
    for (c, s, b), rb, rs, rc in zip(got, ref.boxes.numpy(), ref.scores.numpy(), ref.classes.numpy()):
        assert c == int(rc) and abs(s - float(rs)) <= 1e-3
        assert np.abs(np.array(b) - rb).max() <= 0.5


def test_auto_falls_back_to_pytorch_without_a_runtime(monkeypatch, tiny_model_path):  # noqa: F811
    monkeypatch.setattr(rt, "installed", lambda module: False)
    assert rt.installed_runtimes() == []
    assert rt.resolve_backend("auto", "cpu") == "torch"
    pred = Predictor.from_checkpoint(tiny_model_path, device="cpu", backend="auto")
    assert pred.backend == "torch" and pred.runtime is None
    with pytest.raises(RuntimeMissingError, match="cpu-fast"):
        rt.resolve_backend("onnxruntime", "cpu")


def test_auto_is_pytorch_on_a_gpu_and_runtimes_refuse_one(monkeypatch):
    monkeypatch.setattr(rt, "installed", lambda module: True)
    assert rt.resolve_backend("auto", "cpu") == "openvino"  # fastest installed CPU runtime first
    assert rt.resolve_backend("auto", "cuda") == "torch"
    with pytest.raises(rt.BackendError, match="CPU only"):
        rt.resolve_backend("openvino", "cuda")
    with pytest.raises(rt.BackendError, match="unknown backend"):
        rt.resolve_backend("tensorrt", "cpu")


def test_a_missing_runtime_is_refused_before_anything_is_written(monkeypatch, tmp_path, capsys):
    """detect --backend X without X installed: a clear error, and no project is made."""
    import sys

    import cv2

    from pollenstudio.cli import main

    for m in ("onnx", "onnxruntime", "openvino", "onnxscript"):
        monkeypatch.setitem(sys.modules, m, None)  # importlib.util.find_spec then says: not installed
    img, _, _ = render_scene(IMGSZ, IMGSZ, [(100.0, 100.0, 0, 40.0)], seed=1)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    assert main(["detect", str(tmp_path), "--backend", "onnxruntime", "--device", "cpu", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "onnxruntime" in err and "pip install 'pollenstudio[cpu-fast]'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    assert main(["export-model", "whatever.safetensors", "--format", "openvino", "--out", str(tmp_path / "m.xml")]) == 1
    assert "cpu-fast" in capsys.readouterr().err


@pytest.mark.parametrize("backend", [pytest.param("onnxruntime", marks=needs_ort), pytest.param("openvino", marks=needs_ov)])
def test_runtime_backend_names_grains_with_the_pollen_classifier(backend, tiny_model_path, torch_results):  # noqa: F811
    """Detection with a taxon classifier (pollen embedding) runs through the CPU runtimes too:
    their boxes named by the classifier as PyTorch's are (issue 27)."""
    from pollenstudio.engine.classify import EmbedSpec, TaxonClassifier, embed, embedder_file

    if not embedder_file("pollen").is_file():
        pytest.skip("the shipped embedding is not installed")
    imgs, _ = _images()
    spec = EmbedSpec(features="pollen", views=1)
    dets = torch_results[1].detections
    boxes = np.array([d.box.xyxy() for d in dets])
    E = embed(None, imgs[1], boxes, spec)
    labels = [i % 2 for i in range(len(dets))]  # two taxa, whatever they are: the same on every backend
    clf = TaxonClassifier.fit(E, labels, ["Alnus", "Betula"], spec, "prototype")
    named = {}
    for b in ("torch", backend):
        pred = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4, backend=b, taxa=clf)
        named[b] = list(pred.iter_predict(imgs))
    for r, t in zip(named[backend], named["torch"]):
        _same(r.detections, t.detections)
        assert {d.label for d in r.detections} <= {"Alnus", "Betula", "pollen"}
