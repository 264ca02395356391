"""Big test images made by tiling a real photo, written band by band (memory stays small), so the
expected gray output is known tile by tile without ever holding the whole image.

Used by the streaming tests and by ``utils/bench_big.py``. A mosaic is ``nx`` x ``ny`` copies of
``tile`` (an RGB array), optionally cropped to ``width`` x ``height``; row ``y`` of it is row
``y % tile_height`` of the tile, repeated across.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

U8 = npt.NDArray[np.uint8]
ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "test_images" / "sample_4k.jpg"


def photo_tile(side_scale: float = 1.0) -> U8:
    """The bundled 4K photo (CC-BY-4.0, see test_images/ATTRIBUTION.md) as RGB, mirrored into a 2x2
    mosaic (7680x4320, like ``photo_8k``), optionally scaled down first (for small tests)."""
    with Image.open(PHOTO) as im:
        rgb = im.convert("RGB")
        if side_scale != 1.0:
            rgb = rgb.resize((round(rgb.width * side_scale), round(rgb.height * side_scale)), Image.Resampling.BOX)
        a = np.asarray(rgb)
    top = np.concatenate([a, a[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


@dataclass(frozen=True)
class Mosaic:
    tile: U8
    width: int
    height: int

    def rows(self, start: int, stop: int) -> U8:
        """RGB rows [start, stop) of the mosaic."""
        th, tw, _ = self.tile.shape
        reps = -(-self.width // tw)
        idx = np.arange(start, stop) % th
        return np.ascontiguousarray(np.tile(self.tile[idx], (1, reps, 1))[:, : self.width])

    def gray_rows(self, start: int, stop: int, gray_tile: U8 | None = None) -> U8:
        """The expected gray rows: Pillow's ``convert("L")`` of the tile, tiled the same way."""
        g = gray_tile if gray_tile is not None else gray_of(self.tile)
        th, tw = g.shape
        reps = -(-self.width // tw)
        idx = np.arange(start, stop) % th
        return np.ascontiguousarray(np.tile(g[idx], (1, reps))[:, : self.width])

    def bands(self, rows: int = 256) -> Iterator[U8]:
        for y in range(0, self.height, rows):
            yield self.rows(y, min(self.height, y + rows))


def gray_of(rgb: U8) -> U8:
    return np.asarray(Image.fromarray(rgb).convert("L"))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: Path, mosaic: Mosaic, level: int = 1, *, truncate_at: float | None = None) -> Path:
    """An 8-bit RGB PNG of ``mosaic`` (filter type None on every row), written a band at a time.
    ``truncate_at``: cut the file at that fraction of its IDAT data (a damaged input)."""
    comp = zlib.compressobj(level)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", mosaic.width, mosaic.height, 8, 2, 0, 0, 0)))
        for band in mosaic.bands():
            lines = np.zeros((band.shape[0], mosaic.width * 3 + 1), dtype=np.uint8)
            lines[:, 1:] = band.reshape(band.shape[0], -1)
            data = comp.compress(lines.tobytes())
            if data:
                f.write(_chunk(b"IDAT", data))
        f.write(_chunk(b"IDAT", comp.flush()))
        f.write(_chunk(b"IEND", b""))
    if truncate_at is not None:
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(int(size * truncate_at))
    return path


def write_tiff(path: Path, mosaic: Mosaic, *, tile: int | None = 256, compression: str | None = None) -> Path:
    """An 8-bit RGB TIFF of ``mosaic`` (BigTIFF beyond 4 GB), tiled (``tile`` pixels) or in strips
    (``tile=None``: 64 rows each), written from an iterator (memory stays small)."""
    import tifffile

    big = mosaic.width * mosaic.height * 3 > 4_000_000_000
    shape = (mosaic.height, mosaic.width, 3)
    with tifffile.TiffWriter(path, bigtiff=big) as tif:
        if tile is None:
            rows = 64

            def strips() -> Iterator[U8]:
                for y in range(0, mosaic.height):
                    yield mosaic.rows(y, y + 1)[0]

            tif.write(strips(), shape=shape, dtype="uint8", photometric="rgb", rowsperstrip=rows, metadata=None)
            return path

        def tiles() -> Iterator[U8]:
            for y in range(0, mosaic.height, tile):
                band = mosaic.rows(y, min(mosaic.height, y + tile))
                for x in range(0, mosaic.width, tile):
                    t = np.zeros((tile, tile, 3), dtype=np.uint8)
                    part = band[:, x : x + tile]
                    t[: part.shape[0], : part.shape[1]] = part
                    yield t

        tif.write(
            tiles(),
            shape=shape,
            dtype="uint8",
            photometric="rgb",
            tile=(tile, tile),
            compression=compression,
            metadata=None,
        )
    return path


def tiff_strips(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """The rows of a one-page TIFF strip by strip (``(first row, rows)``), decoded by tifffile
    one at a time, so a huge compressed output is checked without holding it."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        fh = tif.filehandle
        for index, (offset, size) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=True)):
            fh.seek(offset)
            segment, where, _ = page.decode(fh.read(size), index)
            assert segment is not None
            yield where[2], segment.reshape(segment.shape[1], segment.shape[2])
