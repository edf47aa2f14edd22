"""Focal stacks with real plane names (issue 29): plane files numbered as microscopes write them
relative to focus (``_z-8``, ``_z+2``, ``-8``), zero-padded or not, with gaps, are one stack
ordered by plane number; duplicates of one number are refused in words; the planes keep their
own names for the Focus bar (``plane_labels``). Files are made here; nothing is downloaded."""

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from pollenstudio.core.stack import StackPatternError, group_plane_files, pattern_regex, plane_labels
from pollenstudio.project.transfer import import_to_folder

H, W = 40, 56


def names(stacks):
    return [[p.name for p in s] for s in stacks]


def write_planes(folder: Path, stem: str, numbers: list[str], start: int = 10) -> None:
    """One PNG per plane number text; pixel (0, 0) holds start + 10 * its rank in the list."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, z in enumerate(numbers):
        cv2.imwrite(str(folder / f"{stem}{z}.png"), np.full((H, W), start + 10 * k, np.uint8))


def test_the_issue_example_is_one_stack_of_signed_planes_in_number_order(tmp_path):
    """`..._z-8.png, _z-3, _z1 ... _z15` is ONE stack (it was split in three), planes ordered -8, -3, 1, 15."""
    src = tmp_path / "src"
    write_planes(src, "trap_field7_z", ["-8", "-3", "1", "15"])  # pixel 10, 20, 30, 40 in number order
    write_planes(src, "trap_field8_z", ["-2", "0", "+2"], start=100)
    proj, res = import_to_folder(tmp_path / "p", src, stack_pattern="*_z{z}.png")
    with proj:
        recs = {Path(r.path).name: r for r in proj.images()}
        assert sorted(recs) == ["trap_field7_z-8.png", "trap_field8_z-2.png"]
        f7 = recs["trap_field7_z-8.png"]
        assert f7.planes == 4
        assert [Path(f).name for f in f7.plane_files] == [
            "trap_field7_z-8.png", "trap_field7_z-3.png", "trap_field7_z1.png", "trap_field7_z15.png"]
        assert [int(proj.read_plane(f7, k)[0, 0]) for k in range(4)] == [10, 20, 30, 40]
        assert plane_labels(f7.plane_files) == ["z-8", "z-3", "z1", "z15"]
        f8 = recs["trap_field8_z-2.png"]
        assert f8.planes == 3 and plane_labels(f8.plane_files) == ["z-2", "z0", "z+2"]
        assert res.summary["stacks"] == 2


@pytest.mark.parametrize("pattern, files, want", [
    ("*_z{z}.png", ["a_z+2.png", "a_z-1.png", "a_z0.png"], ["a_z-1.png", "a_z0.png", "a_z+2.png"]),  # '+' sign
    ("*_z{z}.png", ["a_z003.png", "a_z001.png", "a_z010.png"], ["a_z001.png", "a_z003.png", "a_z010.png"]),  # padding
    ("*_z{z}.png", ["a_z-03.png", "a_z+04.png", "a_z00.png"], ["a_z-03.png", "a_z00.png", "a_z+04.png"]),  # both
    ("{z}.png", ["-8.png", "15.png", "-3.png", "1.png"], ["-8.png", "-3.png", "1.png", "15.png"]),  # bare '-8'
    ("*_{z}.png", ["f_-10.png", "f_-9.png", "f_9.png", "f_10.png"], ["f_-10.png", "f_-9.png", "f_9.png", "f_10.png"]),
    ("*_z{z}.png", ["a_z9.png", "a_z10.png", "a_z100.png", "a_z2.png"],  # by number, not by text
     ["a_z2.png", "a_z9.png", "a_z10.png", "a_z100.png"]),
    ("*_z{z}.png", ["a_z-1.png", "a_z-10.png", "a_z-2.png"], ["a_z-10.png", "a_z-2.png", "a_z-1.png"]),
    ("*_z{z}.png", ["a_z0.png", "a_z40.png", "a_z7.png"], ["a_z0.png", "a_z7.png", "a_z40.png"]),  # gaps
])
def test_plane_numbers_are_signed_padded_with_gaps_and_sorted_by_value(tmp_path, pattern, files, want):
    stacks, singles = group_plane_files([tmp_path / f for f in files], pattern)
    assert names(stacks) == [want] and singles == []


def test_the_plane_regex_takes_the_sign_with_the_number():
    rx = pattern_regex("*_z{z}.png")
    assert [rx.match(n).group("z") for n in ("s_z-8.png", "s_z+2.png", "s_z003.png", "s_z15.png")] == [
        "-8", "+2", "003", "15"]
    assert rx.match("s_z.png") is None and rx.match("s_z-.png") is None and rx.match("s_z--1.png") is None


@pytest.mark.parametrize("pair, number", [
    (["a_z03.png", "a_z3.png"], "3"),
    (["a_z+2.png", "a_z2.png"], "+2"),
    (["a_z-0.png", "a_z0.png"], "0"),
    (["a_z-05.png", "a_z-5.png"], "-5"),
])
def test_two_files_of_one_plane_number_are_refused_in_words(tmp_path, pair, number):
    with pytest.raises(StackPatternError, match=rf"both plane {re.escape(number)} .*count by value"):
        group_plane_files([tmp_path / f for f in pair + ["a_z7.png"]], "*_z{z}.png")


def test_a_duplicate_plane_number_imports_nothing(tmp_path):
    write_planes(tmp_path / "src", "f_z", ["-1", "+1", "1"])
    with pytest.raises(StackPatternError, match="both plane"):
        import_to_folder(tmp_path / "p", tmp_path / "src", stack_pattern="*_z{z}.png")
    assert not (tmp_path / "p").exists()


def test_a_dash_after_a_wildcard_that_every_plane_has_is_a_separator(tmp_path):
    """`*{z}.png` cannot tell `field-01` (separator) from `z-8` (sign): a '-' that all planes of a group carry is
    a separator (planes 1, 2, 10 ascending); mixed signs are numbers; with the separator in the pattern it is
    a separator whatever the group."""
    files = [tmp_path / f"field-{k:02d}.png" for k in (10, 1, 2)]
    assert names(group_plane_files(files, "*{z}.png")[0]) == [["field-01.png", "field-02.png", "field-10.png"]]
    assert names(group_plane_files(files, "*-{z}.png")[0]) == [["field-01.png", "field-02.png", "field-10.png"]]
    mixed = [tmp_path / f for f in ("s-2.png", "s0.png", "s+3.png", "s-7.png")]
    assert names(group_plane_files(mixed, "*{z}.png")[0]) == [["s-7.png", "s-2.png", "s0.png", "s+3.png"]]
    below = [tmp_path / f for f in ("s_z-2.png", "s_z-7.png")]  # a literal before {z}: the sign is the number's
    assert names(group_plane_files(below, "*_z{z}.png")[0]) == [["s_z-7.png", "s_z-2.png"]]


@pytest.mark.parametrize("files, labels", [
    (["f_z-8.png", "f_z-3.png", "f_z1.png", "f_z15.png"], ["z-8", "z-3", "z1", "z15"]),
    (["f_z-5.png", "f_z-1.png"], ["z-5", "z-1"]),  # all below focus
    (["f_z001.png", "f_z003.png", "f_z010.png"], ["z001", "z003", "z010"]),  # as the files write them
    (["f_z10.png", "f_z11.png", "f_z12.png"], ["z10", "z11", "z12"]),  # a shared first digit stays in the number
    (["-8.png", "-3.png", "0.png", "+2.png"], ["z-8", "z-3", "z0", "z+2"]),  # no letters: 'z'
    (["img_slice-3.tif", "img_slice0.tif", "img_slice+2.tif"], ["slice-3", "slice0", "slice+2"]),
    (["0z.png", "1z.png", "2z.png"], ["z0", "z1", "z2"]),
    (["field-01.png", "field-02.png", "field-10.png"], ["z01", "z02", "z10"]),  # a '-' separator (see above)
    (["a/one.png", "a/two.png"], None),  # not numbered: planes go by index
    (["f_z3.png", "f_z1.png"], None),  # named in another order than the stack's (a COCO file's list)
    (["f_z1.png"], None),
    (None, None),
])
def test_planes_keep_their_own_names(files, labels):
    assert plane_labels(files) == labels
