"""Path helpers the command line needs before NumPy and Pillow are loaded (only the standard library)."""

from __future__ import annotations

import os
from pathlib import Path

#: Output formats told by the extension alone, without loading Pillow's plugin registry.
COMMON_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".gif": "GIF",
}
FORMAT_NAMES = {"JPG": "JPEG", "TIF": "TIFF"}


def quick_format(path: Path, requested: str | None) -> str | None:
    """The output format if it is a common one (``requested``, else the extension); None: ask Pillow."""
    if requested:
        name = FORMAT_NAMES.get(requested.upper(), requested.upper())
        return name if name in COMMON_FORMATS.values() else None
    return COMMON_FORMATS.get(path.suffix.lower())


def same_file(a: Path, b: Path) -> bool:
    """True when writing ``b`` would overwrite ``a``."""
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # a symbolic link loop (RuntimeError before Python 3.13)
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
