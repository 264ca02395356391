"""Pixels: load an image into a NumPy array, the grayscale kernel, and atomic saving.

Pure NumPy/Pillow; no sockets, threads or clocks. Everything the master distributes is a
C-contiguous ``uint8`` array of shape (height, width, 3 or 4), so a horizontal strip is one
contiguous slice of memory that can go to a socket as a memoryview.

The kernel is Pillow's own ``convert("L")`` formula, ITU-R 601-2 luma in 16-bit fixed point::

    L = (19595 * R + 38470 * G + 7471 * B + 32768) >> 16        (0.299, 0.587, 0.114 scaled by 2**16)

that is, round-half-up of the weighted sum. ``to_grayscale`` runs Pillow's C conversion over
cache-sized blocks of a zero-copy view, which measured fastest here (see ``utils/bench.py``);
``luma_reference`` is the same formula in NumPy, kept as the executable specification.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import io
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from distgray import defaults, paths
from distgray.defaults import DEFAULT_JPEG_QUALITY as DEFAULT_JPEG_QUALITY
from distgray.defaults import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS
from distgray.defaults import DEFAULT_PNG_LEVEL as DEFAULT_PNG_LEVEL
from distgray.errors import ImageError

U8Array = npt.NDArray[np.uint8]

#: Rows converted per Pillow call: a few hundred KB keeps source and result in cache.
KERNEL_BLOCK_BYTES = 1 << 19

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import: mkstemp creates 0600 files, outputs get the usual mode

_ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})
_GRAY_MODES = frozenset({"L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"})


class Kind(enum.StrEnum):
    """How an input becomes gray."""

    COLOR = "color"  # RGB(A) pixels go to the workers
    GRAY = "gray"  # already grayscale: copied unchanged, nothing to distribute


@dataclass
class LoadedImage:
    path: Path
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

    @property
    def has_alpha(self) -> bool:
        if self.color is not None:
            return self.color.mode == "RGBA"
        return self.pixels is not None and self.pixels.shape[2] == 4

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def luma_reference(rgb: npt.NDArray[np.uint8]) -> U8Array:
    """The specification of the kernel in plain NumPy (slow; used by tests)."""
    px = rgb.astype(np.uint32)
    acc = px[..., 0] * 19595 + px[..., 1] * 38470 + px[..., 2] * 7471 + 32768
    return (acc >> 16).astype(np.uint8)


def to_grayscale(src: U8Array, out: U8Array) -> U8Array:
    """Convert (rows, width, 3|4) uint8 ``src`` into (rows, width) uint8 ``out``; alpha is ignored.

    Bit-identical to ``Image.convert("L")``. ``src`` must be C-contiguous (a strip received off the
    wire, or a row slice of a loaded image); ``out`` may be any writable C-contiguous buffer view.
    """
    if src.ndim != 3 or src.shape[2] not in (3, 4) or src.dtype != np.uint8:
        raise ValueError(f"expected (rows, width, 3|4) uint8, got {src.shape} {src.dtype}")
    rows, width, channels = src.shape
    if out.shape != (rows, width) or out.dtype != np.uint8:
        raise ValueError(f"output must be ({rows}, {width}) uint8, got {out.shape} {out.dtype}")
    if not src.flags.c_contiguous:
        raise ValueError("source strip must be C-contiguous")
    mode = "RGB" if channels == 3 else "RGBA"
    step = max(1, KERNEL_BLOCK_BYTES // max(1, width * channels))
    for y in range(0, rows, step):
        block = src[y : y + step]
        n = block.shape[0]
        image = Image.frombuffer(mode, (width, n), block, "raw", mode, 0, 1)
        out[y : y + n] = np.asarray(image.convert("L"))
    return out


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
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
        with _pixel_limit(max_pixels), Image.open(p if data is None else io.BytesIO(data)) as im:
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
    if im.mode in _GRAY_MODES:
        loaded.kind = Kind.GRAY
        loaded.gray = im.copy()
        return loaded
    if im.mode == "F":
        raise ImageError(f"{p}: 32-bit float images are not supported")
    if im.mode == "1":
        loaded.kind = Kind.GRAY
        loaded.gray = im.convert("L")
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
        fmt = requested.upper()
        fmt = {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt, fmt)
        if fmt not in Image.SAVE:
            raise ValueError(f"unknown output format {requested!r}")
        return fmt
    fmt_by_ext = Image.registered_extensions()
    ext = path.suffix.lower()
    if ext not in fmt_by_ext or fmt_by_ext[ext] not in Image.SAVE:
        raise ValueError(f"cannot tell an output format from {path.name!r}; pass --format")
    return fmt_by_ext[ext]


def compose_output(loaded: LoadedImage, gray: U8Array | None, fmt: str) -> tuple[Image.Image, list[str]]:
    """The output image: gray pixels, with the input's alpha where ``fmt`` can hold it."""
    notes: list[str] = []
    if loaded.kind is Kind.GRAY:
        assert loaded.gray is not None
        out = loaded.gray
        if out.mode == "LA" and fmt not in _ALPHA_FORMATS:
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
    if fmt not in _ALPHA_FORMATS:
        notes.append(f"{fmt} has no alpha channel: alpha dropped")
        return lum, notes
    if loaded.color is not None:
        return Image.merge("LA", (lum, loaded.color.getchannel("A"))), notes
    assert loaded.pixels is not None
    alpha = np.ascontiguousarray(loaded.pixels[..., 3])
    return Image.merge("LA", (lum, Image.fromarray(alpha))), notes


def save_options(fmt: str, quality: int | None, png_level: int) -> dict[str, Any]:
    if fmt == "JPEG":
        return {"quality": quality if quality is not None else DEFAULT_JPEG_QUALITY}
    if fmt == "WEBP":
        return {"quality": quality} if quality is not None else {"lossless": True}
    if fmt == "PNG":
        return {"compress_level": png_level}
    return {}


def save_atomic(image: Image.Image, path: Path, fmt: str, options: dict[str, Any]) -> None:
    """Encode ``image`` as ``fmt`` into ``path`` atomically (see ``atomic_write``)."""
    atomic_write(path, lambda fh: image.save(fh, format=fmt, **options), f" {fmt}")


def atomic_write(path: Path, write: Callable[[BinaryIO], object], what: str = "") -> None:
    """Write ``path`` through a temporary file in the same folder, fsync and ``os.replace``.

    A crash, a full disk or an encoder error leaves either the old file or nothing, never half a
    file. Raises ImageError with the reason.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise ImageError(f"{path}: cannot write{what}: {os_reason(exc)}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, (OSError, ValueError, KeyError)):
            raise ImageError(f"{path}: cannot write{what}: {os_reason(exc)}") from exc
        raise


def os_reason(exc: BaseException) -> str:
    """``No space left on device`` rather than ``[Errno 28] No space left on device: '/x/.y.part'``."""
    if isinstance(exc, OSError) and exc.errno:
        return "symbolic link loop" if exc.errno == errno.ELOOP else os.strerror(exc.errno)
    return str(exc)


def file_error(path: Path, exc: OSError) -> ImageError | None:
    """The one-line reason for an error opening or reading ``path``; None if it is not such an error."""
    if isinstance(exc, FileNotFoundError):
        return ImageError(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return ImageError(f"{path}: is a directory, not an image")
    if isinstance(exc, PermissionError):
        return ImageError(f"{path}: permission denied")
    if exc.errno == errno.ELOOP:
        return ImageError(f"{path}: symbolic link loop")
    if exc.errno is not None and exc.filename is not None:
        return ImageError(f"{path}: cannot read: {os_reason(exc)}")
    return None


EXTENSIONS = defaults.EXTENSIONS
same_file = paths.same_file
