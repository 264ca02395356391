"""Decode an RGB PNG band by band, so workers can start on the first rows while the rest decode.

Pillow decodes a PNG whole. Here the master inflates the IDAT stream itself and hands Pillow one
band of filtered rows at a time, with the last row of the band before prepended unfiltered (filter
type 0), so the band's first row is reconstructed against the right row above. Each band is a
tiny zlib stream of *stored* blocks for Pillow's own PNG decoder (``Image.frombytes(..., "zip")``),
so the pixels are exactly Pillow's. ``ready(rows)`` is called after each band.

What streams: RGB and RGBA (8 and 16 bits), gray + alpha (8 and 16 bits), palette (1, 2, 4, 8
bits) and gray (1, 2, 4, 8 bits), not interlaced, no ``tRNS`` or ``eXIf`` chunk, within the pixel
limit; anything else (16-bit gray, transparency by ``tRNS``, ...) returns None from :func:`probe`
and takes the normal path. Each band's pixels come from Pillow's own unpacking for the file's kind
(``RAWMODES``, as its PNG plugin has them: a 16-bit sample's high byte, palette lookup, 2-bit gray
scaled), so they are the pixels Pillow decodes; gray becomes RGB with R = G = B (whose luma is
the gray value itself, exactly), gray + alpha RGBA the same way. The row above a band must be
given as *stored* bytes. The filters work on bytes, looking back by the bytes of one pixel
(``bpp``), whatever the samples mean: so a band is first reconstructed as plain bytes by Pillow
decoding it as 8-bit samples of the same ``bpp`` (L, LA, RGB, RGBA), then unpacked with the
file's raw mode. 16-bit RGB and RGBA (6 and 8 bytes a pixel, which no 8-bit mode has) are
decoded directly instead, and their stored row read back as the samples' high and low bytes
(two unpackings).
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
#: (bit depth, colour type) -> (Pillow's mode, the raw mode its PNG plugin unpacks rows with)
RAWMODES = {
    (1, 0): ("1", "1"),
    (2, 0): ("L", "L;2"),
    (4, 0): ("L", "L;4"),
    (8, 0): ("L", "L"),
    (8, 2): ("RGB", "RGB"),
    (16, 2): ("RGB", "RGB;16B"),
    (1, 3): ("P", "P;1"),
    (2, 3): ("P", "P;2"),
    (4, 3): ("P", "P;4"),
    (8, 3): ("P", "P"),
    (8, 4): ("LA", "LA"),
    (16, 4): ("RGBA", "LA;16B"),
    (8, 6): ("RGBA", "RGBA"),
    (16, 6): ("RGBA", "RGBA;16B"),
}
#: Samples a pixel of each PNG colour type.
SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: 8-bit modes by bytes a pixel: Pillow reconstructs a band's stored bytes through them.
BYTE_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_IHDR = struct.Struct(">IIBBBBB")


@dataclass(frozen=True)
class PngLayout:
    path: Path
    width: int
    height: int
    idat: tuple[tuple[int, int], ...]  # (offset, length) of each IDAT chunk's data
    palette: bytes | None = None  # a palette image's PLTE data
    depth: int = 8
    color: int = 2  # the PNG colour type: 0 gray, 2 RGB, 3 palette, 4 gray + alpha, 6 RGBA

    @property
    def shape(self) -> tuple[int, int, int]:
        """The pixels handed to the workers: RGB, or RGBA when the file has alpha."""
        return (self.height, self.width, 4 if self.color in (4, 6) else 3)

    @property
    def line_bytes(self) -> int:
        """Bytes of one filtered row: the filter type, then the row's samples."""
        return -(-self.width * self.depth * SAMPLES[self.color] // 8) + 1

    @property
    def bpp(self) -> int:
        """Bytes a pixel, as the PNG filters count them (at least 1)."""
        return max(1, self.depth * SAMPLES[self.color] // 8)

    @property
    def mode(self) -> str:
        """The mode Pillow opens the file in."""
        return RAWMODES[(self.depth, self.color)][0]

    @property
    def band_rows(self) -> int:
        """Rows decoded at a time: ``BAND_ROWS``, fewer for rows wider than ``BAND_BYTES / 128``."""
        return max(1, min(BAND_ROWS, BAND_BYTES // (self.width * self.shape[2] + 1)))


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
    if (depth, color) not in RAWMODES or (compression, filtering, interlace) != (0, 0, 0):
        return None
    if not 0 < width * height <= max_pixels or (color == 3 and palette is None):
        return None
    return PngLayout(Path(path), width, height, tuple(idat), palette if color == 3 else None, depth, color)


def decode_into(layout: PngLayout, out: npt.NDArray[np.uint8], ready: Callable[[int], None]) -> None:
    """Decode ``layout``'s pixels into ``out`` (``layout.shape``), calling ``ready(rows_done)``
    after each band. Raises ImageError if the data is corrupt or ends early.

    Two threads: one reads and inflates the IDAT stream into bands of filtered rows, this one has
    Pillow reconstruct them; both release the GIL in C, so they overlap."""
    height = layout.height
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
            pixels, previous = _band(layout, data, rows + bool(y))
            out[y : y + rows] = pixels[1 if y else 0 :]
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


def _band(layout: PngLayout, data: bytes, rows: int) -> tuple[npt.NDArray[np.uint8], bytes]:
    """The band's RGB(A) pixels as Pillow decodes them, and its last row as stored (the row above
    the next band). ``data``: the band's filtered rows, zlib-wrapped."""
    mode, rawmode = RAWMODES[(layout.depth, layout.color)]
    size = (layout.width, rows)
    if layout.depth == 8 and layout.color in (2, 6):
        pixels = np.asarray(Image.frombytes(mode, size, data, "zip", rawmode))
        return pixels, pixels[-1].tobytes()
    if layout.depth == 16 and layout.color in (2, 6):
        # Pillow keeps each sample's high byte (";16B"); ";16L" reads the other byte of each pair,
        # which for this big-endian data is the low byte: both make the stored row.
        pixels = np.asarray(Image.frombytes(mode, size, data, "zip", rawmode))
        low = np.asarray(Image.frombytes(mode, size, data, "zip", rawmode.replace(";16B", ";16L")))[-1]
        return pixels, np.stack([pixels[-1], low], axis=-1).tobytes()
    # The bytes stored, reconstructed through an 8-bit mode with as many bytes a pixel (the
    # filters only see bytes), then unpacked as the file's kind.
    row_bytes = layout.line_bytes - 1
    bpp = layout.bpp
    stored = Image.frombytes(BYTE_MODES[bpp], (row_bytes // bpp, rows), data, "zip", BYTE_MODES[bpp]).tobytes()
    band = Image.frombytes(mode, size, stored, "raw", rawmode)
    if layout.color == 3:  # Pillow's own palette lookup, as it converts the whole image
        assert layout.palette is not None
        band.putpalette(layout.palette, "RGB")
        pixels = np.asarray(band.convert("RGB"))
    elif band.mode == "RGBA":  # 16-bit gray + alpha: Pillow opens it as RGBA, R = G = B
        pixels = np.asarray(band)
    elif band.mode == "LA":  # gray + alpha: R = G = B, then the alpha
        la = np.asarray(band)
        pixels = np.concatenate([np.repeat(la[:, :, :1], 3, axis=2), la[:, :, 1:]], axis=2)
    else:  # gray: R = G = B, whose luma is the gray value itself, exactly
        gray = np.asarray(band.convert("L") if mode == "1" else band)
        pixels = np.repeat(gray[:, :, None], 3, axis=2)
    return pixels, stored[-row_bytes:]


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
