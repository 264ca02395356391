"""Read an RGB TIFF or BigTIFF band by band (a row of tiles, or a group of strips, at a time).

tifffile decodes one segment (strip or tile) at a time, in file order, so an image of any size is
read with one band of tiles in memory. Only what equals Pillow's own decoding streams: 8-bit RGB,
interleaved samples, no EXIF rotation, lossless compression (none, deflate, LZW, PackBits, zstd);
anything else returns None from :func:`probe` and takes the normal (whole-image) path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from distgray.errors import ImageError
from distgray.storage.places import Place, open_place

#: Lossless codecs whose output is the stored bytes, whoever decodes them.
#: A compressed band (a strip, or a row of tiles) larger than this is not read in bands.
MAX_BAND_BYTES = 64 << 20
#: Uncompressed strips are read this many rows at a time, straight into place.
RAW_BAND_ROWS = 128
#: Bytes of compressed segments tifffile reads at a time.
READ_BYTES = 4 << 20
LOSSLESS = frozenset({1, 5, 8, 32773, 32946, 50000})  # none, LZW, deflate, PackBits, deflate (old), zstd


@dataclass(frozen=True)
class TiffLayout:
    path: Place  # a local file, or an object behind a URL (read by ranges)
    width: int
    height: int
    segment_rows: int  # rows of one strip or one row of tiles
    #: Uncompressed strips: (file offset, bytes) of each, read straight into the rows.
    raw_strips: tuple[tuple[int, int], ...] = ()

    @property
    def band_rows(self) -> int:
        """Rows :func:`decode_into` hands over at a time: a strip or row of tiles, or for
        uncompressed strips ``RAW_BAND_ROWS`` (they are read in parts)."""
        return RAW_BAND_ROWS if self.raw_strips else self.segment_rows

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)


def probe(path: Place) -> TiffLayout | None:
    """The file's layout if it is a TIFF that can be read in bands, else None (also for anything
    unreadable: the normal path then says what is wrong). Reads the first IFD only."""
    try:
        import tifffile

        with open_place(path, 64 << 10) as fh:
            if fh.read(4) not in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
                return None
        with open_place(path, 64 << 10) as fh, tifffile.TiffFile(fh) as tif:
            page = tif.pages.first
            orientation = page.tags.get("Orientation")
            plain = (
                page.photometric == tifffile.PHOTOMETRIC.RGB
                and page.samplesperpixel == 3
                and page.bitspersample == 8
                and page.dtype == np.uint8
                and page.planarconfig == tifffile.PLANARCONFIG.CONTIG
                and int(page.compression) in LOSSLESS
                and page.imagedepth == 1
                and (orientation is None or orientation.value == 1)
                and len(page.extrasamples) == 0
            )
            if not plain:
                return None
            try:  # LZW, zstd...: only with the imagecodecs package installed
                tifffile.TIFF.DECOMPRESSORS[int(page.compression)]
            except KeyError:
                return None
            band = max(1, min(page.tilelength if page.is_tiled else page.rowsperstrip, page.imagelength))
            raw: tuple[tuple[int, int], ...] = ()
            if int(page.compression) == 1 and not page.is_tiled:
                raw = tuple(zip(page.dataoffsets, page.databytecounts, strict=True))
            elif band * page.imagewidth * 3 > MAX_BAND_BYTES:
                return None  # one compressed strip or tile row would be too big a band
            return TiffLayout(path, page.imagewidth, page.imagelength, band, raw)
    except Exception:  # tifffile raises many kinds for files it cannot read: not ours to stream
        return None


def decode_into(layout: TiffLayout, out: npt.NDArray[np.uint8], ready: Callable[[int], None]) -> None:
    """Decode ``layout``'s pixels into ``out`` (height x width x 3) a band at a time, calling
    ``ready(rows_done)`` after each. Raises ImageError if the data is corrupt or missing."""
    import tifffile

    if layout.raw_strips:
        _read_raw(layout, out, ready)
        return
    width, height = layout.width, layout.height
    rows_done = 0
    band_done: dict[int, int] = {}  # band index -> pixels of it decoded so far
    try:
        with open_place(layout.path, READ_BYTES) as fh, tifffile.TiffFile(fh) as tif:
            page = tif.pages.first
            # tifffile reads up to `buffersize` of segments at a time (256 MB by default): keep it small
            for segment, index, shape in page.segments(sort=False, maxworkers=1, buffersize=READ_BYTES):
                if segment is None:
                    raise ImageError(f"{layout.path}: cannot decode image: a TIFF segment is missing")
                # index: (sample plane, depth, row, column, sample) of the segment, in pixels;
                # shape: (depth, rows, columns, samples), tiles padded at the image's edges
                y, x = index[2], index[3]
                rows, cols = min(shape[1], height - y), min(shape[2], width - x)
                block = np.asarray(segment).reshape(shape[1], shape[2], shape[3])
                out[y : y + rows, x : x + cols] = block[:rows, :cols, :3]
                band = y // layout.segment_rows
                band_done[band] = band_done.get(band, 0) + rows * cols
                while band_done.get(rows_done // layout.segment_rows, 0) == _band_pixels(layout, rows_done):
                    band_done.pop(rows_done // layout.segment_rows)
                    rows_done = min(height, rows_done + layout.segment_rows)
                    ready(rows_done)
                    if rows_done == height:
                        break
    except ImageError:
        raise
    except Exception as exc:  # tifffile's and the codecs' errors for corrupt or truncated data
        raise ImageError(f"{layout.path}: cannot decode image: {type(exc).__name__}: {exc}") from exc
    if rows_done != height:
        raise ImageError(f"{layout.path}: cannot decode image: TIFF data holds {rows_done} of {height} rows")


def _band_pixels(layout: TiffLayout, row: int) -> int:
    """Pixels of the strip or row of tiles that starts at ``row`` (the last one may be short)."""
    return min(layout.segment_rows, layout.height - row) * layout.width


def _read_raw(layout: TiffLayout, out: npt.NDArray[np.uint8], ready: Callable[[int], None]) -> None:
    """Uncompressed strips: their bytes are the rows, read from the file into place."""
    row_bytes = layout.width * 3
    flat = out.reshape(-1)
    y = 0
    try:
        with open_place(layout.path, READ_BYTES) as fh:
            for offset, count in layout.raw_strips:
                rows = min(layout.segment_rows, layout.height - y)
                if count < rows * row_bytes:
                    raise ImageError(
                        f"{layout.path}: cannot decode image: a TIFF strip holds {count} bytes, not {rows * row_bytes}"
                    )
                fh.seek(offset)
                for part in range(0, rows, RAW_BAND_ROWS):
                    n = min(RAW_BAND_ROWS, rows - part)
                    view = flat[(y + part) * row_bytes : (y + part + n) * row_bytes].data
                    if fh.readinto(view) != len(view):  # type: ignore[attr-defined]
                        raise ImageError(f"{layout.path}: cannot decode image: TIFF data ends early")
                    ready(y + part + n)
                y += rows
                if y >= layout.height:
                    break
    except OSError as exc:
        raise ImageError(f"{layout.path}: cannot read image: {exc}") from exc
    if y < layout.height:
        raise ImageError(f"{layout.path}: cannot decode image: TIFF data holds {y} of {layout.height} rows")
