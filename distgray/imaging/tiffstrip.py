"""Deflated TIFF strips, encoded independently: what a worker makes of its gray rows for a TIFF.

A TIFF's pixels are stored in *strips* of ``RowsPerStrip`` rows (the last may be shorter), each
compressed on its own and located by the ``StripOffsets`` / ``StripByteCounts`` tags. So unlike a
PNG stream, a TIFF strip needs nothing from its neighbours: a worker given whole TIFF strips
(its first row a multiple of ``RowsPerStrip``) encodes each one completely, and the master only
writes the pieces in order and lists where they are.

Each strip is stored as TIFF Compression 8 ("Adobe deflate": one complete zlib stream, header
and Adler-32 included) of its rows after Predictor 2 (horizontal differencing: every pixel but
the first of a row minus its left neighbour, modulo 256), which makes photos ~20% smaller than
deflate alone. A decoder undoes the predictor exactly, so the pixels read back are the gray rows.

A worker's answer for several TIFF strips is their sizes (u32 big-endian each), then their bytes
(:func:`pack`, :func:`split`). Pure: arrays and bytes in, bytes out.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

from distgray.imaging.encoded import EncodedStrip

#: Gray bytes in one TIFF strip, about (at least one row).
STRIP_BYTES = 1 << 20
#: TIFF tag values for what :func:`encode_strip` writes.
PREDICTOR_HORIZONTAL = 2
_SIZE = struct.Struct(">I")


def rows_per_strip(width: int, max_rows: int | None = None) -> int:
    """RowsPerStrip of a gray TIFF ``width`` pixels wide: about :data:`STRIP_BYTES` a strip, and
    no more than ``max_rows`` (a strip is written once all its rows are in: a streamed job's
    window must hold a few)."""
    rows = STRIP_BYTES // width if max_rows is None else min(STRIP_BYTES // width, max_rows)
    return max(1, rows)


def strip_count(rows: int, per_strip: int) -> int:
    return -(-rows // per_strip)


def predict(gray: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Predictor 2 of 8-bit rows (rows x width, or rows x width x samples): each pixel's sample
    minus the same sample of the pixel to its left (mod 256), the first pixel kept."""
    out = np.empty_like(gray)
    out[:, :1] = gray[:, :1]
    np.subtract(gray[:, 1:], gray[:, :-1], out=out[:, 1:])  # uint8 wraps modulo 256, as TIFF wants
    return out


def encode_rows(gray: npt.NDArray[np.uint8], level: int, predictor: int = PREDICTOR_HORIZONTAL) -> bytes:
    """One TIFF strip: the zlib stream of ``gray``'s rows (gray, or gray + alpha pairs), after the
    horizontal predictor (2) or as they are (1)."""
    rows = predict(gray) if predictor == PREDICTOR_HORIZONTAL else np.ascontiguousarray(gray)
    return zlib.compress(rows.data, level)


def encode_strip(
    gray: npt.NDArray[np.uint8], level: int, per_strip: int, predictor: int = PREDICTOR_HORIZONTAL
) -> EncodedStrip:
    """A worker's piece: ``gray`` (rows x width, or rows x width x 2 with alpha, starting on a TIFF
    strip) cut into TIFF strips of ``per_strip`` rows, each deflated; ``data`` is :func:`pack`'s
    layout, ``length`` the rows."""
    rows = gray.shape[0]
    if rows < 1 or per_strip < 1 or predictor not in (1, PREDICTOR_HORIZONTAL):
        raise ValueError("a TIFF piece needs rows, a positive RowsPerStrip and predictor 1 or 2")
    strips = [encode_rows(gray[top : top + per_strip], level, predictor) for top in range(0, rows, per_strip)]
    return EncodedStrip(pack(strips), 0, rows)


def pack(strips: list[bytes]) -> bytes:
    """Sizes first (u32 big-endian each), then the strips' bytes, in order."""
    return b"".join(_SIZE.pack(len(s)) for s in strips) + b"".join(strips)


def split(data: bytes | memoryview, count: int) -> list[bytes]:
    """The ``count`` strips of a packed piece. Raises ValueError if the sizes do not account for
    every byte (a truncated or padded piece)."""
    view = memoryview(data)
    head = 4 * count
    if count < 1 or len(view) < head:
        raise ValueError(f"{len(view)} bytes cannot list the sizes of {count} strips")
    sizes = [_SIZE.unpack_from(view, 4 * i)[0] for i in range(count)]
    if head + sum(sizes) != len(view):
        raise ValueError(f"strip sizes add up to {sum(sizes)} bytes, the piece holds {len(view) - head}")
    out, at = [], head
    for size in sizes:
        out.append(bytes(view[at : at + size]))
        at += size
    return out


def inflate_strip(
    data: bytes, rows: int, width: int, samples: int = 1
) -> tuple[npt.NDArray[np.uint8] | None, str | None]:
    """A TIFF strip's rows as stored (rows x width x samples, predicted: see :func:`unpredict`),
    or (None, why it is not one complete zlib stream of exactly those bytes)."""
    want = rows * width * samples
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, want + 1)
    except zlib.error as exc:
        return None, f"its zlib data is broken ({exc})"
    if len(raw) != want or inflater.unconsumed_tail:
        return None, f"inflates to {'more than' if inflater.unconsumed_tail else len(raw)} bytes, not {want}"
    if not inflater.eof:
        return None, "its zlib stream does not end"
    if inflater.unused_data:
        return None, "bytes after the end of its zlib stream"
    return np.frombuffer(raw, dtype=np.uint8).reshape(rows, width, samples), None


def unpredict(stored: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Undo :func:`predict`: running sums of each sample along each row, modulo 256."""
    return np.cumsum(stored, axis=1, dtype=np.uint8)
