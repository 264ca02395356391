"""Decode an RGB PNG band by band, so workers can start on the first rows while the rest decode.

Pillow decodes a PNG whole. Here the master inflates the IDAT stream itself and hands Pillow one
band of filtered rows at a time, with the last row of the band before prepended unfiltered (filter
type 0), so the band's first row is reconstructed against the right row above. Each band is a
tiny zlib stream of *stored* blocks for Pillow's own PNG decoder (``Image.frombytes(..., "zip")``),
so the pixels are exactly Pillow's. ``ready(rows)`` is called after each band.

Only the plain cases stream (8-bit RGB, or 8-bit palette turned into RGB by Pillow's own palette
lookup a band at a time; not interlaced, no ``tRNS`` or ``eXIf`` chunk, within the pixel limit);
anything else returns None from :func:`probe` and takes the normal path.
"""

from __future__ import annotations

import contextlib
import queue
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from distgray.errors import ImageError
from distgray.imaging.pngstrip import PNG_SIGNATURE

BAND_ROWS = 128
#: ... but no more bytes a band than this: a band is copied a few times on its way (inflated,
#: wrapped for Pillow, Pillow's 4-byte pixels, the array), so wide images get shorter bands.
BAND_BYTES = 4 << 20
READ_BYTES = 1 << 20
QUEUED_BANDS = 2  # inflated bands waiting for Pillow (3 MB each for 8K)
_CHUNK_HEAD = struct.Struct(">I4s")
_IHDR = struct.Struct(">IIBBBBB")


@dataclass(frozen=True)
class PngLayout:
    path: Path
    width: int
    height: int
    idat: tuple[tuple[int, int], ...]  # (offset, length) of each IDAT chunk's data
    palette: bytes | None = None  # a palette image's PLTE data (its pixels are 1-byte indices)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    @property
    def line_bytes(self) -> int:
        """Bytes of one filtered row: the filter type, then the row's samples."""
        return self.width * (1 if self.palette is not None else 3) + 1

    @property
    def band_rows(self) -> int:
        """Rows decoded at a time: ``BAND_ROWS``, fewer for rows wider than ``BAND_BYTES / 128``."""
        return max(1, min(BAND_ROWS, BAND_BYTES // (self.width * 3 + 1)))


def probe(path: Path, max_pixels: int) -> PngLayout | None:
    """The file's layout if it can be streamed, else None (also for anything unreadable: the
    normal path then reports what is wrong). Reads chunk headers only."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                return None
            pos, idat, ihdr, kind, palette = 8, [], None, b"", None
            size = f.seek(0, 2)
            while pos + 12 <= size:
                f.seek(pos)
                length, kind = _CHUNK_HEAD.unpack(f.read(8))
                if kind == b"IHDR" and length == _IHDR.size:
                    ihdr = _IHDR.unpack(f.read(_IHDR.size))
                elif kind == b"IDAT":
                    idat.append((pos + 8, length))
                elif kind == b"PLTE" and 3 <= length <= 768 and length % 3 == 0:
                    palette = f.read(length)
                elif kind in (b"tRNS", b"eXIf", b"IEND"):
                    break
                pos += 12 + length
    except OSError:
        return None
    if ihdr is None or kind != b"IEND" or not idat:
        return None
    width, height, depth, color, compression, filtering, interlace = ihdr
    if (depth, compression, filtering, interlace) != (8, 0, 0, 0) or not 0 < width * height <= max_pixels:
        return None
    if color == 2:
        return PngLayout(Path(path), width, height, tuple(idat))
    if color == 3 and palette is not None:
        return PngLayout(Path(path), width, height, tuple(idat), palette)
    return None


def decode_into(layout: PngLayout, out: npt.NDArray[np.uint8], ready: Callable[[int], None]) -> None:
    """Decode ``layout``'s pixels into ``out`` (height x width x 3), calling ``ready(rows_done)``
    after each band. Raises ImageError if the data is corrupt or ends early.

    Two threads: one reads and inflates the IDAT stream into bands of filtered rows, this one has
    Pillow reconstruct them; both release the GIL in C, so they overlap."""
    width, height = layout.width, layout.height
    line = layout.line_bytes
    previous = b""  # the last row of the band before, as stored (unfiltered samples)
    bands: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=QUEUED_BANDS)
    stop = threading.Event()
    reader = threading.Thread(target=_inflate, args=(layout, line, bands, stop), name="distgray-inflate", daemon=True)
    reader.start()
    y = 0
    try:
        while (item := bands.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            rows = min(len(item) // line, height - y)
            if rows <= 0:
                break
            above = b"\0" + previous if y else b""  # the row above, as an unfiltered row
            stored = zlib.compressobj(0)
            data = stored.compress(above) + stored.compress(memoryview(item)[: rows * line]) + stored.flush()
            if layout.palette is None:
                band = Image.frombytes("RGB", (width, rows + bool(y)), data, "zip", "RGB")
                out[y : y + rows] = np.asarray(band)[1 if y else 0 :]
                previous = out[y + rows - 1].tobytes()
            else:  # indices, then Pillow's own palette lookup, as it converts the whole image
                band = Image.frombytes("P", (width, rows + bool(y)), data, "zip", "P")
                previous = band.crop((0, band.height - 1, width, band.height)).tobytes()
                band.putpalette(layout.palette, "RGB")
                out[y : y + rows] = np.asarray(band.convert("RGB"))[1 if y else 0 :]
            y += rows
            ready(y)
    except zlib.error as exc:
        raise ImageError(f"{layout.path}: cannot decode image: corrupt PNG data ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise ImageError(f"{layout.path}: cannot decode image: {exc}") from exc
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:  # unblock the reader if it waits for room
                bands.get_nowait()
        reader.join()
    if y != height:
        raise ImageError(f"{layout.path}: cannot decode image: PNG data holds {y} of {height} rows")


def _inflate(
    layout: PngLayout, line: int, bands: queue.Queue[bytes | BaseException | None], stop: threading.Event
) -> None:
    """The reader thread: bands of ``band_rows`` filtered rows (the last one shorter), then None."""
    want = layout.band_rows * line
    inflater = zlib.decompressobj()
    pending: list[bytes] = []
    have = 0

    def put(item: bytes | BaseException | None) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                bands.put(item, timeout=0.1)
                return

    try:
        with open(layout.path, "rb") as f:
            for offset, length in layout.idat:
                f.seek(offset)
                for part in range(0, length, READ_BYTES):
                    data = f.read(min(READ_BYTES, length - part))
                    while data and not stop.is_set():
                        chunk = inflater.decompress(data, want - have)  # at most the rest of a band
                        data = inflater.unconsumed_tail
                        pending.append(chunk)
                        have += len(chunk)
                        if have == want:
                            put(b"".join(pending) if len(pending) > 1 else pending[0])
                            pending, have = [], 0
                        elif not chunk:
                            break
        tail = b"".join(pending) + inflater.flush()
        if not inflater.eof:
            raise ImageError(f"{layout.path}: cannot decode image: PNG data ends early")
        if tail:
            put(tail)
        put(None)
    except (zlib.error, OSError, ImageError) as exc:
        put(exc)
