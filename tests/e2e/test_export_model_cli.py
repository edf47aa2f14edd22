"""`pollenstudio export-model`: ONNX / OpenVINO files, the YOLO layout with its X-AnyLabeling
config, and INT8 calibrated on a project's reviewed images with its mAP change printed.
Skipped where the optional runtimes are not installed."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from fixtures_models import IMGSZ, TAXA, random_grains, render_scene, tiny_model_path  # noqa: F401

from pollenstudio.engine.export import installed

pytestmark = pytest.mark.skipif(
    not all(installed(m) for m in ("onnx", "onnxscript", "onnxruntime", "openvino")),
    reason="needs the cpu-fast extra (onnx, onnxscript, onnxruntime, openvino)",
)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "QT_QPA_PLATFORM": "offscreen"}


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "pollenstudio", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def reviewed_project(tmp_path_factory):
    """Six images of the tiny model's grains, imported from COCO (so reviewed)."""
    root = tmp_path_factory.mktemp("export")
    data = root / "data"
    (data / "images").mkdir(parents=True)
    rng = np.random.default_rng(4)
    images, anns = [], []
    for i in range(6):
        img, boxes, classes = render_scene(IMGSZ, IMGSZ, random_grains(rng, IMGSZ, IMGSZ, 3, margin=5), seed=40 + i)
        name = f"images/s{i}.png"
        cv2.imwrite(str(data / name), img[..., ::-1])
        images.append({"id": i + 1, "file_name": name, "width": IMGSZ, "height": IMGSZ})
        for b, c in zip(boxes, classes):
            x0, y0, x1, y1 = (float(v) for v in b)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    coco = {"images": images, "annotations": anns, "categories": [{"id": k + 1, "name": n} for k, n in enumerate(TAXA)]}
    (data / "annotations.json").write_text(json.dumps(coco))
    proj = root / "proj"
    r = _cli("import", proj, data / "annotations.json", "--quiet")
    assert r.returncode == 0, r.stderr
    return proj


@pytest.mark.slow
def test_int8_export_reports_its_map_change(reviewed_project, tiny_model_path, tmp_path):  # noqa: F811
    import onnxruntime as ort

    out = tmp_path / "tiny-int8.onnx"
    r = _cli("export-model", tiny_model_path, "--project", reviewed_project, "--format", "onnx", "--int8", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["int8"] and s["scored_images"] == 6 and s["calibration_images"] == 6
    assert s["map50_fp32"] > 0.5  # the tiny model finds its own grains
    assert abs(s["map50_change"] - (s["map50_int8"] - s["map50_fp32"])) < 1e-12
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in __import__("onnx").load(str(out)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # really quantised
    assert [o.name for o in sess.get_outputs()] == ["p3", "p4", "p5"]
    # the human-readable line
    r = _cli("export-model", tiny_model_path, "--project", reviewed_project, "--format", "openvino", "--int8",
             "--out", tmp_path / "tiny-int8.xml", "--calib-images", 3)
    assert r.returncode == 0, r.stderr
    assert "INT8 vs float32 on 6 reviewed image(s) (calibrated on 3 of them): mAP@.5" in r.stdout
    assert (tmp_path / "tiny-int8.xml").is_file() and (tmp_path / "tiny-int8.bin").is_file()


def test_yolo_layout_with_xanylabeling_config(tiny_model_path, tmp_path):  # noqa: F811
    out = tmp_path / "grain-yolo.onnx"
    r = _cli("export-model", tiny_model_path, "--format", "onnx", "--yolo", "--out", out)
    assert r.returncode == 0, r.stderr
    yaml = (tmp_path / "grain-yolo.yaml").read_text()
    assert "type: yolov8" in yaml and "model_path: grain-yolo.onnx" in yaml
    assert all(f'  - "{t}"' in yaml for t in TAXA)
    import onnxruntime as ort

    (o,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_outputs()
    assert o.shape[:2] == [1, 4 + len(TAXA)]


def test_bad_requests_are_refused_and_write_nothing(tiny_model_path, tmp_path):  # noqa: F811
    r = _cli("export-model", tiny_model_path, "--format", "onnx", "--int8", "--out", tmp_path / "a.onnx")
    assert r.returncode == 1 and "--project" in r.stderr
    r = _cli("export-model", tiny_model_path, "--format", "openvino", "--out", tmp_path / "a.onnx")
    assert r.returncode == 1 and ".xml" in r.stderr
    r = _cli("export-model", "3", "--format", "onnx", "--out", tmp_path / "a.onnx")
    assert r.returncode == 1 and "needs a project" in r.stderr
    r = _cli("export-model", tiny_model_path, "--format", "onnx", "--imgsz", "100", "--out", tmp_path / "a.onnx")
    assert r.returncode == 2
    assert list(tmp_path.iterdir()) == []


def test_detect_backend_gives_pytorchs_proposals_and_reports_blank_tiles(tiny_model_path, tmp_path):  # noqa: F811
    folder = tmp_path / "scans"
    folder.mkdir()
    img, boxes, _ = render_scene(4 * IMGSZ, 3 * IMGSZ, [(150.0, 140.0, 0, 44.0), (700.0, 380.0, 1, 50.0)], seed=7)
    cv2.imwrite(str(folder / "scan.png"), img[..., ::-1])
    runs = {}
    for backend in ("torch", "onnxruntime"):
        r = _cli("detect", folder, "--model", tiny_model_path, "--device", "cpu", "--backend", backend, "--conf", 0.3, "--json")
        assert r.returncode == 0, r.stderr
        runs[backend] = json.loads(r.stdout)
    t, o = runs["torch"], runs["onnxruntime"]
    assert t["proposals"] == o["proposals"] >= len(boxes)
    assert t["per_taxon"] == o["per_taxon"]
    assert t["tiles"] == o["tiles"] > t["tiles_skipped"] == o["tiles_skipped"] > 0
    assert "ONNX Runtime" in o["device"]
    r = _cli("detect", folder, "--model", tiny_model_path, "--device", "cpu", "--backend", "torch", "--conf", 0.3)
    assert r.returncode == 0 and f"of {t['tiles']} tiles skipped as blank" in r.stdout


@pytest.mark.slow
@pytest.mark.skipif(not installed("nncf"), reason="needs nncf (OpenVINO's quantiser)")
def test_openvino_int8_uses_nncf_and_keeps_metadata(reviewed_project, tiny_model_path, tmp_path):  # noqa: F811
    import openvino as ov

    out = tmp_path / "tiny-nncf.xml"
    r = _cli("export-model", tiny_model_path, "--project", reviewed_project, "--format", "openvino", "--int8",
             "--out", out, "--calib-images", 4, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["quantizer"] == "nncf" and s["calibration_images"] == 4
    assert s["map50_fp32"] > 0.5 and abs(s["map50_change"] - (s["map50_int8"] - s["map50_fp32"])) < 1e-12
    m = ov.Core().read_model(str(out))
    types = {op.get_type_name() for op in m.get_ordered_ops()}
    assert "FakeQuantize" in types  # really quantised
    assert json.loads(m.get_rt_info(["model_info", "pollenstudio"]).astype(str))["class_names"]  # the ONNX metadata kept
    assert "NNCF" in m.get_rt_info(["model_info", "quantization"]).astype(str)
    assert (tmp_path / "tiny-nncf.bin").is_file()
