"""Row arrays whose memory is taken as rows arrive and given back as rows are done with.

A streamed job addresses its whole image, input and output, as one C-contiguous array (so a
strip is still a slice, sent as a memoryview or named by its offset in shared memory), but only
the rows in its window ever occupy memory: the array lives in a mapping reserved with
``MAP_NORESERVE`` (address space, not memory: a 30 GB image on a 24 GB machine is fine), pages
are taken when rows are written into them, and :meth:`SparseRows.release` hands whole pages back
to the kernel (``MADV_DONTNEED``: they read as zeros afterwards). What the window holds is the
only memory the job's pixels cost, whatever the image's size.

No sockets or threads. :mod:`distgray.net.shm` does the same for shared memory.
"""

from __future__ import annotations

import mmap
from typing import Protocol

import numpy as np

from distgray.imaging.kernel import U8Array

#: Linux's flag (not in Python's mmap module): do not reserve swap for the whole mapping, so
#: the kernel's overcommit check does not refuse an image larger than memory.
MAP_NORESERVE = 0x4000
PAGE = mmap.PAGESIZE


class RowStore(Protocol):
    """Where a streamed job's rows live: space taken per band, given back below a row."""

    def commit(self, row_start: int, row_stop: int) -> None: ...

    def release_below(self, row: int) -> None: ...

    def close(self) -> None: ...


def pages_below(done: int, row_bytes: int, row: int) -> tuple[int, int]:
    """The whole pages that lie below ``row`` and at or above byte ``done`` (a page boundary), as
    (offset, length). The page ``row`` starts in stays: its tail may hold rows still in use."""
    last = row * row_bytes // PAGE * PAGE
    return done, max(0, last - done)


class SparseRows:
    """A uint8 array of ``shape`` in private memory that is only taken where written."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.nbytes = int(np.prod(shape, dtype=np.int64))
        self.row_bytes = self.nbytes // shape[0] if shape and shape[0] else 0
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE
        self._map = mmap.mmap(-1, max(1, self.nbytes), flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.array: U8Array = np.ndarray(shape, dtype=np.uint8, buffer=self._map)
        self._released = 0  # bytes below this went back to the kernel

    def commit(self, row_start: int, row_stop: int) -> None:
        """Rows [row_start, row_stop) are about to be written (private memory needs nothing)."""

    def release_below(self, row: int) -> None:
        """Give back the memory of the rows above ``row`` (whole pages), once they are done with."""
        offset, length = pages_below(self._released, self.row_bytes, row)
        if length:
            self._map.madvise(mmap.MADV_DONTNEED, offset, length)
            self._released = offset + length

    def close(self) -> None:
        """Nothing to unlink; the mapping goes with the last array on it."""
