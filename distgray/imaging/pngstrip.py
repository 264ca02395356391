"""PNG from independently encoded strips: filter and deflate each strip, join them into one file.

A PNG's pixels are one zlib stream of *filtered* scanlines (a filter-type byte, then the row). A
strip of rows can be filtered and deflated on its own and the pieces concatenated, provided that

* each piece is raw deflate that ends on a byte boundary without the final-block bit
  (``Z_SYNC_FLUSH``), except the last piece, which finishes the stream (``Z_FINISH``);
* the first row of a strip is filtered against the real row above it (sent along with the strip)
  or with a filter that does not look at the row above (*Sub*); and
* the zlib header goes in front and the Adler-32 of all filtered bytes behind. Adler-32 combines
  from each piece's checksum and length (:func:`adler32_combine`), so nobody needs all the bytes.

Filtering uses Pillow's own encoder (its adaptive per-row choice, at zlib level 0 so it costs
little), so the filtered bytes are exactly those Pillow would deflate for the whole image.
Pure: bytes and arrays in, bytes out; no sockets, no files.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from PIL import Image

from distgray.errors import ImageError
from distgray.imaging.encoded import EncodedStrip

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ADLER_MOD = 65521
FILTER_SUB = 1
#: zlib header (CMF, FLG) per level: deflate, 32 KiB window, FLEVEL as zlib itself would set it.
_ZLIB_HEADERS = {0: b"\x78\x01", 1: b"\x78\x01", 6: b"\x78\x9c"}


def filtered_len(rows: int, width: int, alpha: bool = False) -> int:
    return rows * ((2 if alpha else 1) * width + 1)


def filter_rows(gray: npt.NDArray[np.uint8], has_above: bool, first_row_of_image: bool) -> bytes:
    """The filtered scanlines of ``gray`` (rows x width, or rows x width x 2 for gray + alpha), as
    Pillow filters them.

    ``has_above``: ``gray[0]`` is the row above the strip, used as the first row's reference and
    not output. Otherwise, unless the strip starts the image, its first row gets the *Sub* filter,
    which needs nothing from the row above.
    """
    height, width = gray.shape[:2]
    bpp = 2 if gray.ndim == 3 else 1  # bytes a pixel: what the filters look back by
    mode = "LA" if bpp == 2 else "L"
    if height - has_above < 1:
        raise ValueError("a strip needs at least one row of its own")
    image = Image.frombuffer(mode, (width, height), np.ascontiguousarray(gray), "raw", mode, 0, 1)
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=0)
    raw = zlib.decompress(_idat(buf.getvalue()))
    line = width * bpp + 1
    if len(raw) != height * line:
        raise ImageError(f"PNG filter: expected {height * line} filtered bytes, got {len(raw)}")
    if has_above:
        return raw[line:]
    if first_row_of_image:
        return raw
    row = np.ascontiguousarray(gray[0]).reshape(-1)
    sub = np.empty(line, dtype=np.uint8)
    sub[0] = FILTER_SUB
    sub[1 : 1 + bpp] = row[:bpp]
    np.subtract(row[bpp:], row[:-bpp], out=sub[1 + bpp :])  # uint8 arithmetic wraps modulo 256, as PNG wants
    return sub.tobytes() + raw[line:]


def encode_strip(gray: npt.NDArray[np.uint8], level: int, *, has_above: bool, first: bool, last: bool) -> EncodedStrip:
    """Filter and deflate one strip (see :func:`filter_rows`: gray, or gray + alpha pairs);
    ``last`` finishes the stream."""
    filtered = filter_rows(gray, has_above, first)
    deflater = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_FILTERED)  # Pillow's settings
    data = deflater.compress(filtered) + deflater.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return EncodedStrip(data, zlib.adler32(filtered), len(filtered))


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """Adler-32 of A + B from Adler-32(A), Adler-32(B) and len(B) (zlib's adler32_combine)."""
    rem = len2 % ADLER_MOD
    a1, b1 = adler1 & 0xFFFF, adler1 >> 16
    a2, b2 = adler2 & 0xFFFF, adler2 >> 16
    a = (a1 + a2 - 1) % ADLER_MOD
    b = (b1 + b2 + rem * a1 - rem) % ADLER_MOD
    return (b << 16) | a


def chunk(kind: bytes, data: bytes | memoryview = b"") -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return b"".join((struct.pack(">I", len(data)), kind, bytes(data), struct.pack(">I", crc)))


class PngJoiner:
    """Writes an 8-bit gray (or gray + alpha) PNG from strips handed over in row order: ``head()``,
    ``strip()``..., ``tail()``.

    Each strip becomes one IDAT chunk, so the file can be written as strips arrive.
    """

    def __init__(self, width: int, height: int, level: int, alpha: bool = False) -> None:
        if not (1 <= width < 2**31 and 1 <= height < 2**31):
            raise ValueError(f"PNG cannot hold {width}x{height}")
        self.width, self.height, self.level, self.alpha = width, height, level, alpha
        self.adler = 1
        self.filtered = 0

    def head(self) -> bytes:
        color = 4 if self.alpha else 0  # gray + alpha, or gray; 8 bits, no interlace
        ihdr = struct.pack(">IIBBBBB", self.width, self.height, 8, color, 0, 0, 0)
        zhead = _ZLIB_HEADERS.get(self.level, b"\x78\xda" if self.level > 6 else b"\x78\x5e")
        return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zhead)

    def strip(self, piece: EncodedStrip) -> bytes:
        self.adler = adler32_combine(self.adler, piece.adler, piece.length)
        self.filtered += piece.length
        return chunk(b"IDAT", piece.data)

    def tail(self) -> bytes:
        expected = filtered_len(self.height, self.width, self.alpha)
        if self.filtered != expected:
            raise ImageError(f"PNG join: strips hold {self.filtered} filtered bytes, the image needs {expected}")
        return chunk(b"IDAT", struct.pack(">I", self.adler)) + chunk(b"IEND")


def join(width: int, height: int, level: int, pieces: Iterable[EncodedStrip], alpha: bool = False) -> bytes:
    """A whole PNG from its strips, in row order (for tests and small images)."""
    joiner = PngJoiner(width, height, level, alpha)
    return b"".join([joiner.head(), *(joiner.strip(p) for p in pieces), joiner.tail()])


def _idat(png: bytes) -> bytes:
    pos, parts = len(PNG_SIGNATURE), []
    while pos + 8 <= len(png):
        (length,) = struct.unpack_from(">I", png, pos)
        kind = png[pos + 4 : pos + 8]
        if kind == b"IDAT":
            parts.append(png[pos + 8 : pos + 8 + length])
        pos += 12 + length
    return b"".join(parts)
