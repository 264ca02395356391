"""One strip's work, whoever runs it: gray rows from RGB(A) rows, and the encoded piece of an
output encoded strip by strip. The built-in worker and the Dask engine's tasks both call these,
so a strip comes out the same bytes whichever engine ran it. Pure: arrays in, bytes out.
"""

from __future__ import annotations

import numpy as np

from distgray.imaging import jpegstrip, ops, pngstrip, tiffstrip
from distgray.imaging.encoded import EncodedStrip
from distgray.imaging.kernel import U8Array, to_grayscale


def gray_of(pixels: U8Array, alpha: bool = False) -> U8Array:
    """The luma of ``pixels`` (rows x width x 3|4); with ``alpha``, (gray, alpha) pairs a pixel
    (rows x width x 2), the alpha taken from the 4th channel."""
    rows, width = pixels.shape[:2]
    gray = np.empty((rows, width), dtype=np.uint8)
    to_grayscale(pixels, gray)
    return np.stack([gray, pixels[:, :, 3]], axis=-1) if alpha else gray


def gray_with_ops(
    pixels: U8Array, chain: str, halo_above: int, halo_below: int, keep_above: bool = False, alpha: bool = False
) -> U8Array:
    """:func:`gray_of` a strip's pixels, then the strip part of the operation ``chain`` (as
    ``ops.spell`` writes it) on them with their halo, cropped to the strip (and, ``keep_above``,
    the row above it: the last halo row above). ValueError for a chain that does not parse."""
    if not chain:
        return gray_of(pixels, alpha)
    return ops.apply_strip(gray_of(pixels), halo_above - keep_above, halo_below, ops.chain_of(chain))


def encode(
    rows: U8Array,
    fmt: str,
    setting: int,
    *,
    row_start: int,
    last: bool,
    above: bool = False,
    tiff_rows: int = 0,
    predictor: int = tiffstrip.PREDICTOR_HORIZONTAL,
) -> EncodedStrip:
    """The piece of a PNG, JPEG or TIFF output that gray ``rows`` (from :func:`gray_of`) make,
    starting at image row ``row_start`` (PNG: ``above``, the first of ``rows`` is the row above
    the strip); ``last``: the strip ends the image."""
    if fmt == "PNG":
        return pngstrip.encode_strip(rows, setting, has_above=above, first=row_start == 0, last=last)
    if fmt == "TIFF":
        return tiffstrip.encode_strip(rows, setting, tiff_rows, predictor)
    if fmt == "JPEG":
        return jpegstrip.encode_strip(rows, setting, row_start, last)
    raise ValueError(f"no strip encoding for {fmt}")
