"""Grayscale JPEG from independently encoded strips, joined with restart markers.

A baseline JPEG with a restart interval of one MCU row (8 pixel rows for one gray component)
resets its entropy coder, DC prediction included, at the start of every MCU row, and restart
markers RST0..RST7 count the rows modulo 8. So a strip whose rows start on an MCU row can be
encoded alone (by Pillow, same quality, hence the same quantisation and Huffman tables), its
entropy-coded data cut out of that file, its markers renumbered for where it sits in the image,
and the strips concatenated behind one header: the result is byte for byte the file Pillow
writes for the whole image with ``restart_marker_rows=1``, and decodes to exactly the pixels of
Pillow's default output (the same coefficients; only the markers differ).

Pure: arrays in, bytes out. Strips other than the last must be a multiple of 8 rows.
"""

from __future__ import annotations

import io
import itertools
import re
import struct

import numpy as np
import numpy.typing as npt
from PIL import Image

from distgray.errors import ImageError
from distgray.imaging.encoded import EncodedStrip

MCU_ROWS = 8
MAX_SIDE = 65535  # a JPEG's dimensions are 16-bit
EOI = b"\xff\xd9"
_RST = re.compile(rb"\xff[\xd0-\xd7]")
_SOF0, _SOS = 0xC0, 0xDA


def _encode(gray: npt.NDArray[np.uint8], quality: int) -> bytes:
    height, width = gray.shape
    image = Image.frombuffer("L", (width, height), np.ascontiguousarray(gray), "raw", "L", 0, 1)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, restart_marker_rows=1)
    return buf.getvalue()


def _scan_offset(data: bytes) -> tuple[int, int]:
    """(offset of the SOF0 segment, offset where the entropy-coded data starts)."""
    pos, sof = 2, -1
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker == _SOF0:
            sof = pos
        pos += 2 + length
        if marker == _SOS:
            if sof < 0:
                raise ImageError("JPEG strip: not a baseline JPEG")
            return sof, pos
    raise ImageError("JPEG strip: no scan found")


def rst(interval: int) -> bytes:
    """The restart marker that follows MCU row ``interval`` (0-based) of the image."""
    return bytes((0xFF, 0xD0 + interval % 8))


def encode_strip(gray: npt.NDArray[np.uint8], quality: int, row_start: int, last: bool) -> EncodedStrip:
    """The entropy-coded data of rows [row_start, row_start + len(gray)), markers numbered for
    their place in the image, ending with the restart marker that leads into the next strip
    (unless ``last``). ``length`` is the strip's row count."""
    rows = gray.shape[0]
    if row_start % MCU_ROWS or (not last and rows % MCU_ROWS):
        raise ValueError(f"JPEG strips start on and (but the last) span whole MCU rows: {row_start}+{rows}")
    data = _encode(gray, quality)
    _, start = _scan_offset(data)
    if not data.endswith(EOI):
        raise ImageError("JPEG strip: the encoder's output does not end with EOI")
    first = row_start // MCU_ROWS
    count = iter(range(first, first + (rows + MCU_ROWS - 1) // MCU_ROWS))
    scan = _RST.sub(lambda _m: rst(next(count)), data[start:-2])
    if not last:
        scan += rst(next(count))
    return EncodedStrip(scan, 0, rows)


def header(width: int, height: int, quality: int) -> bytes:
    """SOI up to the end of the SOS segment, as Pillow writes it for a width x height gray image."""
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise ImageError(f"JPEG cannot hold {width}x{height}")
    data = _encode(np.zeros((MCU_ROWS, width), dtype=np.uint8), quality)
    sof, start = _scan_offset(data)
    head = bytearray(data[:start])
    struct.pack_into(">H", head, sof + 5, height)  # SOF0: marker, length, precision, then height
    return bytes(head)


class JpegJoiner:
    """A gray JPEG from strips handed over in row order: ``head()``, ``strip()``..., ``tail()``."""

    def __init__(self, width: int, height: int, quality: int) -> None:
        self.width, self.height, self.quality = width, height, quality
        self.rows = 0

    def head(self) -> bytes:
        return header(self.width, self.height, self.quality)

    def strip(self, piece: EncodedStrip) -> bytes:
        self.rows += piece.length
        return piece.data

    def tail(self) -> bytes:
        if self.rows != self.height:
            raise ImageError(f"JPEG join: strips hold {self.rows} rows, the image has {self.height}")
        return EOI


def join(width: int, height: int, quality: int, cuts: list[int], gray: npt.NDArray[np.uint8]) -> bytes:
    """A whole JPEG from ``gray`` encoded in strips between ``cuts`` (for tests)."""
    joiner = JpegJoiner(width, height, quality)
    parts = [joiner.head()]
    for a, b in itertools.pairwise(cuts):
        parts.append(joiner.strip(encode_strip(gray[a:b], quality, a, b == height)))
    return b"".join([*parts, joiner.tail()])
