"""PNG written from independently encoded strips: valid files, the exact gray pixels."""

from __future__ import annotations

import io
import itertools
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from distgray.errors import ImageError
from distgray.imaging import pngstrip
from distgray.wire.encoded import deflate_bound
from tests.conftest import PHOTO, pngcheck


def _gray_photo(width: int, height: int) -> np.ndarray:
    with Image.open(PHOTO) as im:
        return np.asarray(im.convert("L").crop((100, 50, 100 + width, 50 + height)))


def _encode(gray: np.ndarray, cuts: list[int], level: int, above: bool) -> bytes:
    """``gray``: rows x width, or rows x width x 2 (gray + alpha)."""
    height, width = gray.shape[:2]
    pieces = []
    for a, b in itertools.pairwise(cuts):
        with_above = above and a > 0
        rows = gray[a - 1 if with_above else a : b]
        pieces.append(pngstrip.encode_strip(rows, level, has_above=with_above, first=a == 0, last=b == height))
    return pngstrip.join(width, height, level, pieces, alpha=gray.ndim == 3)


def _check_valid(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "strips.png"
    path.write_bytes(data)
    pngcheck(path)


LAYOUTS = {
    "one strip": lambda h: [0, h],
    "one-row strips": lambda h: list(range(h + 1)),
    "many uneven strips": lambda h: sorted({0, 1, 2, min(7, h), h // 3, h // 3 + 1, h - 1, h}),
    "two halves": lambda h: [0, h // 2, h],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("above", [True, False], ids=["row above sent", "no row above"])
@pytest.mark.parametrize(("width", "height"), [(257, 61), (1, 9), (640, 33)])
def test_strips_join_into_a_valid_png_with_the_exact_pixels(
    layout: str, above: bool, width: int, height: int, tmp_path: Path
) -> None:
    gray = _gray_photo(width, height)
    data = _encode(gray, LAYOUTS[layout](height), 6, above)
    with Image.open(io.BytesIO(data)) as im:
        assert (im.mode, im.size) == ("L", (width, height))
        assert np.array_equal(np.asarray(im), gray)
    _check_valid(data, tmp_path)


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_every_zlib_level(level: int, tmp_path: Path) -> None:
    gray = _gray_photo(333, 40)
    data = _encode(gray, [0, 13, 14, 40], level, True)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), gray)
    _check_valid(data, tmp_path)


def test_with_the_row_above_the_filtered_bytes_are_pillows_own() -> None:
    """Strips filtered against the real row above reproduce Pillow's whole-image filtering exactly,
    so the file is as small as Pillow's at the same level (but for the strip boundaries)."""
    gray = _gray_photo(500, 90)
    whole = pngstrip.filter_rows(gray, has_above=False, first_row_of_image=True)
    parts = [pngstrip.filter_rows(gray[0:30], False, True), pngstrip.filter_rows(gray[29:90], True, False)]
    assert b"".join(parts) == whole
    without = pngstrip.filter_rows(gray[30:90], False, False)
    assert without[0] == pngstrip.FILTER_SUB  # needs nothing from the strip above


def test_opens_in_opencv_and_libvips(tmp_path: Path) -> None:
    import cv2  # test extras: other readers of our files
    import pyvips

    gray = _gray_photo(301, 47)
    path = tmp_path / "strips.png"
    path.write_bytes(_encode(gray, [0, 5, 6, 47], 6, True))
    assert np.array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), gray)
    vips = pyvips.Image.new_from_file(str(path))
    assert np.array_equal(np.ndarray(buffer=vips.write_to_memory(), dtype=np.uint8, shape=gray.shape), gray)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=3000))
def test_adler32_combine_matches_zlib(data: bytes, cut: int) -> None:
    a, b = data[:cut], data[cut:]
    assert pngstrip.adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(data)


def test_adler32_combine_over_a_long_piece() -> None:
    a, b = bytes(range(256)) * 3, np.random.default_rng(1).bytes(300_000)
    assert pngstrip.adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)


def test_missing_rows_are_caught_at_the_end() -> None:
    gray = _gray_photo(20, 10)
    joiner = pngstrip.PngJoiner(20, 10, 6)
    joiner.head()
    joiner.strip(pngstrip.encode_strip(gray[:5], 6, has_above=False, first=True, last=False))
    with pytest.raises(ImageError, match="filtered bytes"):
        joiner.tail()


def test_deflate_bound_holds_for_incompressible_data() -> None:
    noise = np.random.default_rng(7).integers(0, 256, size=(64, 999), dtype=np.uint8)
    piece = pngstrip.encode_strip(noise, 9, has_above=False, first=True, last=True)
    assert len(piece.data) <= deflate_bound(piece.length)
    stored = pngstrip.encode_strip(noise, 0, has_above=False, first=True, last=False)
    assert len(stored.data) <= deflate_bound(stored.length)


@pytest.mark.parametrize("pattern", ["halving", "noise", "photo"])
def test_a_strips_first_row_never_leans_on_a_row_it_was_not_given(pattern: str, tmp_path: Path) -> None:
    """Without its row above, a strip's first row must use a filter that ignores the row above
    (None or Sub): Pillow takes that row to be zeros, the decoder uses the real one."""
    if pattern == "halving":  # the rows where Average would win, were the row above zeros
        row = np.tile(np.array([128, 64, 32, 16, 8, 4, 2, 1], dtype=np.uint8), 40)
        gray = np.stack([np.roll(row, y) for y in range(24)])
    elif pattern == "noise":
        gray = np.random.default_rng(5).integers(0, 256, size=(24, 320), dtype=np.uint8)
    else:
        gray = _gray_photo(320, 24)
    for start in (1, 5, 12, 23):
        filtered = pngstrip.filter_rows(gray[start:], has_above=False, first_row_of_image=False)
        assert filtered[0] in (0, pngstrip.FILTER_SUB)
    data = _encode(gray, [0, 5, 12, 23, 24], 6, above=False)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), gray)
    _check_valid(data, tmp_path)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("above", [True, False], ids=["row above sent", "no row above"])
@pytest.mark.parametrize(("width", "height"), [(257, 61), (1, 9)])
def test_gray_and_alpha_strips_join_into_the_exact_la_png(
    layout: str, above: bool, width: int, height: int, tmp_path: Path
) -> None:
    """Gray + alpha pairs (2 bytes a pixel, so filters look back 2 bytes): an LA PNG with exactly
    the gray and the alpha, valid for pngcheck, whatever the cuts."""
    gray = _gray_photo(width, height)
    alpha = np.random.default_rng(width).integers(0, 256, gray.shape, dtype=np.uint8)
    data = _encode(np.dstack([gray, alpha]), LAYOUTS[layout](height), 6, above)
    with Image.open(io.BytesIO(data)) as im:
        assert (im.mode, im.size) == ("LA", (width, height))
        assert np.array_equal(np.asarray(im), np.dstack([gray, alpha]))
    _check_valid(data, tmp_path)


def test_the_check_of_gray_and_alpha_strips_catches_a_wrong_alpha() -> None:
    from distgray.imaging import verify
    from distgray.imaging.kernel import to_grayscale

    with Image.open(PHOTO) as im:
        rgb = np.asarray(im.convert("RGB").crop((0, 0, 120, 30)))
    rgba = np.dstack([rgb, np.arange(120 * 30, dtype=np.uint32).reshape(30, 120).astype(np.uint8)])
    gray = np.empty((30, 120), np.uint8)
    to_grayscale(np.ascontiguousarray(rgba), gray)
    la = np.dstack([gray, rgba[..., 3]])
    honest = pngstrip.encode_strip(la[9:30], 6, has_above=True, first=False, last=True)
    assert verify.check_png(rgba, honest, 10, 30, True, 20, alpha=True) is None
    wrong = la.copy()
    wrong[17, 50, 1] ^= 1
    liar = pngstrip.encode_strip(wrong[9:30], 6, has_above=True, first=False, last=True)
    assert "row 17 differs" in (verify.check_png(rgba, liar, 10, 30, True, 20, alpha=True) or "")
    # gray without its alpha where gray + alpha was asked: the wrong size, caught before any row
    plain = pngstrip.encode_strip(gray[9:30], 6, has_above=True, first=False, last=True)
    assert "filtered bytes" in (verify.check_png(rgba, plain, 10, 30, True, 20, alpha=True) or "")
