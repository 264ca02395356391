"""Shared memory for workers on the master's own host: pixels by reference instead of over TCP.

The master puts a job's pixels in a POSIX shared-memory segment (``/dev/shm/distgray-<pid>-...``)
and tells a worker where its strip starts; the worker maps the segment read-only and converts from
it. Whether a worker can see the master's segments is not guessed from addresses: the master
offers a small *probe* segment holding 16 random bytes, and only a worker that reads them back
gets tasks by reference (a worker on another host, or in a container with its own ``/dev/shm``,
cannot, and keeps getting pixels over TCP).

Nothing may be left behind in ``/dev/shm``: the master unlinks a job's segment when the job ends;
segments are registered with :mod:`multiprocessing`'s resource tracker (a separate process),
which unlinks them if the master is killed; and a master starting up removes
segments of distgray masters that no longer run (:func:`sweep_stale`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import mmap
import os
import re
import secrets
import threading
from multiprocessing import resource_tracker
from pathlib import Path

import numpy as np
import numpy.typing as npt

from distgray.errors import ProtocolError
from distgray.imaging.sparse import SparseRows, pages_below

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
PREFIX = "distgray-"
_NAME = re.compile(r"^distgray-(\d+)-[A-Za-z0-9_-]+$")
_counter = itertools.count(1)


def available() -> bool:
    """Whether this host has POSIX shared memory where we look for it."""
    return SHM_DIR.is_dir() and os.access(SHM_DIR, os.W_OK | os.R_OK)


class Segment:
    """A segment this process created: ``array()`` views it; ``close()`` unlinks and unmaps it.

    Space is reserved up front (``posix_fallocate``): a full ``/dev/shm`` (Docker gives containers
    64 MB) fails here with OSError, not later with SIGBUS while pixels are copied in.
    """

    def __init__(self, nbytes: int, tag: str = "job", *, sparse_rows: int = 0) -> None:
        self.name = f"{PREFIX}{os.getpid()}-{tag}{next(_counter)}-{secrets.token_hex(4)}"
        self.nbytes = nbytes
        # sparse_rows: a streamed job's segment, rows of that many bytes; space is reserved a
        # band at a time (commit) and handed back once written (release), not all up front.
        self.row_bytes = sparse_rows
        self._fd = -1
        self._released = 0
        path = SHM_DIR / self.name
        # Registered with the resource tracker (a separate process, which unlinks the name if we
        # die without doing so) *before* the file exists: a master killed at any point after this
        # line leaves nothing behind. No tracker (it could not start, e.g. for a user who may not
        # run this Python): OSError here, and no segment.
        resource_tracker.register(f"/{self.name}", "shared_memory")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except BaseException:
            self._forget()
            raise
        try:
            if sparse_rows:
                os.ftruncate(fd, max(1, nbytes))
            else:
                os.posix_fallocate(fd, 0, max(1, nbytes))
            self._map = mmap.mmap(fd, max(1, nbytes), flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            self._forget()
            raise
        if sparse_rows:
            self._fd = fd  # commit() reserves space through it
        else:
            os.close(fd)
        self._closed = False
        self._lock = threading.Lock()

    def _forget(self) -> None:
        with contextlib.suppress(OSError):  # a tracker that died has nothing left to forget
            resource_tracker.unregister(f"/{self.name}", "shared_memory")

    @property
    def buf(self) -> memoryview:
        return memoryview(self._map)[: self.nbytes]

    def array(self, shape: tuple[int, ...]) -> npt.NDArray[np.uint8]:
        return np.ndarray(shape, dtype=np.uint8, buffer=self._map)

    def commit(self, row_start: int, row_stop: int) -> None:
        """Reserve the space of rows [row_start, row_stop) of a sparse segment before they are
        written: a full ``/dev/shm`` fails here with OSError, not with SIGBUS mid-copy."""
        if self._fd >= 0 and row_stop > row_start:
            os.posix_fallocate(self._fd, row_start * self.row_bytes, (row_stop - row_start) * self.row_bytes)

    def release_below(self, row: int) -> None:
        """Hand back the space of a sparse segment's rows above ``row`` (whole pages:
        ``MADV_REMOVE`` frees them in ``/dev/shm`` for every process; they read as zeros after)."""
        if self._fd < 0:
            return
        offset, length = pages_below(self._released, self.row_bytes, row)
        with self._lock:
            if length and not self._closed:
                self._map.madvise(mmap.MADV_REMOVE, offset, length)
                self._released = offset + length

    def close(self) -> None:
        """Unlink the name (mappings stay valid until unmapped) and let ours go. Idempotent.

        The mapping itself goes with the last array on it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SHM_DIR / self.name)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._forget()
        # Not mmap.close(): NumPy arrays on the mapping hold no buffer export, so closing it would
        # leave them pointing at unmapped memory. Dropping our reference unmaps it once they go.
        del self._map


class Probe(Segment):
    """The master's probe: 16 random bytes a worker must read back to prove it shares memory."""

    def __init__(self) -> None:
        super().__init__(16, "probe")
        self.secret = secrets.token_bytes(16)
        self.buf[:16] = self.secret


def sweep_stale() -> list[str]:
    """Remove segments left by distgray masters that are no longer running (killed with their
    resource tracker, e.g. by ``kill -9`` of the whole process group). Returns their names."""
    removed = []
    with contextlib.suppress(OSError):
        for path in SHM_DIR.iterdir():
            m = _NAME.match(path.name)
            if m is None or _alive(int(m.group(1))):
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path.name)
    if removed:
        log.info("removed %d shared-memory segment(s) of masters no longer running", len(removed))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def valid_name(name: str) -> bool:
    return _NAME.match(name) is not None


def map_region(name: str, offset: int, nbytes: int) -> npt.NDArray[np.uint8]:
    """``nbytes`` of segment ``name`` from ``offset``, mapped read-only (the worker's side).

    Only the pages of the region are mapped, and populated up front; the array's ``base`` is the
    mapping, which :func:`unmap` closes once the array is no longer needed. Raises ProtocolError
    for a bad name or a region outside the segment, OSError if the segment cannot be opened.
    """
    if not valid_name(name):
        raise ProtocolError(f"bad shared-memory segment name {name!r}")
    fd = os.open(SHM_DIR / name, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        if offset < 0 or nbytes <= 0 or offset + nbytes > size:
            raise ProtocolError(f"shared-memory reference {offset}+{nbytes} outside segment {name} ({size} bytes)")
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        m = mmap.mmap(fd, offset + nbytes - start, flags=flags, prot=mmap.PROT_READ, offset=start)
    finally:
        os.close(fd)
    return np.frombuffer(m, dtype=np.uint8, count=nbytes, offset=offset - start)


def buffer(
    shape: tuple[int, ...], shared: bool, sparse: bool = False
) -> tuple[npt.NDArray[np.uint8], Segment | SparseRows | None]:
    """An uninitialised uint8 array of ``shape``: in a new segment if ``shared`` (and there is
    room in ``/dev/shm``), else in private memory. ``sparse`` (a streamed job): memory only for
    the rows committed and not yet released, in either; the store that does so is returned."""
    nbytes = int(np.prod(shape, dtype=np.int64))
    if shared:
        try:
            segment = Segment(nbytes, sparse_rows=nbytes // shape[0] if sparse and shape[0] else 0)
            return segment.array(shape), segment
        except OSError as exc:
            log.info("no room in shared memory for %d MB (%s): pixels go over the network", nbytes >> 20, exc)
    if sparse:
        rows = SparseRows(shape)
        return rows.array, rows
    return np.empty(shape, dtype=np.uint8), None


def read_probe(name: str) -> bytes | None:
    """The probe's 16 bytes, or None if this process cannot open the segment."""
    try:
        view = map_region(name, 0, 16)
    except (OSError, ProtocolError) as exc:
        log.info("shared memory %s not reachable (%s): pixels will come over TCP", name, exc)
        return None
    return view.tobytes()  # the mapping goes with the array
