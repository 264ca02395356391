"""What a batch asks of a place, local or behind a URL: its size, and what identifies its content."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from distgray.storage.remote import Remote

#: A file or folder: a local path, or an object behind an fsspec URL.
Place = Path | Remote


def size_of(place: Place) -> int | None:
    try:
        return place.size() if isinstance(place, Remote) else place.stat().st_size
    except OSError:
        return None


def stamp(place: Place) -> dict[str, Any]:
    """Size and a content tag: (size, mtime ns) for a local file, (size, ETag or time) behind a URL.
    OSError when it cannot be read."""
    if isinstance(place, Remote):
        size, tag = place.version()
        return {"input_size": size, "input_etag": tag}
    st = place.stat()
    return {"input_size": st.st_size, "input_mtime_ns": st.st_mtime_ns}


def open_place(place: Place, block_size: int = 1 << 20) -> IO[bytes]:
    """A seekable binary reader of ``place`` (behind a URL: ranged reads of ``block_size``)."""
    if isinstance(place, Remote):
        return place.open(block_size=block_size)
    return open(place, "rb")
