"""What a batch asks of a place, local or behind a URL: its size, and what identifies its content."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from distgray.formats import same_file
from distgray.storage.remote import Remote

#: A file or folder: a local path, or an object behind an fsspec URL.
Place = Path | Remote


def size_of(place: Place) -> int | None:
    try:
        return place.size() if isinstance(place, Remote) else place.stat().st_size
    except OSError:
        return None


def version(place: Place) -> tuple[int, int | str]:
    """(size, a tag that changes with the content): the mtime in ns of a local file, the ETag (or
    time) of an object behind a URL. OSError when it cannot be read."""
    if isinstance(place, Remote):
        return place.version()
    st = place.stat()
    return st.st_size, st.st_mtime_ns


def stamp(place: Place) -> dict[str, Any]:
    """:func:`version` as a job-log record names it: ``input_size`` and ``input_mtime_ns``, or
    ``input_etag`` behind a URL."""
    size, tag = version(place)
    return {"input_size": size, ("input_etag" if isinstance(place, Remote) else "input_mtime_ns"): tag}


def same_place(a: Place, b: Place) -> bool:
    """True when writing ``b`` would overwrite ``a``."""
    if isinstance(a, Path) and isinstance(b, Path):
        return same_file(a, b)
    return str(a) == str(b)


def open_place(place: Place, block_size: int = 1 << 20) -> IO[bytes]:
    """A seekable binary reader of ``place`` (behind a URL: ranged reads of ``block_size``)."""
    if isinstance(place, Remote):
        return place.open(block_size=block_size)
    return open(place, "rb")
