"""The fast decoders give Pillow's pixels exactly, or step aside for Pillow.

simplejpeg (libjpeg-turbo into a NumPy buffer) against Pillow on real-photo JPEGs of every common
kind; the band-by-band PNG decoder against Pillow's whole-image decoding.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distgray.errors import ImageError
from distgray.imaging import jpegfast, pngstream
from distgray.imaging.pngstrip import PNG_SIGNATURE
from tests.conftest import PHOTO

MAX = 1 << 30


def _photo(width: int | None = None, height: int | None = None) -> Image.Image:
    with Image.open(PHOTO) as im:
        rgb = im.convert("RGB")
    return rgb if width is None or height is None else rgb.crop((37, 11, 37 + width, 11 + height))


JPEG_KINDS = {
    "4:2:0 q90": ({"quality": 90}, None),
    "4:2:2": ({"quality": 90, "subsampling": 1}, None),
    "4:4:4": ({"quality": 95, "subsampling": 0}, None),
    "progressive": ({"quality": 85, "progressive": True}, None),
    "restart markers every row": ({"quality": 90, "restart_marker_rows": 1}, None),
    "restart markers every 7 blocks": ({"quality": 90, "restart_marker_blocks": 7}, None),
    "odd size 1001x777": ({"quality": 80}, (1001, 777)),
    "odd size 4:4:4 progressive": ({"quality": 75, "subsampling": 0, "progressive": True}, (333, 199)),
    "tiny 1x1": ({"quality": 90}, (1, 1)),
}


def _pillow_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("kind", sorted(JPEG_KINDS))
def test_simplejpeg_equals_pillow(kind: str, tmp_path: Path) -> None:
    options, size = JPEG_KINDS[kind]
    path = tmp_path / "in.jpg"
    (_photo(*size) if size else _photo()).save(path, "JPEG", **options)
    layout = jpegfast.probe(path, MAX)
    assert layout is not None, "this JPEG should take the fast path"
    out = np.empty(layout.shape, dtype=np.uint8)
    assert jpegfast.decode_into(layout, out)
    assert np.array_equal(out, _pillow_rgb(path))


def test_simplejpeg_equals_pillow_on_the_bundled_photo() -> None:
    layout = jpegfast.probe(PHOTO, MAX)
    assert layout is not None
    out = np.empty(layout.shape, dtype=np.uint8)
    assert jpegfast.decode_into(layout, out)
    assert np.array_equal(out, _pillow_rgb(PHOTO))


def _exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[jpegfast.EXIF_ORIENTATION] = 6
    _photo(64, 48).save(path, "JPEG", exif=exif.tobytes())


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_exif_rotated, id="EXIF orientation to apply"),
        pytest.param(lambda p: _photo(64, 48).convert("CMYK").save(p, "JPEG"), id="CMYK"),
        pytest.param(lambda p: _photo(64, 48).convert("L").save(p, "JPEG"), id="grayscale"),
        pytest.param(lambda p: _photo(64, 48).save(p, "PNG"), id="not a JPEG"),
        pytest.param(lambda p: p.write_bytes(b"\xff\xd8 not really"), id="garbage after SOI"),
    ],
)
def test_other_files_take_pillows_path(make: object, tmp_path: Path) -> None:
    path = tmp_path / "in.jpg"
    make(path)  # type: ignore[operator]
    assert jpegfast.probe(path, MAX) is None


def test_a_truncated_jpeg_is_left_to_pillow(tmp_path: Path) -> None:
    path = tmp_path / "in.jpg"
    _photo(640, 480).save(path, "JPEG", quality=90)
    path.write_bytes(path.read_bytes()[:-4000])
    layout = jpegfast.probe(path, MAX)
    assert layout is not None  # the header is fine...
    assert not jpegfast.decode_into(layout, np.empty(layout.shape, dtype=np.uint8))  # ...the data is not


def test_pixel_limit_is_pillows_business(tmp_path: Path) -> None:
    path = tmp_path / "in.jpg"
    _photo(100, 100).save(path, "JPEG")
    assert jpegfast.probe(path, 100 * 100 - 1) is None


# --------------------------------------------------------------------------- PNG, band by band
def _decode_stream(path: Path) -> tuple[np.ndarray, list[int]]:
    layout = pngstream.probe(path, MAX)
    assert layout is not None, "this PNG should stream"
    out = np.empty(layout.shape, dtype=np.uint8)
    ready: list[int] = []
    pngstream.decode_into(layout, out, ready.append)
    return out, ready


@pytest.mark.parametrize(
    ("width", "height", "level"),
    [
        (641, pngstream.BAND_ROWS - 1, 6),
        (640, pngstream.BAND_ROWS, 1),
        (333, 2 * pngstream.BAND_ROWS + 1, 9),
        (1, 1, 6),
    ],
)
def test_streamed_png_equals_pillow(width: int, height: int, level: int, tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    _photo(width, height).save(path, "PNG", compress_level=level)
    out, ready = _decode_stream(path)
    assert np.array_equal(out, _pillow_rgb(path))
    assert ready == sorted(ready) and ready[-1] == height
    assert all(b - a <= pngstream.BAND_ROWS for a, b in itertools.pairwise([0, *ready]))


def test_a_wide_png_streams_in_shorter_bands(tmp_path: Path) -> None:
    """Bands are held to ~4 MB (they are copied a few times on their way): 20,000-pixel rows come
    69 at a time, not 128, and still decode to Pillow's pixels."""
    path = tmp_path / "wide.png"
    _photo(20_000, 150).save(path, "PNG", compress_level=1)
    layout = pngstream.probe(path, MAX)
    assert layout is not None and layout.band_rows == (4 << 20) // 60_001 < pngstream.BAND_ROWS
    out, ready = _decode_stream(path)
    assert np.array_equal(out, _pillow_rgb(path))
    assert ready == [69, 138, 150]


def test_streamed_png_equals_pillow_on_noise_with_tiny_idat_chunks(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(700, 517, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(pixels).save(path, "PNG", compress_level=1)
    # Re-chunk the IDAT stream into 1000-byte chunks: band boundaries fall anywhere.
    data = path.read_bytes()
    head, stream = data[:33], b"".join(_idat_parts(data))
    chunks = [_chunk(b"IDAT", stream[i : i + 1000]) for i in range(0, len(stream), 1000)]
    path.write_bytes(head + b"".join(chunks) + _chunk(b"IEND", b""))
    out, _ = _decode_stream(path)
    assert np.array_equal(out, pixels)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _idat_parts(data: bytes) -> list[bytes]:
    pos, parts = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            parts.append(data[pos + 8 : pos + 8 + n])
        pos += 12 + n
    return parts


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: _photo(40, 30).convert("P").save(p, "PNG", transparency=3), id="palette tRNS"),
        pytest.param(lambda p: _photo(40, 30).save(p, "PNG", transparency=(0, 0, 0)), id="tRNS"),
        pytest.param(
            lambda p: _photo(40, 30).save(p, "PNG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"), id="eXIf"
        ),
        pytest.param(
            lambda p: Image.fromarray(np.zeros((9, 9, 3), np.uint16)[..., 0]).save(p, "PNG"), id="16-bit gray"
        ),
        pytest.param(lambda p: _photo(40, 30).save(p, "JPEG"), id="a JPEG"),
    ],
)
def test_other_pngs_do_not_stream(make: object, tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    make(path)  # type: ignore[operator]
    assert pngstream.probe(path, MAX) is None


@pytest.mark.parametrize(("colors", "top_index"), [(256, 255), (100, 200), (20, 255)])
def test_an_8_bit_palette_png_streams_to_pillows_rgb(tmp_path: Path, colors: int, top_index: int) -> None:
    """Indices are reconstructed band by band, then looked up in the palette by Pillow itself, as
    it converts the whole image: equal even for indices beyond a short palette."""
    rng = np.random.default_rng(colors)
    image = Image.fromarray(rng.integers(0, top_index + 1, (3 * pngstream.BAND_ROWS + 5, 333), dtype=np.uint8), "P")
    image.putpalette(rng.integers(0, 256, colors * 3, dtype=np.uint8).tobytes(), "RGB")
    path = tmp_path / "in.png"
    image.save(path, "PNG")
    out, ready = _decode_stream(path)
    assert np.array_equal(out, _pillow_rgb(path))
    assert len(ready) == 4
    with Image.open(path) as im:  # and so the gray is Pillow's own convert("L") of the palette image
        assert np.array_equal(np.asarray(Image.fromarray(out).convert("L")), np.asarray(im.convert("L")))


def _filtered_png(path: Path, stored: np.ndarray, depth: int, color: int, bpp: int, palette: bytes = b"") -> None:
    """A PNG of ``stored`` rows (bytes as stored) with every filter type in turn, row by row
    (None, Sub, Up, Average, Paeth), so bands start on rows filtered against the row above."""
    h, n = stored.shape
    lines, prev = [], np.zeros(n, dtype=np.int32)
    for y in range(h):
        cur = stored[y].astype(np.int32)
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        kind = y % 5
        if kind == 4:  # Paeth, per byte
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        else:
            pred = [np.zeros(n, np.int32), left, prev, (left + prev) // 2][kind]
        lines.append(bytes([kind]) + ((cur - pred) % 256).astype(np.uint8).tobytes())
        prev = cur
    ihdr = struct.pack(">IIBBBBB", _pixels_wide(n, depth, color), h, depth, color, 0, 0, 0)
    chunks = _chunk(b"IHDR", ihdr) + (_chunk(b"PLTE", palette) if palette else b"")
    path.write_bytes(PNG_SIGNATURE + chunks + _chunk(b"IDAT", zlib.compress(b"".join(lines))) + _chunk(b"IEND", b""))


def _pixels_wide(row_bytes: int, depth: int, color: int) -> int:
    return row_bytes * 8 // (depth * pngstream.SAMPLES[color])


@pytest.mark.parametrize(
    ("depth", "color"),
    [
        *((d, 0) for d in (1, 2, 4, 8)),
        *((d, 3) for d in (1, 2, 4, 8)),
        *((d, c) for d in (8, 16) for c in (2, 4, 6)),
    ],
)
def test_every_png_kind_that_streams_equals_pillow_across_bands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, depth: int, color: int
) -> None:
    """Random stored bytes, every filter type, bands of 7 rows: the streamed pixels are Pillow's
    for gray 1-8 bits, palette 1-8 bits (short palette, so indices point past it), RGB, gray +
    alpha and RGBA at 8 and 16 bits (with alpha: Pillow's RGBA of the file)."""
    monkeypatch.setattr(pngstream, "BAND_ROWS", 7)
    rng = np.random.default_rng(depth * 10 + color)
    row_bytes = 600  # whole pixels at every depth: 75 16-bit RGBA pixels, 100 16-bit RGB, 4,800 1-bit
    stored = rng.integers(0, 256, (40, row_bytes), dtype=np.uint8)
    bpp = max(1, depth * pngstream.SAMPLES[color] // 8)
    palette = rng.integers(0, 256, 3 * min(100, 2**depth), dtype=np.uint8).tobytes() if color == 3 else b""
    path = tmp_path / "kind.png"
    _filtered_png(path, stored, depth, color, bpp, palette)
    out, ready = _decode_stream(path)
    with Image.open(path) as im:
        assert np.array_equal(out, np.asarray(im.convert("RGBA" if color in (4, 6) else "RGB")))
    assert len(ready) == 6  # 40 rows in bands of 7
    with Image.open(path) as im:  # and so the gray is Pillow's own convert("L")
        assert np.array_equal(np.asarray(Image.fromarray(out).convert("L")), np.asarray(im.convert("L")))


def test_interlaced_png_does_not_stream(tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    _photo(40, 30).save(path, "PNG")
    data = bytearray(path.read_bytes())
    data[28] = 1  # IHDR interlace method: Adam7 (the CRC is then wrong, and probe never checks it)
    path.write_bytes(bytes(data))
    assert pngstream.probe(path, MAX) is None


def test_corrupt_or_short_png_data_fails_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    _photo(300, 200).save(path, "PNG", compress_level=1)
    data = path.read_bytes()
    stream = b"".join(_idat_parts(data))
    short = zlib.compress(zlib.decompress(stream)[: 100 * 901])  # 100 of 200 rows, a valid stream
    path.write_bytes(data[:33] + _chunk(b"IDAT", short) + _chunk(b"IEND", b""))
    layout = pngstream.probe(path, MAX)
    assert layout is not None
    with pytest.raises(ImageError, match="100 of 200 rows"):
        pngstream.decode_into(layout, np.empty(layout.shape, dtype=np.uint8), lambda n: None)
    path.write_bytes(data[:33] + _chunk(b"IDAT", stream[:50] + bytes(200) + stream[250:]) + _chunk(b"IEND", b""))
    layout = pngstream.probe(path, MAX)
    assert layout is not None
    with pytest.raises(ImageError, match="cannot decode image"):
        pngstream.decode_into(layout, np.empty(layout.shape, dtype=np.uint8), lambda n: None)
