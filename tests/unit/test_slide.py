"""core.slide: a region read from a tiled / pyramidal TIFF equals the same crop of the
fully decoded image, for every layout slide scanners and microscopes write."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pollenstudio.core.errors import ImageReadError
from pollenstudio.core.slide import Slide
from pollenstudio.core.stack import FocalStack

cv2 = pytest.importorskip("cv2")

RECTS = [(0, 0, 10, 10), (100, 37, 300, 213), (250, 250, 20, 20), (600, 450, 900, 900), (-5, -5, 30, 30)]


def _crop(full, x, y, w, h):
    return full[max(0, y):max(0, y + h), max(0, x):max(0, x + w)]


def _pyramid(path, data, levels=2, compression="zlib", tile=(128, 128)):
    """An OME-TIFF (planes, H, W, 3) with ``levels`` reduced copies in SubIFDs."""
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(data, subifds=levels, tile=tile, compression=compression, photometric="rgb",
                 metadata={"axes": "ZYXS"})
        for k in range(1, levels + 1):
            h, w = data.shape[1] >> k, data.shape[2] >> k
            tw.write(np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA) for p in data]),
                     subfiletype=1, tile=tile, compression=compression, photometric="rgb")


def test_pyramid_planes_regions_equal_crops(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 255, (3, 700, 900, 3), dtype=np.uint8)
    path = tmp_path / "slide.ome.tif"
    _pyramid(path, data)
    with Slide.open(path) as s:
        assert s.lazy and s.planes == 3 and (s.width, s.height) == (900, 700)
        assert [(lv.width, lv.height) for lv in s.levels] == [(900, 700), (450, 350), (225, 175)]
        for level in range(3):
            full = tifffile.imread(path, level=level)
            for plane in range(3):
                for x, y, w, h in RECTS:
                    assert np.array_equal(s.region(x, y, w, h, level, plane), _crop(full[plane], x, y, w, h))


@pytest.mark.parametrize("layout", ["strips", "tiles16", "planar"])
def test_untiled_and_16bit_layouts(tmp_path, layout):
    rng = np.random.default_rng(2)
    path = tmp_path / f"{layout}.tif"
    if layout == "strips":
        full = rng.integers(0, 255, (1100, 1000, 3), dtype=np.uint8)
        tifffile.imwrite(path, full, rowsperstrip=64, compression="zlib", photometric="rgb")
    elif layout == "tiles16":
        full = rng.integers(0, 65535, (1100, 1000), dtype=np.uint16)
        tifffile.imwrite(path, full, tile=(128, 128), compression="lzw", predictor=True)
    else:
        planar = rng.integers(0, 255, (3, 1100, 1000), dtype=np.uint8)
        tifffile.imwrite(path, planar, tile=(64, 64), planarconfig="separate", photometric="rgb")
        full = np.moveaxis(planar, 0, -1)
    with Slide.open(path, lazy_min_pixels=1) as s:
        assert s.lazy
        for x, y, w, h in RECTS:
            assert np.array_equal(s.region(x, y, w, h), _crop(full, x, y, w, h))
    with Slide.open(path) as s:  # small: decoded whole once, the same pixels
        assert not s.lazy
        assert np.array_equal(s.region(*RECTS[1]), _crop(full, *RECTS[1]))


def test_jpeg_tiles_and_region0_and_thumbnail(tmp_path):
    rng = np.random.default_rng(3)
    base = cv2.GaussianBlur(rng.integers(0, 255, (800, 1000, 3), dtype=np.uint8), (9, 9), 3)
    path = tmp_path / "jpeg.ome.tif"
    _pyramid(path, base[None], levels=2, compression="jpeg", tile=(256, 256))
    with Slide.open(path) as s:
        full1 = tifffile.imread(path, level=1)
        arr, rect = s.region0(101, 51, 401, 251, level=1)
        assert rect == (100.0, 50.0, 302.0, 202.0)
        assert np.array_equal(arr, full1[25:126, 50:201])
        th = s.thumbnail(300)
        assert max(th.shape[:2]) == 300 and th.dtype == np.uint8
        # the thumbnail looks like the image (JPEG and area averaging differ a little)
        ref = cv2.resize(base, (th.shape[1], th.shape[0]), interpolation=cv2.INTER_AREA)
        assert np.abs(th.astype(int) - ref.astype(int)).mean() < 6


def test_bad_plane_level_and_file(tmp_path):
    path = tmp_path / "s.ome.tif"
    _pyramid(path, np.zeros((2, 300, 300, 3), np.uint8), levels=1)
    with Slide.open(path) as s:
        with pytest.raises(ImageReadError, match="plane 3"):
            s.region(0, 0, 5, 5, plane=2)
        with pytest.raises(ImageReadError, match="level 5"):
            s.region(0, 0, 5, 5, level=5)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageReadError, match="bad.tif"):
        Slide.open(bad)


@pytest.mark.parametrize("opener, what", [(Slide.open, "slide"), (FocalStack.open, "TIFF stack")])
def test_broken_tiffs_are_refused_in_words_by_slide_and_stack(tmp_path, opener, what):
    """Both openers share core.imageio's open_tiff / closed_on_error: a header tifffile cannot
    parse, and a header it parses whose pages are garbage, each end in ImageReadError naming
    the file (the second after closing the file it had opened)."""
    short = tmp_path / "short.tif"
    short.write_bytes(b"II*\x00")
    with pytest.raises(ImageReadError, match=r"short\.tif: not a readable TIFF \("):
        opener(short)
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"II*\x00garbage" * 10)
    # tifffile finds no page in it (open_tiff says so) or pages it cannot read (closed_on_error)
    with pytest.raises(ImageReadError, match=rf"garbage\.tif: (not a readable {what} \(|a TIFF file holding no image)"):
        opener(garbage)
    fds = Path("/proc/self/fd")
    if fds.is_dir():  # Linux: no descriptor of this process still points at the file
        held = []
        for fd in fds.iterdir():
            try:
                held.append(os.readlink(fd))
            except OSError:
                pass  # the listing's own descriptor, gone by now
        assert str(garbage) not in held


def _svs_like(path, base):
    """An Aperio-SVS-like file: tiled JPEG level 0, a stripped thumbnail page, tiled reduced
    levels, then label and macro pages (what tifffile calls the Baseline series and the
    Thumbnail / Label / Macro series)."""
    head = "Aperio Image Library v12.0.0\r\n"
    h, w = base.shape[:2]
    with tifffile.TiffWriter(path) as tw:
        tw.write(base, tile=(256, 256), compression="jpeg", photometric="rgb", metadata=None,
                 description=head + f"{w}x{h} [0,0 {w}x{h}] (256x256) JPEG/RGB Q=70|AppMag = 20|MPP = 0.4990")
        tw.write(cv2.resize(base, (w // 10, h // 10), interpolation=cv2.INTER_AREA), compression="jpeg",
                 photometric="rgb", metadata=None, description=head + f"{w}x{h} -> {w // 10}x{h // 10} - |AppMag = 20")
        for k in (1, 2):
            lv = cv2.resize(base, (w // 4**k, h // 4**k), interpolation=cv2.INTER_AREA)
            tw.write(lv, tile=(256, 256), compression="jpeg", photometric="rgb", metadata=None,
                     description=head + f"{w}x{h} -> {lv.shape[1]}x{lv.shape[0]} - |AppMag = 20")
        tw.write(np.full((300, 400, 3), 200, np.uint8), compression="lzw", photometric="rgb", subfiletype=1,
                 metadata=None, description=head + "label 400x300")
        tw.write(np.full((400, 1000, 3), 100, np.uint8), compression="jpeg", photometric="rgb", subfiletype=9,
                 metadata=None, description=head + "macro 1000x400")


def test_svs_like_file_is_one_image_with_its_levels(tmp_path):
    """The thumbnail, label and macro pages of an SVS are neither planes nor levels; the
    reduced pages are the levels; import reads the size from the headers."""
    from pollenstudio.core.stack import import_info

    rng = np.random.default_rng(5)
    base = cv2.GaussianBlur(rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8), (7, 7), 2)
    path = tmp_path / "scan.tif"
    _svs_like(path, base)
    assert tifffile.TiffFile(path).is_svs
    info = import_info(path)
    assert (info.width, info.height, info.planes, info.channels) == (2000, 1500, 1, 3)
    with Slide.open(path) as s:
        assert s.lazy and s.planes == 1
        assert [(lv.width, lv.height) for lv in s.levels] == [(2000, 1500), (500, 375), (125, 93)]
        for level in range(3):
            full = tifffile.imread(path, level=level)
            for x, y, w, h in RECTS:
                assert np.array_equal(s.region(x, y, w, h, level), _crop(full, x, y, w, h))
        assert s.thumbnail(200).shape == (150, 200, 3)


def _ndpi_jpeg(img, interval):
    """A baseline JPEG with a restart marker every ``interval`` MCUs, and the offsets where
    its entropy-coded segments start (NDPI's McuStarts)."""
    import struct

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_RST_INTERVAL, interval])
    data = buf.tobytes()
    i = 2
    while True:
        marker, length = struct.unpack(">HH", data[i:i + 4])
        if marker == 0xFFDA:  # start of scan: the entropy-coded data follows its header
            starts = [i + 2 + length]
            break
        i += 2 + length
    j = starts[0]
    while j < len(data) - 1:
        if data[j] == 0xFF and 0xD0 <= data[j + 1] <= 0xD7:
            starts.append(j + 2)
            j += 2
        else:
            j += 1
    return data, starts


def test_ndpi_like_file_reads_by_restart_interval_tiles(tmp_path):
    """Hamamatsu NDPI: each level one JPEG strip with restart markers, the Make tag and the
    NDPI tags (65420, McuStarts 65426); tifffile turns the restart intervals into tiles. A
    real NDPI file was not available: this one is built to that layout."""
    from pollenstudio.core.stack import import_info

    rng = np.random.default_rng(6)
    base = cv2.GaussianBlur(rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8), (9, 9), 3)
    path = tmp_path / "scan.tif"
    with tifffile.TiffWriter(path) as tw:
        for k, img in enumerate([base, cv2.resize(base, (512, 384), interpolation=cv2.INTER_AREA)]):
            data, starts = _ndpi_jpeg(img, img.shape[1] // 64)  # 4 restart intervals per MCU row
            tw.write(iter([data]), shape=img.shape, dtype=np.uint8, compression="jpeg", photometric="rgb",
                     rowsperstrip=img.shape[0], metadata=None,
                     extratags=[(271, "s", 0, "Hamamatsu", True), (65420, "I", 1, 1, True),
                                (65421, "f", 1, 20.0 / 2**k, True), (65426, "I", len(starts), starts, True)])
    tif = tifffile.TiffFile(path)
    assert tif.is_ndpi and tif.pages[0].is_tiled and tif.series[0].kind == "ndpi"
    info = import_info(path)
    assert (info.width, info.height, info.planes) == (1024, 768, 1)
    with Slide.open(path) as s:
        assert s.lazy and [(lv.width, lv.height) for lv in s.levels] == [(1024, 768), (512, 384)]
        for level in range(2):
            page = tif.series[0].levels[level].pages[0]
            tiles = np.zeros(page.shape, np.uint8)  # tifffile's own tile-by-tile decoding
            for seg, (_, _, y, x, _), _ in page.segments():
                seg = seg.reshape(seg.shape[-3:])[: page.shape[0] - y, : page.shape[1] - x]
                tiles[y:y + seg.shape[0], x:x + seg.shape[1]] = seg
            for x, y, w, h in RECTS:
                assert np.array_equal(s.region(x, y, w, h, level), _crop(tiles, x, y, w, h))
            # decoding the strip whole upsamples chroma across the tile seams: within a grey level
            assert np.abs(s.region(0, 0, page.shape[1], page.shape[0], level).astype(int) - page.asarray()).mean() < 1
    tif.close()
