"""Writing outputs: Pillow's save options for each format, and atomic writes.

An output appears whole or not at all: written to a temporary file in its folder, fsynced, and
renamed over the final name. Errors become one-line :class:`ImageError` reasons.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from distgray.config import DEFAULT_JPEG_QUALITY
from distgray.errors import ImageError

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import: mkstemp creates 0600 files, outputs get the usual mode


def save_options(fmt: str, quality: int | None, png_level: int) -> dict[str, Any]:
    if fmt == "JPEG":
        return {"quality": quality if quality is not None else DEFAULT_JPEG_QUALITY}
    if fmt == "WEBP":
        return {"quality": quality} if quality is not None else {"lossless": True}
    if fmt == "PNG":
        return {"compress_level": png_level}
    if fmt == "TIFF":
        return {"compression": "tiff_adobe_deflate"}  # as the workers' TIFF strips (libtiff's deflate)
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


def remove_stale_parts(output: Path) -> None:
    """Temporary files a killed run left next to ``output`` (ours: ``.<name>.*.part``)."""
    if output.parent.is_dir():
        for part in output.parent.glob(f".{_glob_escape(output.name)}.*.part"):
            part.unlink(missing_ok=True)


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
