"""Loading images: read and check a file, and hand its pixels on as a packed NumPy array.

Pure NumPy/Pillow; no sockets, threads or clocks. A colour image becomes a C-contiguous
``(height, width, 3|4)`` uint8 array (so a horizontal strip is one contiguous slice); a gray one is
kept as Pillow opened it. Also here: the output format Pillow would write for a name, and the
output image composed from gray rows (alpha kept where the format can hold it).
"""

from __future__ import annotations

import contextlib
import enum
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from distgray import formats
from distgray.config import DEFAULT_MAX_PIXELS
from distgray.errors import ImageError
from distgray.imaging import ops
from distgray.imaging.kernel import U8Array
from distgray.imaging.save import file_error
from distgray.storage.places import Place

#: Modes already gray: copied unchanged, without workers ("1" too, as L).
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"})


class Kind(enum.StrEnum):
    """How an input becomes gray."""

    COLOR = "color"  # RGB(A) pixels go to the workers
    GRAY = "gray"  # already grayscale: copied unchanged, nothing to distribute


@dataclass
class LoadedImage:
    path: Place  # (behind a URL: a TIFF read by ranges)
    format: str
    mode: str  # the file's own mode, before any conversion
    kind: Kind
    width: int
    height: int
    #: COLOR: (height, width, 3|4) uint8, C-contiguous. GRAY: None (see ``gray``).
    pixels: U8Array | None = None
    #: GRAY: the untouched Pillow image (L, LA, I;16...).
    gray: Image.Image | None = None
    #: COLOR loaded with ``packed=False`` (whole files on a worker): the RGB(A) Pillow image.
    color: Image.Image | None = None
    notes: list[str] = field(default_factory=list)
    #: COLOR decoded in the background (``jobs.bands``): 3 or 4, known before ``pixels`` are.
    channels: int = 3

    @property
    def has_alpha(self) -> bool:
        if self.color is not None:
            return self.color.mode == "RGBA"
        return (self.pixels.shape[2] if self.pixels is not None else self.channels) == 4

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


@contextlib.contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    # Pillow's guard is a module global; we set it to our limit and police the 1x-2x band
    # (where Pillow only warns) ourselves, so one flag controls the whole behaviour.
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def load_image(
    path: str | os.PathLike[str],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    data: bytes | None = None,
    packed: bool = True,
) -> LoadedImage:
    """Open ``path``, apply its EXIF orientation and return what the converter needs.

    RGB and RGBA stay as they are; P, CMYK and other colour modes are converted to RGB(A) the way
    Pillow does (so the result equals Pillow's ``convert("L")``); L, LA and 16-bit gray are
    already gray and kept unchanged.

    With ``data``, the file's bytes are decoded instead of reading ``path`` (which then only
    names the image in messages). ``packed=False`` keeps a colour image as Pillow's RGB(A) image
    (``color``) instead of copying it into a NumPy array (``pixels``): for converting it whole.

    Raises:
        ImageError: the file is missing, unreadable, not an image, truncated, or too large.
    """
    p = Path(path)
    try:
        with pixel_limit(max_pixels), Image.open(p if data is None else io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                raise ImageError(
                    f"{p}: {im.width}x{im.height} = {im.width * im.height:,} pixels exceeds the"
                    f" decompression-bomb limit of {max_pixels:,}; raise it with --max-pixels"
                )
            fmt = im.format or "PNG"
            mode = im.mode
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            return _prepare(p, fmt, mode, im, packed)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{p}: {exc}; raise the limit with --max-pixels") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{p}: not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # reading, or Pillow's truncated/corrupt-file errors
        reading = file_error(p, exc) if isinstance(exc, OSError) else None
        raise reading or ImageError(f"{p}: cannot decode image: {exc}") from exc


def _prepare(p: Path, fmt: str, mode: str, im: Image.Image, packed: bool = True) -> LoadedImage:
    loaded = LoadedImage(p, fmt, mode, Kind.COLOR, im.width, im.height)
    if im.mode == "F":
        raise ImageError(f"{p}: 32-bit float images are not supported")
    if im.mode in GRAY_MODES:
        loaded.kind = Kind.GRAY
        loaded.gray = im.convert("L") if im.mode == "1" else im.copy()
        return loaded
    if im.mode not in ("RGB", "RGBA"):
        transparent = im.mode in ("PA", "RGBa") or "transparency" in im.info
        target = "RGBA" if transparent or im.mode == "RGBa" else "RGB"
        loaded.notes.append(f"{mode} converted to {target} as Pillow does")
        im = im.convert(target)
    if not packed:
        loaded.color = im
        return loaded
    channels = 3 if im.mode == "RGB" else 4
    # One copy out of Pillow's 4-bytes-per-pixel storage into a packed C-contiguous array.
    loaded.pixels = np.frombuffer(im.tobytes(), dtype=np.uint8).reshape(im.height, im.width, channels)
    return loaded


def output_format(path: Path, requested: str | None = None) -> str:
    """The Pillow format name for an output: ``requested`` or the one its extension implies."""
    Image.init()  # every format plugin registered, not only those already imported
    if requested:
        fmt = formats.canonical(requested)
        if fmt not in Image.SAVE:
            raise ValueError(f"unknown output format {requested!r}")
        return fmt
    fmt_by_ext = Image.registered_extensions()
    ext = path.suffix.lower()
    if ext not in fmt_by_ext or fmt_by_ext[ext] not in Image.SAVE:
        raise ValueError(f"cannot tell an output format from {path.name!r}; pass --format")
    return fmt_by_ext[ext]


def compose_output(
    loaded: LoadedImage, gray: U8Array | None, fmt: str, chain: Sequence[ops.Op] | None = None
) -> tuple[Image.Image, list[str]]:
    """The output image: gray pixels, with the input's alpha where ``fmt`` can hold it; with an
    operation ``chain`` (run here on the whole gray image; ``()``: operations ran already), the
    chain's result, without alpha."""
    notes: list[str] = []
    if chain is not None:
        if loaded.has_alpha or (loaded.gray is not None and "A" in loaded.gray.getbands()):
            notes.append("operations work on the gray image: alpha dropped")
        if loaded.kind is Kind.GRAY:
            assert loaded.gray is not None
            base = loaded.gray.getchannel("L") if loaded.gray.mode == "LA" else loaded.gray
            lum = base if base.mode == "L" else base.convert("L")
        elif gray is not None:
            lum = Image.frombuffer("L", (loaded.width, loaded.height), gray, "raw", "L", 0, 1)
        else:
            assert loaded.color is not None
            lum = loaded.color.convert("L")
        return ops.apply_image(lum, chain), notes
    if loaded.kind is Kind.GRAY:
        assert loaded.gray is not None
        out = loaded.gray
        if out.mode == "LA" and fmt not in formats.ALPHA:
            notes.append(f"{fmt} has no alpha channel: alpha dropped")
            out = out.getchannel("L")
        return out, notes
    if gray is not None:
        lum = Image.frombuffer("L", (loaded.width, loaded.height), gray, "raw", "L", 0, 1)
    else:  # a whole file on a worker: Pillow's own convert("L"), which the strip kernel equals
        assert loaded.color is not None
        lum = loaded.color.convert("L")
    if not loaded.has_alpha:
        return lum, notes
    if fmt not in formats.ALPHA:
        notes.append(f"{fmt} has no alpha channel: alpha dropped")
        return lum, notes
    if loaded.color is not None:
        return Image.merge("LA", (lum, loaded.color.getchannel("A"))), notes
    assert loaded.pixels is not None
    alpha = np.ascontiguousarray(loaded.pixels[..., 3])
    return Image.merge("LA", (lum, Image.fromarray(alpha))), notes
