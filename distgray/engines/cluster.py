"""The built-in engine: distgray's own raw-socket cluster (:class:`distgray.master.server.Master`).

An adapter from the :class:`~distgray.engines.base.Engine` interface to a started master, plus
what only the caller that started them knows: the local worker processes (``--local-workers``),
whose exit means no worker will join, and whose peak memory the report shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

from distgray.engines.base import FileState, PixelBuffer, RunningJob
from distgray.imaging.encoded import EncodedStrip, Encoding
from distgray.imaging.kernel import U8Array
from distgray.imaging.sparse import SparseRows
from distgray.master.books import Job
from distgray.master.report import job_report, peak_rss_mb
from distgray.master.server import Master
from distgray.net.shm import Segment
from distgray.scheduling.files import FileQueue


class LocalProcess(Protocol):
    """A local worker process, as much of ``subprocess.Popen`` as is read here."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...


class ClusterEngine:
    """Jobs on a started :class:`Master` and the workers that join it."""

    def __init__(self, master: Master, local: Sequence[LocalProcess] = (), min_workers: int = 1) -> None:
        self.master = master
        self.local = local
        self.min_workers = min_workers

    def live_workers(self) -> int:
        return len(self.master.live_workers())

    def wait_for_workers(self, n: int, timeout: float | None = None) -> bool:
        return self.master.wait_for_workers(n, timeout)

    def wait_for_change(self, timeout: float) -> None:
        self.master.wait_for_change(timeout)

    def workers_exited(self) -> str | None:
        procs = self.local
        if procs and len(procs) >= self.min_workers and all(p.poll() is not None for p in procs):
            return f"local workers exited (codes {[p.returncode for p in procs]}) before joining"
        return None

    def pixel_buffer(self, shape: tuple[int, ...], sparse: bool = False) -> tuple[U8Array, PixelBuffer | None]:
        return self.master.pixel_buffer(shape, sparse=sparse)

    def share(self, pixels: U8Array) -> tuple[U8Array, PixelBuffer | None]:
        return self.master.share(pixels)

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
        segment = buffer if isinstance(buffer, Segment) else None
        store = buffer if streamed and isinstance(buffer, Segment | SparseRows) else None
        if streamed and store is None:
            raise TypeError(f"a streamed job needs a sparse buffer of this engine, not {buffer!r}")
        return self.master.submit(
            pixels, name, encoding=encoding, segment=segment, rows_ready=rows_ready, store=store, ops=ops
        )

    def rows_ready(self, job: RunningJob, rows: int) -> None:
        self.master.rows_ready(_own(job), rows)

    def written(self, job: RunningJob, row: int) -> None:
        self.master.written(_own(job), row)

    def rows_converted(self, job: RunningJob) -> int:
        return self.master.rows_converted(_own(job))

    def cancel(self, job: RunningJob, reason: str) -> None:
        self.master.fail(_own(job), reason)

    def take_encoded(self, job: RunningJob, row: int) -> list[tuple[int, EncodedStrip]]:
        return self.master.take_encoded(_own(job), row)

    def submit_files(self, queue: FileQueue) -> None:
        self.master.submit_files(queue)

    def file_states(self) -> dict[int, FileState]:
        return self.master.file_states()

    def snapshot(self) -> dict[str, Any]:
        return self.master.snapshot()

    def report(self, job: RunningJob) -> dict[str, Any]:
        report = job_report(_own(job), self.master.workers)
        rss = [r for r in (peak_rss_mb(p.pid) for p in self.local) if r is not None]
        report.update(master_peak_rss_mb=peak_rss_mb(os.getpid()), local_worker_peak_rss_mb=max(rss) if rss else None)
        return report


def _own(job: RunningJob) -> Job:
    if not isinstance(job, Job):
        raise TypeError(f"not a job of this engine: {job!r}")
    return job
