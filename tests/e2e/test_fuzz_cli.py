"""Issue 17: no argument vector gives a traceback. Hypothesis builds argument vectors from
each command's options and hostile values (empty strings, NUL, negative, NaN, huge numbers,
/proc and /sys paths, folders where files belong); ``pollenstudio.cli.main`` must answer
each with an exit status and words, never an exception. POLLENSTUDIO_DEBUG=1 switches the
one-line safety net off, so a bug shows up here as the exception it is."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pollenstudio.cli import main
from pollenstudio.project import Project

OPTIONS = {
    "import": ["--images", "--json", "--quiet"],
    "export": ["--format", "--out", "--all", "--no-images", "--json"],
    "detect": ["--model", "--device", "--conf", "--iou", "--tile", "--batch", "--imgsz", "--images", "--json",
               "--quiet"],
    "train": ["--base", "--epochs", "--imgsz", "--batch", "--device", "--scale", "--variant", "--lr0", "--patience",
              "--val-fraction", "--seed", "--workers", "--threads", "--name", "--optimizer", "--json", "--quiet"],
    "eval": ["--model", "--conf", "--batch", "--json"],
    "relink": ["--dry-run", "--remove-missing", "--json", "--quiet"],
}
VALUES = ["", " ", "\x00", "-1", "0", "1", "33", "-64", "100000", "nan", "inf", "-inf", "1e9", "0.5", "abc", "coco",
          "yolo", "csv", "all", "cpu", "cuda:7", "auto", "off", "--", "-", "🌼", "a" * 300]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_fuzz")
    Project.create(d / "empty").close()  # a project with nothing in it: every command fails fast
    (d / "file.txt").write_text("not a project")
    (d / "bad.json").write_text(json.dumps({"images": [{"id": [1]}], "categories": []}))
    (d / "model.safetensors").write_bytes(b"\x00" * 64)
    (d / "dir").mkdir()
    return {
        "project": str(d / "empty"), "file": str(d / "file.txt"), "json": str(d / "bad.json"),
        "model": str(d / "model.safetensors"), "dir": str(d / "dir"), "missing": str(d / "no_such"),
        "out": str(d / "out" / "x.json"), "proc": "/proc/pollen_fuzz", "sys": "/sys/pollen_fuzz",
    }


@st.composite
def argv(draw, places):
    cmd = draw(st.sampled_from(sorted(OPTIONS)))
    where = st.sampled_from(sorted(places.values()) + ["", "\x00"])
    value = st.one_of(st.sampled_from(VALUES), where, st.text(max_size=6))
    out = [cmd]
    for _ in range(draw(st.integers(0, 2))):
        out.append(draw(where))
    for _ in range(draw(st.integers(0, 4))):
        opt = draw(st.sampled_from(OPTIONS[cmd]))
        out.append(opt)
        if draw(st.booleans()):
            out.append(draw(value))
    return out


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_no_argument_vector_gives_a_traceback(places, data, capsys, monkeypatch):
    monkeypatch.setenv("POLLENSTUDIO_DEBUG", "1")
    monkeypatch.chdir(places["dir"])  # a relative or empty path lands in a scratch folder
    args = data.draw(argv(places))
    # never let the fuzzer create projects in image folders or train for real: the places
    # hold no image, so every job ends quickly in an error or an empty run
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
        rc = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, (args, err)
    assert "unexpected" not in err, (args, err)
    assert isinstance(rc, int), (args, rc)
