"""What a job needs from an engine: the small interface ``jobs/`` drives, whatever runs the work.

An engine converts one image's pixels at a time (strip by strip, optionally encoded by the
workers) and, for batches, whole files. Jobs submit work, watch its progress, collect results as
they complete and cancel; they never see an engine's threads, sockets or processes. The built-in
raw-socket cluster (:mod:`distgray.engines.cluster`) is the first engine; another (Dask) fits
beside it by implementing these protocols.
"""

from __future__ import annotations

from typing import Any, Protocol

from distgray.imaging.encoded import EncodedStrip, Encoding
from distgray.imaging.kernel import U8Array
from distgray.scheduling.files import FileQueue, UnitState

#: A file unit's (state, worker, error, seconds of its last attempt).
FileState = tuple[UnitState, str | None, str | None, float | None]


class PixelBuffer(Protocol):
    """Memory an engine put a job's pixels in (shared memory, say): closed when the job is over.

    A *sparse* buffer (a streamed job's) takes memory only for the rows committed (before they
    are decoded into it) and not yet released (the engine releases them once written)."""

    def commit(self, row_start: int, row_stop: int) -> None: ...

    def close(self) -> None: ...


class RunningJob(Protocol):
    """One image being converted: progress, the gray output, completion."""

    @property
    def id(self) -> int: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def rows_done(self) -> int: ...

    @property
    def failure(self) -> str | None: ...

    @property
    def output(self) -> U8Array:
        """The gray rows (whole-image jobs; empty for encoded ones once released)."""
        ...

    @property
    def worker_ids(self) -> list[str]:
        """The workers that returned results for it, sorted."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """True once the job is over, done or failed."""
        ...

    def release(self) -> None:
        """Drop the job's pixel arrays (its figures stay)."""
        ...


class Engine(Protocol):
    def live_workers(self) -> int:
        """How many workers can take work now."""
        ...

    def wait_for_workers(self, n: int, timeout: float | None = None) -> bool: ...

    def wait_for_change(self, timeout: float) -> None:
        """Sleep until something completes, joins or is lost, or ``timeout`` passes."""
        ...

    def workers_exited(self) -> str | None:
        """Why no worker can ever join (the engine's own workers all exited), else None."""
        ...

    def pixel_buffer(self, shape: tuple[int, ...], sparse: bool = False) -> tuple[U8Array, PixelBuffer | None]:
        """An uninitialised uint8 array to decode a job's pixels into, wherever the engine's
        workers read them best. ``sparse``: for a streamed job (always returns its buffer)."""
        ...

    def share(self, pixels: U8Array) -> tuple[U8Array, PixelBuffer | None]:
        """``pixels`` where the engine's workers read them best (a copy, or ``pixels`` itself)."""
        ...

    def submit(
        self,
        pixels: U8Array,
        name: str,
        *,
        encoding: Encoding | None = None,
        buffer: PixelBuffer | None = None,
        rows_ready: int | None = None,
        streamed: bool = False,
        ops: str = "",
    ) -> RunningJob:
        """Start converting ``pixels`` (returns at once). ``rows_ready``: only that many rows
        exist yet; more follow through :meth:`rows_ready`. ``streamed``: ``buffer`` is sparse,
        and rows are let go as :meth:`written` says they are in the output file. ``ops``: the
        operation chain (``imaging.ops.spell``, its strip part) each strip gets with its halo; the
        output then holds the chain's rows (a Canny's map: 0, 1, 2)."""
        ...

    def rows_ready(self, job: RunningJob, rows: int) -> None: ...

    def written(self, job: RunningJob, row: int) -> None:
        """Rows [0, row) of ``job``'s output are in its file: a streamed job's memory for them
        may go (the input's and the output's)."""
        ...

    def rows_converted(self, job: RunningJob) -> int:
        """The first row not yet converted: every row above it is in ``job.output``."""
        ...

    def cancel(self, job: RunningJob, reason: str) -> None:
        """End ``job`` as failed with ``reason``."""
        ...

    def take_encoded(self, job: RunningJob, row: int) -> list[tuple[int, EncodedStrip]]:
        """The encoded strips that continue the output from ``row``, in order, as they complete."""
        ...

    def submit_files(self, queue: FileQueue) -> None:
        """Convert a batch's whole files (each unit written to its output by the engine)."""
        ...

    def file_states(self) -> dict[int, FileState]: ...

    def snapshot(self) -> dict[str, Any]:
        """The page's view: ``{"workers": [...], "job": {...} | None}``."""
        ...

    def report(self, job: RunningJob) -> dict[str, Any]:
        """A job's figures (``--report``, the summary table), with the peak memory of the
        processes that ran it (``master_peak_rss_mb``, ``local_worker_peak_rss_mb``)."""
        ...
