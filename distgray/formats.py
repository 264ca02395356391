"""The one table of image formats, and how an output is named. Standard library only.

The command line tells common output formats from their extension before Pillow is loaded (its
plugin registry costs start-up time); anything rarer is asked of Pillow by
:func:`distgray.imaging.load.output_format`. Every other list of formats (what a batch picks up
from a folder, what the page accepts as an upload, what a FILE_TASK may ask for, which formats keep
alpha) is derived from :data:`FORMATS` here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Format:
    name: str  # Pillow's name
    extension: str  # the usual one, for outputs
    suffixes: tuple[str, ...]  # every extension that means it
    alpha: bool  # can hold an alpha channel beside gray


FORMATS: tuple[Format, ...] = (
    Format("JPEG", ".jpg", (".jpg", ".jpeg"), alpha=False),
    Format("PNG", ".png", (".png",), alpha=True),
    Format("WEBP", ".webp", (".webp",), alpha=True),
    Format("TIFF", ".tif", (".tif", ".tiff"), alpha=True),
    Format("BMP", ".bmp", (".bmp",), alpha=False),
    Format("GIF", ".gif", (".gif",), alpha=False),
)

#: Pillow format name -> the usual file extension of an output.
EXTENSIONS = {f.name: f.extension for f in FORMATS}
#: Every extension of a common format -> its Pillow name.
BY_SUFFIX = {s: f.name for f in FORMATS for s in f.suffixes}
#: Names people type for a format that are not Pillow's.
ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}
#: Formats workers convert and the page accepts: the common ones.
COMMON = frozenset(EXTENSIONS)
#: Formats whose files keep an alpha channel beside the gray one.
ALPHA = frozenset(f.name for f in FORMATS if f.alpha)
#: What a folder of images is taken to contain (``--input-dir`` without ``--pattern``).
IMAGE_SUFFIXES = frozenset(BY_SUFFIX)

GRAY_SUFFIX = "_gray"


def canonical(requested: str) -> str:
    """``jpg`` -> ``JPEG``: a format name as Pillow spells it (not checked against Pillow)."""
    name = requested.upper()
    return ALIASES.get(name, name)


def quick_format(path: Path, requested: str | None) -> str | None:
    """The output format if it is a common one (``requested``, else the extension); None: ask Pillow."""
    if requested:
        name = canonical(requested)
        return name if name in COMMON else None
    return BY_SUFFIX.get(path.suffix.lower())


def gray_name(stem: str, extension: str, tag: str = "") -> str:
    """The output name of an input: ``photo`` -> ``photo_gray.png`` (``tag`` tells apart names
    that would collide, e.g. ``photo-2_gray.png``)."""
    return f"{stem}{tag}{GRAY_SUFFIX}{extension}"


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
