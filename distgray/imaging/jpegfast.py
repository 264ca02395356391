"""Decode a YCbCr JPEG straight into a NumPy array (simplejpeg, on libjpeg-turbo).

Pillow decodes into its own 4-bytes-per-pixel image, and ``np.asarray`` copies that out again;
simplejpeg writes packed RGB into the buffer we give it (the job's pixels, in shared memory when
workers can read it) in about a third of the time for 8K. Both use libjpeg-turbo with the same
settings (accurate integer IDCT, fancy upsampling), and ``tests/unit/test_decoders.py`` checks
that their pixels are identical on real photos: 4:2:0, 4:2:2, 4:4:4, progressive, restart
markers, odd sizes. Everything else takes Pillow's path: other colour spaces (gray, CMYK, YCCK),
an EXIF orientation to apply, MPO, a library that will not read the file, or simplejpeg missing.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from distgray.imaging.load import pixel_limit

log = logging.getLogger(__name__)

EXIF_ORIENTATION = 0x0112
MAX_FILE_BYTES = 1 << 30


def _simplejpeg() -> Any | None:
    try:
        import simplejpeg
    except ImportError:  # an optional speed-up: Pillow does the same job
        return None
    return simplejpeg


@dataclass(frozen=True)
class JpegLayout:
    path: Path
    data: bytes
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)


def probe(path: Path, max_pixels: int) -> JpegLayout | None:
    """The file, ready for :func:`decode_into`, if it is a JPEG this path decodes like Pillow."""
    sj = _simplejpeg()
    if sj is None:
        return None
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\xff\xd8":
                return None
            size = f.seek(0, 2)
            if size > MAX_FILE_BYTES:
                return None
            f.seek(0)
            data = f.read()
        height, width, colorspace, _sub = sj.decode_jpeg_header(data)
        if colorspace != "YCbCr" or not 0 < width * height <= max_pixels:
            return None
        with pixel_limit(max_pixels), Image.open(io.BytesIO(data)) as im:  # reads the markers only
            if im.format != "JPEG" or im.mode != "RGB" or im.size != (width, height):
                return None
            if im.getexif().get(EXIF_ORIENTATION, 1) != 1:
                return None  # Pillow's path applies the orientation
    except (OSError, ValueError, SyntaxError) as exc:  # not for us: the normal path says what is wrong
        log.debug("%s: not decoded by simplejpeg: %s", path, exc)
        return None
    return JpegLayout(Path(path), data, width, height)


def decode_into(layout: JpegLayout, out: npt.NDArray[np.uint8]) -> bool:
    """Decode into ``out`` (height x width x 3). False if libjpeg-turbo complained about the data
    (even a warning): the caller then lets Pillow decode it, which decides what is acceptable."""
    sj = _simplejpeg()
    assert sj is not None
    try:
        sj.decode_jpeg(layout.data, colorspace="RGB", fastdct=False, fastupsample=False, strict=True, buffer=out)
    except (ValueError, OSError) as exc:
        log.info("%s: simplejpeg: %s; decoding with Pillow instead", layout.path, exc)
        return False
    return True
