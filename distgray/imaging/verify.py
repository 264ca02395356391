"""Checks of what a worker sent back, before the master trusts it.

A worker holds the token, but that makes it a member, not infallible: a bug, a bad build or a
hostile member can return garbage, and the master must never write it as a result. Every check
here is pure (arrays and bytes in, a reason or None out) and cheap beside the work it checks:

* every PNG strip inflates to exactly its filtered rows, with the Adler-32 the worker declared,
  and ends where it should (a sync-flushed piece, or the stream's end for the last strip);
* every JPEG strip is one entropy-coded segment per MCU row, separated by the right restart
  markers, with no other marker inside;
* every TIFF piece lists sizes that account for all its bytes, and each of its TIFF strips is
  one complete zlib stream of exactly its rows;
* ``rows`` sampled rows of every strip are recomputed from the source pixels (with an operation
  chain: gray, then the chain on the row and its halo) and compared: plain
  rows directly, PNG rows through the filter the worker chose (the decoder's arithmetic), TIFF
  rows through the horizontal predictor, JPEG MCU rows by encoding them again (each restart
  interval depends on its own 8 rows only);
* a whole encoded file decodes, at the size and mode the worker declared.

Rows are sampled with ``secrets`` so a worker cannot know which of its rows will be checked.
"""

from __future__ import annotations

import io
import re
import secrets
import zlib

import numpy as np
from PIL import Image

from distgray.imaging import jpegstrip, ops, stripcodec, tiffstrip
from distgray.imaging.encoded import EncodedStrip
from distgray.imaging.kernel import U8Array

#: How a sync-flushed deflate piece ends: an empty stored block, byte-aligned.
SYNC_FLUSH = b"\x00\x00\xff\xff"
_MARKER = re.compile(rb"\xff(?!\x00)(.)", re.DOTALL)


def sample(first: int, stop: int, count: int) -> list[int]:
    """``count`` distinct row numbers in [first, stop), unpredictable to the worker, sorted."""
    rows = list(range(first, stop))
    if count >= len(rows):
        return rows
    rng = secrets.SystemRandom()
    return sorted(rng.sample(rows, count))


def chain_rows(pixels: U8Array, top: int, bottom: int, chain: str = "") -> U8Array:
    """The true rows [top, bottom) of the source (height, width, 3|4): gray, then the strip part
    of an operation ``chain`` computed here on them with their own halo."""
    above, below = ops.halo_of(ops.support_of(chain), top, bottom, pixels.shape[0])
    window = np.ascontiguousarray(pixels[top - above : bottom + below])
    return stripcodec.gray_with_ops(window, chain, above, below)  # as a worker computes them


def gray_rows(pixels: U8Array, rows: list[int], chain: str = "") -> dict[int, U8Array]:
    """The true value of each of ``rows`` of the source (gray, after ``chain`` if any)."""
    out: dict[int, U8Array] = {}
    for r in rows:
        if r not in out:
            out[r] = chain_rows(pixels, r, r + 1, chain)[0]
    return out


def check_plain(pixels: U8Array, got: U8Array, row_start: int, count: int, chain: str = "") -> str | None:
    """Sampled rows of a plain RESULT (``got``: its rows) against the source."""
    rows = sample(row_start, row_start + got.shape[0], count)
    for r, want in gray_rows(pixels, rows, chain).items():
        if not np.array_equal(got[r - row_start], want):
            return f"row {r} differs from the source's gray ({_diff(got[r - row_start], want)} pixels)"
    return None


def true_rows(pixels: U8Array, rows: list[int], alpha: bool, chain: str = "") -> dict[int, U8Array]:
    """:func:`gray_rows`, as (gray, alpha) pairs a row (width x 2) when the output keeps the alpha."""
    gray = gray_rows(pixels, rows, chain)
    if not alpha:
        return gray
    return {r: np.stack([g, pixels[r, :, 3]], axis=-1) for r, g in gray.items()}


def inflate_png_strip(
    piece: EncodedStrip, rows: int, width: int, last: bool, alpha: bool = False
) -> tuple[bytes | None, str | None]:
    """Inflate a PNG strip: (its filtered bytes, None), or (None, why it is not one)."""
    want = rows * ((2 if alpha else 1) * width + 1)
    if piece.length != want:
        return None, f"declares {piece.length} filtered bytes, its rows need {want}"
    inflater = zlib.decompressobj(-15)
    try:
        data = inflater.decompress(piece.data, want + 1)
    except zlib.error as exc:
        return None, f"its deflate data is broken ({exc})"
    if len(data) != want or inflater.unconsumed_tail:
        return None, f"inflates to {'more than' if inflater.unconsumed_tail else len(data)} bytes, not {want}"
    if last and not inflater.eof:
        return None, "the last strip does not end the deflate stream"
    if not last and inflater.eof:
        return None, "a strip that is not the last ends the deflate stream"
    if not last and not piece.data.endswith(SYNC_FLUSH):  # else the next strip's bytes run on mid-block
        return None, "a strip that is not the last does not end with an empty stored block (sync flush)"
    if inflater.unused_data:
        return None, "bytes after the end of the deflate stream"
    if zlib.adler32(data) != piece.adler:
        return None, "its Adler-32 is not the one of its bytes"
    return data, None


def check_png(
    pixels: U8Array,
    piece: EncodedStrip,
    row_start: int,
    row_stop: int,
    last: bool,
    count: int,
    alpha: bool = False,
    chain: str = "",
) -> str | None:
    """A PNG_RESULT's piece: inflates right, and sampled rows filter to the bytes it holds
    (``alpha``: rows of gray + alpha pairs, from the source's 4th channel)."""
    width = pixels.shape[1]
    filtered, problem = inflate_png_strip(piece, row_stop - row_start, width, last, alpha)
    if filtered is None:
        return problem
    rows = sample(row_start, row_stop, count)
    truth = true_rows(pixels, [*rows, *(r - 1 for r in rows if r > 0)], alpha, chain)
    bpp = 2 if alpha else 1
    zero = np.zeros(width * bpp, dtype=np.uint8)
    line = width * bpp + 1
    for r in rows:
        at = (r - row_start) * line
        kind = filtered[at]
        if kind > 4:
            return f"row {r} has PNG filter type {kind}"
        above = truth[r - 1].reshape(-1) if r > 0 else zero
        want = png_filter(kind, truth[r].reshape(-1), above, bpp)
        got = np.frombuffer(filtered, dtype=np.uint8, count=width * bpp, offset=at + 1)
        if not np.array_equal(got, want):
            return f"row {r} differs from the source's gray ({_diff(got, want)} pixels, filter {kind})"
    return None


def png_filter(kind: int, row: U8Array, above: U8Array, bpp: int = 1) -> U8Array:
    """PNG filter ``kind`` (0-4) of one row of bytes, ``bpp`` bytes a pixel, as the encoder writes it."""
    x = row.astype(np.int16)
    b = above.astype(np.int16)
    pad = np.zeros(bpp, dtype=np.int16)
    a = np.concatenate((pad, x[:-bpp]))
    c = np.concatenate((pad, b[:-bpp]))
    if kind == 0:
        pred = np.zeros_like(x)
    elif kind == 1:
        pred = a
    elif kind == 2:
        pred = b
    elif kind == 3:
        pred = (a + b) // 2
    else:  # Paeth
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    return ((x - pred) & 0xFF).astype(np.uint8)


def check_jpeg(
    pixels: U8Array,
    piece: EncodedStrip,
    row_start: int,
    row_stop: int,
    last: bool,
    quality: int,
    count: int,
    chain: str = "",
) -> str | None:
    """A JPEG_RESULT's piece: one segment per MCU row behind the right restart markers, and
    sampled MCU rows byte for byte what encoding them here gives."""
    mcu = jpegstrip.MCU_ROWS
    first, bands = row_start // mcu, -(-(row_stop - row_start) // mcu)
    data = piece.data
    segments: list[bytes] = []
    pos = 0
    for m in _MARKER.finditer(data):
        marker = m.group(1)[0]
        if not 0xD0 <= marker <= 0xD7:
            return f"marker 0xFF{marker:02X} inside its entropy-coded data"
        if marker != 0xD0 + (first + len(segments)) % 8:
            return f"restart marker RST{marker - 0xD0} where RST{(first + len(segments)) % 8} belongs"
        segments.append(data[pos : m.start()])
        pos = m.end()
    tail = data[pos:]
    if last:
        segments.append(tail)
    elif tail:
        return "bytes after its last restart marker"
    if len(segments) != bands:
        return f"{len(segments)} MCU rows of data, its rows need {bands}"
    for band in sample(0, bands, count):
        top = row_start + band * mcu
        bottom = min(row_stop, top + mcu)
        gray = chain_rows(pixels, top, bottom, chain)
        want = jpegstrip.encode_strip(gray, quality, top, last and bottom == row_stop).data
        got = segments[band] + (b"" if last and bottom == row_stop else jpegstrip.rst(first + band))
        if got != want:
            return f"MCU row {first + band} (rows {top}-{bottom - 1}) is not what its pixels encode to"
    return None


def check_tiff(
    pixels: U8Array,
    piece: EncodedStrip,
    row_start: int,
    row_stop: int,
    per_strip: int,
    count: int,
    alpha: bool = False,
    chain: str = "",
) -> str | None:
    """A TIFF_RESULT's piece: its TIFF strips inflate to exactly their rows, and sampled rows are
    the predicted gray (``alpha``: gray + alpha) rows of the source."""
    width, rows = pixels.shape[1], row_stop - row_start
    try:
        strips = tiffstrip.split(piece.data, tiffstrip.strip_count(rows, per_strip))
    except ValueError as exc:
        return str(exc)
    stored: list[U8Array] = []
    for i, data in enumerate(strips):
        top = row_start + i * per_strip
        got, problem = tiffstrip.inflate_strip(data, min(per_strip, row_stop - top), width, 2 if alpha else 1)
        if got is None:
            return f"TIFF strip at row {top}: {problem}"
        stored.append(got)
    for r, want in true_rows(pixels, sample(row_start, row_stop, count), alpha, chain).items():
        at = r - row_start
        got_row = stored[at // per_strip][at % per_strip].reshape(want.shape)
        expected = tiffstrip.predict(want[np.newaxis])[0]
        if not np.array_equal(got_row, expected):
            return f"row {r} differs from the source's gray ({_diff(got_row, expected)} pixels, predicted)"
    return None


def check_file(data: bytes | memoryview, width: int, height: int) -> str | None:
    """A whole encoded file (a FILE_RESULT): it decodes completely, at ``width`` x ``height``."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.size != (width, height):
                return f"it is {image.size[0]}x{image.size[1]}, the worker said {width}x{height}"
            if image.format == "JPEG":
                image.draft("L", (max(1, width // 8), max(1, height // 8)))  # still reads every coefficient
            image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"it does not decode ({exc})"
    return None


def _diff(got: U8Array, want: U8Array) -> int:
    return int(np.count_nonzero(got != want))
