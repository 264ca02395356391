"""Read a JPEG band by band with libvips (pyvips, sequential access), where it decodes like Pillow.

Pillow (and simplejpeg) decode a JPEG whole. libvips reads one sequentially, a few rows of
MCUs at a time, with libjpeg(-turbo) behind it like Pillow. Its RGB pixels are used only where
they are Pillow's: YCbCr files without an EXIF rotation, and only if this machine's libvips
decodes a set of small JPEGs of every kind (4:4:4, 4:2:2, 4:2:0, progressive, odd sizes) to
exactly Pillow's pixels (:func:`agrees_with_pillow`, checked once per process). Otherwise
:func:`probe` returns None and the JPEG takes the whole-image path (or is refused if it does not
fit the window). pyvips is optional: ``pip install 'distgray[vips]'``.
"""

from __future__ import annotations

import functools
import io
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from distgray.errors import ImageError
from distgray.imaging.jpegfast import EXIF_ORIENTATION
from distgray.imaging.load import pixel_limit

log = logging.getLogger(__name__)

#: Rows a band (libvips decodes whole MCU rows; a band is about this many bytes of RGB, at most).
BAND_ROWS = 128
BAND_BYTES = 4 << 20


@dataclass(frozen=True)
class JpegBands:
    path: Path
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    @property
    def band_rows(self) -> int:
        return max(16, min(BAND_ROWS, BAND_BYTES // (self.width * 3)))


def _pyvips() -> Any | None:
    try:
        import pyvips
    except (ImportError, OSError):  # optional; OSError: the library itself is missing
        return None
    return pyvips


@functools.cache
def agrees_with_pillow() -> bool:
    """Whether this machine's libvips decodes JPEGs of every kind to exactly Pillow's pixels."""
    vips = _pyvips()
    if vips is None:
        return False
    rng = np.random.default_rng(20261207)
    y, x = np.mgrid[0:45, 0:67]
    rgb = np.stack([x * 3, y * 5, (x + y) * 2], axis=-1) + rng.integers(0, 40, size=(45, 67, 3))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    kinds: list[dict[str, Any]] = [{"subsampling": s} for s in (0, 1, 2)] + [{"progressive": True}]
    try:
        for kind in kinds:
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=90, **kind)
            with Image.open(io.BytesIO(buf.getvalue())) as im:
                ours = np.asarray(im.convert("RGB"))
            theirs = vips.Image.new_from_buffer(buf.getvalue(), "", access="sequential")
            pixels = np.frombuffer(theirs.write_to_memory(), dtype=np.uint8)
            if theirs.bands != 3 or not np.array_equal(pixels.reshape(ours.shape), ours):
                log.info("libvips decodes JPEG (%s) unlike Pillow: big JPEGs are not streamed", kind)
                return False
    except Exception as exc:  # any failure here only means: do not use libvips for JPEG
        log.info("libvips cannot be checked against Pillow (%s): big JPEGs are not streamed", exc)
        return False
    return True


def probe(path: Path) -> JpegBands | None:
    """The file's layout if it is a JPEG libvips reads in bands exactly as Pillow decodes it, else
    None. Reads the markers only."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\xff\xd8":
                return None
        with pixel_limit(sys.maxsize), Image.open(path) as im:  # the caller applies --max-pixels
            if im.format != "JPEG" or im.mode != "RGB" or im.getexif().get(EXIF_ORIENTATION, 1) != 1:
                return None
            width, height = im.size
    except (OSError, ValueError, SyntaxError):
        return None
    if not agrees_with_pillow():
        return None
    return JpegBands(Path(path), width, height)


def decode_into(layout: JpegBands, out: npt.NDArray[np.uint8], ready: Callable[[int], None]) -> None:
    """Decode ``layout`` into ``out`` (height x width x 3) a band at a time, in row order, calling
    ``ready(rows_done)`` after each. Raises ImageError for a damaged or truncated file."""
    vips = _pyvips()
    assert vips is not None
    try:
        vips.cache_set_max(0)  # nothing kept between bands: memory stays the decoder's few rows
        image = vips.Image.new_from_file(str(layout.path), access="sequential", fail=True)
        if (image.width, image.height, image.bands, image.format) != (layout.width, layout.height, 3, "uchar"):
            raise ImageError(f"{layout.path}: cannot decode image: libvips reads it as {image.width}x{image.height}")
        step = layout.band_rows
        for y in range(0, layout.height, step):
            rows = min(step, layout.height - y)
            band = image.crop(0, y, layout.width, rows).write_to_memory()
            out[y : y + rows] = np.frombuffer(band, dtype=np.uint8).reshape(rows, layout.width, 3)
            ready(y + rows)
    except vips.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ImageError(f"{layout.path}: cannot decode image: {reason}") from exc
