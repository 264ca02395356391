"""What runs on a Dask worker: one strip, or one whole file. Plain functions of arrays and bytes.

Dask ships these by reference (module and name), so its workers need distgray installed, the
same version as the master's. Each calls the very functions the built-in worker calls
(``imaging.stripcodec``, ``imaging.files.convert_encoded``), so a strip or a file comes out the
same bytes whichever engine ran it. A bad input is an answer, not an exception: Dask retries
exceptions on other workers, which for a broken file would only fail three times.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from distgray.errors import ImageError
from distgray.imaging import stripcodec
from distgray.imaging.encoded import EncodedStrip, Encoding
from distgray.imaging.files import convert_encoded
from distgray.imaging.kernel import U8Array
from distgray.imaging.save import save_options
from distgray.storage.remote import Remote


@dataclass(frozen=True)
class StripDone:
    """A strip's answer: its gray rows (a plain job) or its encoded piece, who made it, how long."""

    gray: U8Array | None
    piece: EncodedStrip | None
    worker: str
    seconds: float


@dataclass(frozen=True)
class FileDone:
    """A file's answer: the encoded gray file, or why it could not be made (``error``), or that
    the worker cannot read the path it was given (``unreadable``: send the bytes instead)."""

    data: bytes | None
    width: int
    height: int
    worker: str
    seconds: float
    error: str | None = None
    unreadable: bool = False


def worker_name() -> str:
    """The Dask worker running this task (its name, else its address), or this process."""
    try:
        from distributed import get_worker

        worker = get_worker()
        return str(worker.name if worker.name is not None else worker.address)
    except (ImportError, ValueError):
        return f"pid-{os.getpid()}"


def convert_strip(
    pixels: U8Array,
    row_start: int,
    last: bool,
    above: bool,
    encoding: Encoding | None,
    ops: str = "",
    halo_above: int = 0,
    halo_below: int = 0,
) -> StripDone:
    """Gray rows of ``pixels`` (rows x width x 3|4; with ``above``, the first row is the one above
    the strip), encoded as ``encoding`` says if it says. With an operation chain ``ops``, the
    pixels hold ``halo_above`` and ``halo_below`` rows of context (the row above, if any, is the
    last of those above), as the built-in worker's OPS tasks."""
    t0 = time.perf_counter()
    alpha = encoding is not None and encoding.alpha
    rows = stripcodec.gray_with_ops(pixels, ops, halo_above, halo_below, keep_above=above, alpha=alpha)
    if encoding is None:
        return StripDone(rows, None, worker_name(), time.perf_counter() - t0)
    piece = stripcodec.encode(
        rows,
        encoding.format,
        encoding.setting,
        row_start=row_start,
        last=last,
        above=above,
        tiff_rows=encoding.tiff_rows,
    )
    return StripDone(None, piece, worker_name(), time.perf_counter() - t0)


def convert_file(
    source: str | Remote | bytes, name: str, fmt: str, quality: int, png_level: int, max_pixels: int, ops: str = ""
) -> FileDone:
    """A whole file (its path or URL, read here, or its bytes) to the encoded gray file, as the
    built-in worker's FILE_TASK does."""
    t0 = time.perf_counter()
    who = worker_name()
    if not isinstance(source, bytes):
        try:
            source = source.read_bytes() if isinstance(source, Remote) else Path(source).read_bytes()
        except OSError as exc:
            why = exc.strerror or exc
            return FileDone(None, 0, 0, who, 0.0, f"{name}: cannot read here: {why}", unreadable=True)
    options = save_options(fmt, quality or None, png_level)
    try:
        done = convert_encoded(source, fmt, options, max_pixels, name=name, chain=ops)
    except ImageError as exc:
        return FileDone(None, 0, 0, who, time.perf_counter() - t0, str(exc))
    return FileDone(done.data, done.width, done.height, who, time.perf_counter() - t0)


def peak_rss_mb() -> float | None:
    """This worker process's peak resident memory in MB (as the built-in engine's report reads it)."""
    from distgray.master.report import peak_rss_mb as of_process

    return of_process(os.getpid())


def convert_shared(
    segment: str,
    offset: int,
    shape: tuple[int, int, int],
    row_start: int,
    last: bool,
    above: bool,
    encoding: Encoding | None,
    ops: str = "",
    halo_above: int = 0,
    halo_below: int = 0,
) -> StripDone | None:
    """:func:`convert_strip` of pixels the master left in its shared memory (``shape`` bytes of
    ``segment`` from ``offset``): a worker on the master's host reads them in place. None when
    this worker cannot open the segment (another host or container): send the pixels instead."""
    from distgray.net import shm

    try:
        pixels = shm.map_region(segment, offset, shape[0] * shape[1] * shape[2]).reshape(shape)
    except OSError:
        return None
    return convert_strip(pixels, row_start, last, above, encoding, ops, halo_above, halo_below)
