"""What the master knows about workers and jobs: plain data, shared by master, report and status.

No sockets are opened and no threads started here; the master mutates these objects under its
own lock, and readers (the summary, the status page) copy what they need under the same lock.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from distgray.imaging import U8Array
from distgray.messages import MessageType
from distgray.pngstrip import EncodedStrip
from distgray.scheduler import Policy, Scheduler
from distgray.shm import Segment
from distgray.transport import Channel


class WorkerState(enum.StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    LOST = "lost"  # went silent or broke the protocol
    GONE = "gone"  # left cleanly or was sent away


@dataclass(frozen=True)
class Assignment:
    """A task given to a worker, kept until its result is in: what a valid result must match."""

    sent_at: float
    row_start: int
    row_stop: int
    width: int
    answer: MessageType = MessageType.RESULT  # what a valid answer to this task is


@dataclass
class WorkerConn:
    id: str
    address: str
    channel: Channel
    capabilities: tuple[str, ...]
    state: WorkerState = WorkerState.IDLE
    in_flight: dict[tuple[int, int], Assignment] = field(default_factory=dict)  # by (job id, strip id)
    files_in_flight: dict[int, int] = field(default_factory=dict)  # file unit id -> batch id
    reason: str = ""
    shm: bool = False  # it read our shared-memory probe back: pixels may go by reference
    shm_offered_at: float | None = None  # SHM_OFFER sent, SHM_ANSWER not yet in
    reader: threading.Thread | None = None
    result_started: float = 0.0  # when the payload of the result being received began
    # Figures over the master's whole run (the status page); per-job figures live in Job.records.
    strips: int = 0  # results received, counted or not
    rows: int = 0
    bytes_in: int = 0  # task bytes sent to the worker
    bytes_out: int = 0  # result bytes it sent back
    failures: int = 0  # strips that had to be requeued from it
    speed: float | None = None  # the scheduler's last estimate, rows/s
    mp_per_s: float | None = None  # the same speed in megapixels/s, at the width it was measured on


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


@dataclass(frozen=True)
class Encoding:
    """An output the workers encode strip by strip: PNG at zlib level ``setting`` (0-9), or
    JPEG at quality ``setting`` (1-100)."""

    format: str
    setting: int

    @property
    def row_align(self) -> int:
        return 8 if self.format == "JPEG" else 1  # JPEG strips: whole MCU rows of one gray component


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
    ) -> None:
        if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or not pixels.flags.c_contiguous:
            raise ValueError("pixels must be a C-contiguous (height, width, 3|4) uint8 array")
        self.id = job_id
        self.name = name
        self.pixels = pixels
        self.height, self.width, self.channels = pixels.shape
        self.output: U8Array = np.empty((self.height, self.width), dtype=np.uint8)
        align = encoding.row_align if encoding is not None else 1
        self.scheduler = Scheduler(
            self.height, self.width * self.channels, policy, strip_rows=strip_rows, row_align=align
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

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def release(self) -> None:
        """Drop the pixel arrays of a finished job (its record stays in the history)."""
        if self._done.is_set():
            self.pixels = self.output = np.empty((0, 0, 0), dtype=np.uint8)
            self.segment = None
            self.encoded.clear()

    def take_encoded(self, row: int) -> list[tuple[int, EncodedStrip]]:
        """The encoded strips that follow on from ``row``, in order, removed from the job."""
        taken = []
        while (item := self.encoded.pop(row, None)) is not None:
            taken.append(item)
            row = item[0]
        return taken

    def _finish(self) -> None:
        self.finished_at = time.monotonic()
        self._done.set()
