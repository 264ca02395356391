"""The parts of streaming that need no sockets: sparse rows, band readers, the frontier, the plan."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distgray.errors import ImageError
from distgray.imaging import jpegbands, pngstream, sparse, tiffbands
from distgray.jobs import bands
from distgray.jobs.entries import JobEntry, ServiceOptions
from distgray.jobs.streamload import Reader
from distgray.net import shm
from distgray.scheduling.strips import Scheduler
from tests.bigimages import Mosaic, photo_tile, write_png, write_tiff

TILE = photo_tile(0.125)  # 960x540


def rss_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_sparse_rows_take_memory_only_where_written_and_give_it_back() -> None:
    rows = sparse.SparseRows((4096, 4096, 3))  # 48 MB of address space
    before = rss_kb()
    rows.array[:2048] = 7  # 24 MB written
    grown = rss_kb() - before
    assert grown > 20_000
    rows.release_below(2048)
    assert rss_kb() - before < grown / 4
    assert not rows.array[:2047].any()  # given back: zeros
    rows.array[2048:] = 9  # the rest still works
    assert rows.array[-1, -1, -1] == 9


def _strict_overcommit() -> bool:
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "2"
    except OSError:
        return False


@pytest.mark.skipif(_strict_overcommit(), reason="vm.overcommit_memory=2: the kernel ignores MAP_NORESERVE")
def test_sparse_rows_reserve_address_space_not_memory() -> None:
    """An image bigger than this machine's memory still gets its (sparse) array."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    height = total // (50_000 * 3) + 1000
    rows = sparse.SparseRows((height, 50_000, 3))
    assert rows.nbytes > total
    rows.array[height - 1] = 1
    rows.release_below(height)


def test_release_keeps_the_page_a_row_still_in_use_starts_in() -> None:
    rows = sparse.SparseRows((100, 1000))  # rows of 1000 bytes: pages hold parts of several
    rows.array[:] = 5
    rows.release_below(10)
    assert (rows.array[9:] == 5).all()  # row 9's page also holds part of row 10: kept
    assert not rows.array[: 4096 // 1000 - 1].any()


@pytest.mark.skipif(not shm.available(), reason="no /dev/shm here")
def test_a_sparse_segment_reserves_and_frees_space_in_dev_shm() -> None:
    seg = shm.Segment(1024 * 4096 * 3, sparse_rows=4096 * 3)
    try:
        arr = seg.array((1024, 4096, 3))
        path = shm.SHM_DIR / seg.name
        assert path.stat().st_blocks * 512 < 1 << 20  # nothing reserved yet
        seg.commit(0, 512)
        arr[:512] = 3
        assert path.stat().st_blocks * 512 >= 512 * 4096 * 3
        seg.release_below(512)
        assert path.stat().st_blocks * 512 < 1 << 20
        assert not arr[:511].any()
    finally:
        seg.close()


def test_the_done_frontier_follows_the_first_strip_not_done() -> None:
    s = Scheduler(100, 10, strip_rows=10)
    assert s.done_frontier() == 0
    strips = [s.next_strip("w", 0.0) for _ in range(4)]
    assert all(x is not None for x in strips)
    s.complete(strips[1].id, "w", 1.0)  # type: ignore[union-attr]
    assert s.done_frontier() == 0
    s.complete(strips[0].id, "w", 1.0)  # type: ignore[union-attr]
    assert s.done_frontier() == 20
    s.complete(strips[2].id, "w", 1.0)  # type: ignore[union-attr]
    s.complete(strips[3].id, "w", 1.0)  # type: ignore[union-attr]
    assert s.done_frontier() == 40


@pytest.mark.parametrize(
    "kind",
    [
        {"tile": 64, "compression": "zlib"},
        {"tile": 32, "compression": None},
        {"tile": None},
    ],
)
def test_tiff_bands_equal_pillows_decoding(tmp_path: Path, kind: dict[str, object]) -> None:
    m = Mosaic(TILE, 1001, 377)
    path = write_tiff(tmp_path / "in.tif", m, **kind)  # type: ignore[arg-type]
    layout = tiffbands.probe(path)
    assert layout is not None
    assert_bands_are_pillows(path, layout.shape, lambda out, ready: tiffbands.decode_into(layout, out, ready))


def assert_bands_are_pillows(path: Path, shape: tuple[int, int, int], read: Reader) -> None:
    """``read`` decodes ``path`` in more than one band, in row order, to exactly Pillow's pixels."""
    out = np.zeros(shape, dtype=np.uint8)
    seen: list[int] = []
    read(out, seen.append)
    with Image.open(path) as im:
        assert np.array_equal(out, np.asarray(im.convert("RGB")))
    assert seen == sorted(seen) and seen[-1] == shape[0] and len(seen) > 1


def test_an_lzw_tiff_streams_exactly_or_not_at_all(tmp_path: Path) -> None:
    """LZW needs the optional imagecodecs package: without it the TIFF takes the whole-image path."""
    rgb = Mosaic(TILE, 500, 300).rows(0, 300)
    Image.fromarray(rgb).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    layout = tiffbands.probe(tmp_path / "lzw.tif")
    if layout is not None:
        out = np.zeros(layout.shape, dtype=np.uint8)
        tiffbands.decode_into(layout, out, lambda _: None)
        assert np.array_equal(out, rgb)


def test_tiffs_that_do_not_equal_pillows_decoding_do_not_stream(tmp_path: Path) -> None:
    import tifffile

    a = np.zeros((64, 64, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rot.tif", a, extratags=[(274, 3, 1, 6, True)])  # EXIF rotation
    tifffile.imwrite(tmp_path / "gray.tif", a[..., 0])
    tifffile.imwrite(tmp_path / "planar.tif", a, planarconfig="separate")
    tifffile.imwrite(tmp_path / "wide.tif", a.astype(np.uint16))
    for name in ("rot.tif", "gray.tif", "planar.tif", "wide.tif"):
        assert tiffbands.probe(tmp_path / name) is None, name
    (tmp_path / "junk.tif").write_bytes(b"II*\0" + b"\xff" * 40)
    assert tiffbands.probe(tmp_path / "junk.tif") is None


def test_a_truncated_tiff_fails_with_a_reason(tmp_path: Path) -> None:
    path = write_tiff(tmp_path / "in.tif", Mosaic(TILE, 300, 300), tile=None)
    layout = tiffbands.probe(path)
    assert layout is not None
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with pytest.raises(ImageError, match=r"ends early|holds"):
        tiffbands.decode_into(layout, np.zeros(layout.shape, dtype=np.uint8), lambda _: None)


def entry(source: Path, fmt: str = "PNG") -> JobEntry:
    return JobEntry(1, source, source.with_name("out"), fmt, source.name, 0)


def test_the_plan_streams_only_what_does_not_fit(tmp_path: Path) -> None:
    png = write_png(tmp_path / "a.png", Mosaic(TILE, 1000, 500))  # 2 MB of pixels
    small, tiny = ServiceOptions(window_bytes=8 << 20), ServiceOptions(window_bytes=1 << 20)
    layout = bands.plan(entry(png), small)
    assert isinstance(layout, pngstream.PngLayout) and not bands.streams(layout, small)
    layout = bands.plan(entry(png), tiny)
    assert isinstance(layout, pngstream.PngLayout) and bands.streams(layout, tiny)
    tif = write_tiff(tmp_path / "a.tif", Mosaic(TILE, 1000, 500))
    assert bands.plan(entry(tif, "TIFF"), small) is None  # fits: Pillow loads it whole
    assert isinstance(bands.plan(entry(tif, "TIFF"), tiny), tiffbands.TiffLayout)


def test_the_window_always_holds_two_bands_and_a_fixed_strip(tmp_path: Path) -> None:
    png = write_png(tmp_path / "a.png", Mosaic(TILE, 1000, 500))
    layout = pngstream.probe(png, 10**9)
    assert layout is not None
    assert bands.window_rows(layout, ServiceOptions(window_bytes=1), None) >= 2 * pngstream.BAND_ROWS
    assert bands.window_rows(layout, ServiceOptions(window_bytes=1, strip_rows=300), None) >= 2 * 128 + 300
    assert bands.window_rows(layout, ServiceOptions(window_bytes=400 << 20), None) == (400 << 20) // 4000


@pytest.mark.parametrize(
    "kind",
    [{"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2}, {"progressive": True}, {"restart_marker_rows": 1}],
)
def test_jpeg_bands_equal_pillows_decoding(tmp_path: Path, kind: dict[str, object]) -> None:
    """libvips in bands, on the real photo, odd-sized, every JPEG kind Pillow writes."""
    rgb = Mosaic(TILE, 1001, 377).rows(0, 377)
    path = tmp_path / "in.jpg"
    Image.fromarray(rgb).save(path, quality=92, **kind)
    assert jpegbands.agrees_with_pillow()
    layout = jpegbands.probe(path)
    assert layout is not None
    assert_bands_are_pillows(path, layout.shape, lambda out, ready: jpegbands.decode_into(layout, out, ready))


def test_jpegs_libvips_would_read_unlike_pillow_do_not_stream(tmp_path: Path) -> None:
    rgb = Mosaic(TILE, 64, 48).rows(0, 48)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif)
    for name in ("cmyk.jpg", "gray.jpg", "rotated.jpg"):
        assert jpegbands.probe(tmp_path / name) is None, name


def test_a_streamed_decode_keeps_a_sample_for_the_previews(tmp_path: Path) -> None:
    """The rows of a streamed job go, so the decoder keeps every step-th row and column for the
    page's thumbnails: exactly the image's pixels on that grid."""
    from distgray.jobs.streamload import StreamDecode

    m = Mosaic(TILE, 1001, 777)
    png = write_png(tmp_path / "a.png", m)
    layout = pngstream.probe(png, 10**9)
    assert layout is not None
    out = np.zeros(layout.shape, dtype=np.uint8)
    decode = StreamDecode(png, bands.reader(layout), out, engine=None, band_rows=layout.band_rows, preview_side=100)  # type: ignore[arg-type]
    decode.start().join()
    step = -(-1001 // 100)
    assert decode.preview is not None
    assert np.array_equal(decode.preview, m.rows(0, 777)[::step, ::step])
