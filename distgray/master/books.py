"""The master's books: plain records of workers, the tasks they hold, and jobs.

No sockets, threads or clocks. Only :class:`distgray.master.cluster.Cluster` changes these
records (under the master's lock); the page, the report and tests read them.

A worker's state is *derived*, never set by hand: ``busy`` exactly while it holds a strip or a
file, so no code path can leave a worker marked idle while it still holds work.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field

import numpy as np

from distgray.imaging import ops as imaging_ops
from distgray.imaging.encoded import EncodedStrip, Encoding
from distgray.imaging.kernel import U8Array
from distgray.imaging.sparse import RowStore, SparseRows
from distgray.net.shm import Segment
from distgray.scheduling.strips import Policy, Scheduler
from distgray.wire.fields import MessageType


class WorkerState(enum.StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    LOST = "lost"  # went silent or broke the protocol
    GONE = "gone"  # left cleanly or was sent away


ENDED = frozenset({WorkerState.LOST, WorkerState.GONE})


@dataclass(frozen=True)
class Assignment:
    """A task given to a worker, kept until its result is in: what a valid result must match."""

    sent_at: float
    row_start: int
    row_stop: int
    width: int
    answer: MessageType = MessageType.RESULT  # what a valid answer to this task is


@dataclass
class WorkerBook:
    """One worker of this master run (departed ones stay, for the page and the report)."""

    id: str
    address: str
    capabilities: tuple[str, ...]
    ended: WorkerState | None = None  # LOST or GONE once it has left; None while connected
    in_flight: dict[tuple[int, int], Assignment] = field(default_factory=dict)  # by (job id, strip id)
    files_in_flight: dict[int, int] = field(default_factory=dict)  # file unit id -> batch id
    reason: str = ""
    shm: bool = False  # it read our shared-memory probe back: pixels may go by reference
    shm_offered_at: float | None = None  # SHM_OFFER sent, SHM_ANSWER not yet in
    result_started: float = 0.0  # when the payload of the result being received began
    # Figures over the master's whole run (the status page); per-job figures live in Job.records.
    strips: int = 0  # results received, counted or not
    rows: int = 0
    bytes_in: int = 0  # task bytes sent to the worker
    bytes_out: int = 0  # result bytes it sent back
    failures: int = 0  # strips that had to be requeued from it
    secure: bool = False  # its connection runs over TLS
    losses: int = 0  # times this id was lost (not departed) in this run
    quarantined_until: float = 0.0  # lost again and again: no work before this time
    joins: int = 1  # connections this id has made in this run
    speed: float | None = None  # the scheduler's last estimate, rows/s
    mp_per_s: float | None = None  # the same speed in megapixels/s, at the width it was measured on

    @property
    def state(self) -> WorkerState:
        if self.ended is not None:
            return self.ended
        return WorkerState.BUSY if self.in_flight or self.files_in_flight else WorkerState.IDLE

    @property
    def live(self) -> bool:
        return self.ended is None

    @property
    def tasks_held(self) -> int:
        return len(self.in_flight) + len(self.files_in_flight)


@dataclass
class StripRecord:
    strip: int
    worker: str
    row_start: int
    row_stop: int
    bytes_out: int
    bytes_in: int
    sent_s: float
    done_s: float
    recv_us: int
    compute_us: int
    send_us: int
    counted: bool


class Job:
    """One image's conversion: source pixels in, gray output array filled by the workers."""

    def __init__(
        self,
        job_id: int,
        name: str,
        pixels: U8Array,
        policy: Policy,
        strip_rows: int | None = None,
        *,
        encoding: Encoding | None = None,
        segment: Segment | None = None,
        store: RowStore | None = None,
        ops: str = "",
    ) -> None:
        if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or not pixels.flags.c_contiguous:
            raise ValueError("pixels must be a C-contiguous (height, width, 3|4) uint8 array")
        self.id = job_id
        self.name = name
        self.pixels = pixels
        self.height, self.width, self.channels = pixels.shape
        # A streamed job (``store``: its input rows' memory, handed back below the written row)
        # keeps its gray rows sparse as well: only those not yet written take memory.
        self.store = store
        self._output_rows = SparseRows((self.height, self.width)) if store is not None else None
        self.output: U8Array = (
            self._output_rows.array
            if self._output_rows is not None
            else np.empty((self.height, self.width), dtype=np.uint8)
        )
        self.rows_written = 0  # rows [0, rows_written) of the output are in its file
        # The operation chain each strip gets, and the rows of context (halo) it needs each way.
        self.ops = ops
        self.support = imaging_ops.support_of(ops)
        align = encoding.row_align if encoding is not None else 1
        self.scheduler = Scheduler(
            self.height, self.width * self.channels, policy, strip_rows=strip_rows, row_align=align, halo=self.support
        )
        self.started: float | None = None
        self.finished_at: float | None = None
        self.records: list[StripRecord] = []
        self.worker_bytes: dict[str, list[int]] = {}  # worker -> [bytes_out, bytes_in]
        self._done = threading.Event()
        # Output encoded strip by strip (``encoding`` set): the winning piece of each strip, by
        # row_start, until the writer takes it; the master keeps no gray pixels for such a job.
        self.encoding = encoding
        self.encoded: dict[int, tuple[int, EncodedStrip]] = {}
        self.segment = segment  # the pixels' shared-memory segment, if they are in one
        self.input_ready_at: float | None = None  # a streamed input: when its last row was decoded

    @property
    def rows_done(self) -> int:
        return self.scheduler.rows_done

    @property
    def failure(self) -> str | None:
        return self.scheduler.failure

    @property
    def worker_ids(self) -> list[str]:
        """The workers that returned results for this job, sorted."""
        return sorted({r.worker for r in self.records})

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def release(self) -> None:
        """Drop the pixel arrays of a finished job (its record stays in the history)."""
        if self._done.is_set():
            self.pixels = self.output = np.empty((0, 0, 0), dtype=np.uint8)
            self.segment = self.store = self._output_rows = None  # a streamed job's mappings go too
            self.encoded.clear()

    def written(self, row: int) -> None:
        """Rows [0, row) are in the output file: a streamed job's memory for them goes (the input
        keeps one row more: a PNG strip starting at ``row`` is sent the row above it, and the
        chain's halo more)."""
        if row <= self.rows_written:
            return
        self.rows_written = row
        if self.store is not None:
            self.store.release_below(max(0, row - 1 - self.support))
        if self._output_rows is not None:
            self._output_rows.release_below(row)

    def take_encoded(self, row: int) -> list[tuple[int, EncodedStrip]]:
        """The encoded strips that follow on from ``row``, in order, removed from the job."""
        taken = []
        while (item := self.encoded.pop(row, None)) is not None:
            taken.append(item)
            row = item[0]
        return taken

    def finish(self, now: float) -> None:
        """Mark the job over (done or failed): the cluster calls this, once."""
        self.finished_at = now
        self._done.set()
