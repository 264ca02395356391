"""Images as files: header probes, previews, whole-file conversion, atomic byte writes.

Used by the status page (uploads, previews), by workers converting whole files, and by the
master writing what they return. Pure Pillow/NumPy and files; no sockets or threads.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from distgray import formats
from distgray.config import DEFAULT_MAX_PIXELS, THUMBNAIL_SIDE
from distgray.errors import ImageError
from distgray.imaging import ops
from distgray.imaging.load import LoadedImage, compose_output, load_image, pixel_limit
from distgray.imaging.save import atomic_write, file_error, os_reason
from distgray.storage.remote import Remote

#: Formats the status page accepts as uploads (what Pillow reads that people actually send).
UPLOAD_FORMATS = formats.COMMON


def probe_upload(
    data: Any, max_pixels: int = DEFAULT_MAX_PIXELS, allowed: frozenset[str] | None = UPLOAD_FORMATS
) -> tuple[str, int, int]:
    """Read only the header of an uploaded file: (format, width, height). Nothing is decoded.

    Raises:
        ImageError: not an image, a format not in UPLOAD_FORMATS, or more pixels than allowed.
    """
    try:
        with pixel_limit(max_pixels), Image.open(data) as im:
            fmt, width, height = im.format or "", im.width, im.height
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"more pixels than the decompression-bomb limit of {max_pixels:,} (the master's --max-pixels sets it)"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError("not an image Pillow can read") from exc
    if allowed is not None and fmt not in allowed:
        raise ImageError(f"{fmt or 'unknown'} files are not accepted (accepted: {', '.join(sorted(allowed))})")
    if width * height > max_pixels:
        raise ImageError(
            f"{width}x{height} = {width * height:,} pixels exceeds the decompression-bomb limit of"
            f" {max_pixels:,} (the master's --max-pixels sets it)"
        )
    return fmt, width, height


def thumbnail_png(image: Image.Image, side: int = THUMBNAIL_SIDE, *, gray: bool = False) -> bytes:
    """A small PNG preview (longest side ``side``) for the status page; the image is not changed.

    ``gray``: of the image converted to gray (the preview of an output the master never holds)."""
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "L" if image.mode.startswith("I") else "RGB")
    scale = side / max(image.size)
    small = image  # already small: saved as it is
    if scale < 1:  # resize makes the small image directly: no full-size copy as thumbnail() needs
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if gray:
        small = small.convert("LA" if "A" in small.getbands() else "L")
    buf = io.BytesIO()
    small.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def preview_of(loaded: LoadedImage) -> Image.Image:
    """The input as an image for previews, without copying the pixels."""
    if loaded.pixels is None:
        assert loaded.gray is not None
        return loaded.gray
    mode = "RGB" if loaded.pixels.shape[2] == 3 else "RGBA"
    return Image.frombuffer(mode, (loaded.width, loaded.height), loaded.pixels, "raw", mode, 0, 1)


def probe_file(path: Path | Remote, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """(format, width, height) of an image file from its header, without decoding its pixels
    (behind a URL: the header's bytes only are fetched).

    Raises:
        ImageError: with a one-line reason (missing, a directory, unreadable, empty, not an image,
            a decompression bomb...).
    """
    if isinstance(path, Remote):
        return _probe_remote(path, max_pixels)
    try:
        if path.is_dir():
            raise ImageError(f"{path}: is a directory, not an image")
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise ImageError(f"{path}: empty file")
            try:
                fmt, width, height = probe_upload(fh, max_pixels, allowed=None)
            except ImageError as exc:
                raise ImageError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise file_error(path, exc) or ImageError(f"{path}: cannot read: {os_reason(exc)}") from exc
    return fmt, width, height


def _probe_remote(path: Remote, max_pixels: int) -> tuple[str, int, int]:
    try:
        if path.size() == 0:
            raise ImageError(f"{path}: empty file")
        with path.open(block_size=64 << 10) as fh:
            try:
                return probe_upload(fh, max_pixels, allowed=None)
            except ImageError as exc:
                raise ImageError(f"{path}: {exc}") from exc
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc}") from exc


@dataclass(frozen=True)
class ConvertedFile:
    data: bytes
    width: int
    height: int
    mode: str
    decode_s: float
    compute_s: float
    encode_s: float


def convert_encoded(
    data: bytes,
    fmt: str,
    options: dict[str, Any],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str = "image",
    chain: str = "",
) -> ConvertedFile:
    """A whole file in, the encoded grayscale file out: decode, convert, encode in one process.

    The master's own steps (``load_image``, ``compose_output``, the same save options), except that
    the pixels stay in Pillow and are converted by Pillow's ``convert("L")``, which the strip
    kernel equals: the bytes are what the master would have written, without an array copy.
    """
    t0 = time.perf_counter()
    loaded = load_image(name, max_pixels, data=data, packed=False)
    t1 = time.perf_counter()
    try:
        image, _ = compose_output(loaded, None, fmt, ops.chain_of(chain) if chain else None)
    except ValueError as exc:  # a chain this process cannot run (canny without OpenCV, say)
        raise ImageError(f"{name}: {exc}") from exc
    t2 = time.perf_counter()
    buf = io.BytesIO()
    try:
        image.save(buf, format=fmt, **options)
    except (OSError, ValueError, KeyError) as exc:
        raise ImageError(f"{name}: cannot encode {fmt}: {exc}") from exc
    return ConvertedFile(
        buf.getvalue(), loaded.width, loaded.height, loaded.mode, t1 - t0, t2 - t1, time.perf_counter() - t2
    )


def write_bytes_atomic(data: bytes | memoryview, path: Path | Remote) -> None:
    """``data`` to ``path`` atomically (``imaging.atomic_write``; a URL: one upload, all or
    nothing); ImageError on failure."""
    if isinstance(path, Remote):
        try:
            path.write_atomic(data)
        except OSError as exc:
            raise ImageError(f"{path}: cannot write: {os_reason(exc)}") from exc
        return
    atomic_write(path, lambda fh: fh.write(data))
