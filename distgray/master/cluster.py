"""The cluster's state: every worker, every assignment, the current job and file batch.

One owner for all of it. The master's threads never change a worker or a job themselves: they
call a method here (holding the master's lock) and carry out what it answers, as in dask's
``WorkerState.handle_stimulus(...) -> instructions``. No sockets, threads or clock of its own:
the time comes in as ``now``, so every transition can be unit-tested with a fake clock.

Transitions (``w`` a worker, ``s`` a strip or file it is given)::

    event                          method            what changes
    handshake done                 join              w: (new) -> idle
    writer asks what to send       next_step         w takes s: idle -> busy; SendStrip / SendFile /
                                                     SendHeartbeat / Wait / Stop
    result header read             result_sink       checks it against the task; says where it lands
                                                     (gray rows: one copy lands at a time, others
                                                     go to scratch and are discarded)
    result payload read            strip_done        s done (first copy wins); w busy -> idle once
                                                     it holds nothing (strips *and* files)
    file header / payload read     file_sink,        unit done or failed; as above
                                   file_done
    a file cannot be read here     file_unreadable   unit failed; as above
    disconnect, silence, bad frame drop              w -> lost/gone; its strips and files requeued
                                                     (an attempt counted only when lost, once per
                                                     id; lost twice or more: quarantined a while)
    a result fails its check       reject            w dropped as lost; the strip done elsewhere
    SHM_OFFER sent / answered      shm_offered,      w gets no strip until it answers (at most
                                   shm_answered      SHM_ANSWER_S), then pixels by reference or TCP
    job, batch, rows, failure      submit, submit_files, rows_ready, fail
    master closing                 close             every writer is told Stop

A worker's idle/busy state is derived from what it holds (``WorkerBook.state``), so it cannot
disagree with its assignments.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distgray.config import (
    PREFETCH,
    QUARANTINE_AFTER_LOSSES,
    QUARANTINE_BASE_S,
    QUARANTINE_CAP_S,
    SHM_ANSWER_S,
)
from distgray.errors import ProtocolError
from distgray.imaging.encoded import EncodedStrip, Encoding
from distgray.imaging.kernel import U8Array
from distgray.imaging.sparse import RowStore
from distgray.master import snapshot
from distgray.master.books import Assignment, Job, StripRecord, WorkerBook, WorkerState
from distgray.master.tasks import ANSWERS, StripResult, task_for
from distgray.net.shm import Segment
from distgray.scheduling.files import FileQueue, FileUnit, UnitState
from distgray.scheduling.strips import Policy
from distgray.wire import protocol as P

log = logging.getLogger(__name__)

#: How often an idle worker's writer looks again while a job runs (a straggler may become worth
#: a backup copy).
SPECULATION_POLL_S = 0.05


@dataclass(frozen=True)
class ClusterConfig:
    prefetch: int = PREFETCH
    strip_rows: int | None = None
    policy: Policy = field(default_factory=Policy)
    png_row_above: bool = True  # send PNG strips the row above, so their first row filters well
    shm_answer_s: float = SHM_ANSWER_S


# ---------------------------------------------------------------------------- instructions
@dataclass(frozen=True)
class SendStrip:
    job: Job
    task: P.Task
    payload: memoryview | None  # None: the pixels go by shared memory


@dataclass(frozen=True)
class SendFile:
    queue: FileQueue
    unit: FileUnit


@dataclass(frozen=True)
class SendHeartbeat:
    pass


@dataclass(frozen=True)
class Wait:
    timeout_s: float


@dataclass(frozen=True)
class Stop:
    pass


Step = SendStrip | SendFile | SendHeartbeat | Wait | Stop


@dataclass(frozen=True)
class Dropped:
    """What a drop did, for the one log line that tells it."""

    worker: str
    reason: str
    held_strips: list[int]
    requeued_strips: list[int]
    held_files: list[str]
    requeued_files: int


class Cluster:
    """Workers and work of one master run. Not thread-safe: the master holds its lock around
    every call, and payload bytes are never moved by (or while calling) these methods."""

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.config = config or ClusterConfig()
        self.workers: dict[str, WorkerBook] = {}  # every worker of this run, including departed
        self.job: Job | None = None
        self.files: FileQueue | None = None
        self.closing = False
        self.landing: dict[tuple[int, int], str] = {}  # (job, strip) -> the worker whose rows land now
        self._naming: set[str] = set()  # ids handed out by name_worker, not yet joined
        self._job_ids = itertools.count(1)

    # ------------------------------------------------------------------ queries
    def live(self) -> list[WorkerBook]:
        return [w for w in self.workers.values() if w.live]

    def reads_shared_memory(self) -> bool:
        """Whether any live worker reads our shared memory (so pixels are worth putting there)."""
        return any(w.shm for w in self.live())

    def probing(self, w: WorkerBook, now: float) -> bool:
        """Whether ``w`` is yet to answer our offer: it gets no strips for that moment (at most
        ``shm_answer_s``), so that they all take the way it can read."""
        return w.shm_offered_at is not None and now - w.shm_offered_at < self.config.shm_answer_s

    def file_states(self) -> dict[int, tuple[UnitState, str | None, str | None, float | None]]:
        """Each unit of the current batch: (state, worker, error, seconds of its last attempt)."""
        return self.files.states() if self.files is not None else {}

    def snapshot(self, now: float, heard: Mapping[str, float]) -> dict[str, Any]:
        """Workers and the current job's progress (``heard``: when each worker was last heard)."""
        return snapshot.describe(list(self.workers.values()), self.job, now, heard)

    # ------------------------------------------------------------------ joining
    def name_worker(self, wanted: str) -> str:
        """The id of a joining worker: the one it asked for, unless a *connected* worker has it
        (then ``<it>#2``, ``#3``...). An id that comes back after leaving is the same worker: its
        losses and quarantine carry over, so a crash-looping worker is one worker, not many."""
        wid = wanted
        base = wanted.encode()[:100].decode("utf-8", "ignore")  # room for "#n" within 128 bytes
        for n in itertools.count(2):
            held = self.workers.get(wid)
            if wid not in self._naming and (held is None or not held.live):
                break
            wid = f"{base}#{n}"
        self._naming.add(wid)  # reserved until it joins (two with one id may shake hands at once)
        return wid

    def join(
        self, wid: str, address: str, capabilities: tuple[str, ...], now: float = 0.0, *, secure: bool = False
    ) -> WorkerBook | None:
        """A worker finished its handshake. None when the master is closing (it is sent away)."""
        self._naming.discard(wid)
        if self.closing:
            return None
        before = self.workers.get(wid)
        w = WorkerBook(wid, address, capabilities, secure=secure)
        if before is not None:  # the same worker again: its run totals and its record carry over
            w.strips, w.rows, w.bytes_in, w.bytes_out = before.strips, before.rows, before.bytes_in, before.bytes_out
            w.failures, w.losses, w.quarantined_until = before.failures, before.losses, before.quarantined_until
            w.joins = before.joins + 1
        self.workers[wid] = w
        return w

    def distrust(self, wid: str) -> None:
        """``wid`` returned a wrong result: it gets no more work in this run (under any connection)."""
        self.workers[wid].quarantined_until = float("inf")

    def shm_offered(self, wid: str, now: float) -> None:
        self.workers[wid].shm_offered_at = now

    def shm_answered(self, wid: str, ok: bool) -> None:
        w = self.workers[wid]
        w.shm, w.shm_offered_at = ok, None

    # ------------------------------------------------------------------ jobs and batches
    def submit(
        self,
        pixels: U8Array,
        name: str,
        now: float,
        *,
        encoding: Encoding | None = None,
        segment: Segment | None = None,
        rows_ready: int | None = None,
        store: RowStore | None = None,
        ops: str = "",
    ) -> Job:
        if self.job is not None and not self.job.done:
            raise RuntimeError("a job is already running")
        cfg = self.config
        job = Job(
            next(self._job_ids),
            name,
            pixels,
            cfg.policy,
            cfg.strip_rows,
            encoding=encoding,
            segment=segment,
            store=store,
            ops=ops,
        )
        job.started = now
        if rows_ready is not None:
            job.scheduler.rows_ready = rows_ready
        self.job = job
        return job

    def rows_ready(self, job: Job, rows: int, now: float) -> None:
        """Rows [0, rows) of a streaming job's pixels are in place: they may be handed out."""
        job.scheduler.set_rows_ready(rows)
        if rows >= job.height and job.input_ready_at is None:
            job.input_ready_at = now

    def fail(self, job: Job, reason: str, now: float) -> None:
        """End ``job`` as failed (its pixels could not be loaded, say)."""
        if not job.scheduler.finished:
            job.scheduler.failure = reason
            job.finish(now)

    def submit_files(self, queue: FileQueue) -> None:
        if self.files is not None and not self.files.finished:
            raise RuntimeError("a file batch is already running")
        self.files = queue

    def close(self) -> list[str]:
        """The master is closing: every writer stops. Returns the ids of the live workers."""
        self.closing = True
        return [w.id for w in self.live()]

    # ------------------------------------------------------------------ the writer asks
    def next_step(self, wid: str, now: float, quiet_s: float, heartbeat_s: float) -> Step:
        """What ``wid``'s writer does next; ``quiet_s``: how long since it last sent anything."""
        w = self.workers[wid]
        if not w.live or self.closing:
            return Stop()
        job = self.job
        if now < w.quarantined_until:  # lost again and again: heartbeats only, for a while
            if quiet_s >= heartbeat_s:
                return SendHeartbeat()
            return Wait(min(heartbeat_s, w.quarantined_until - now))
        room = w.tasks_held < self.config.prefetch and not self.probing(w, now)
        able = job is not None and P.can_run(w.capabilities, job.ops)
        if room and job is not None and able and not job.scheduler.finished:
            strip = job.scheduler.next_strip(w.id, now, [x.id for x in self.live()])
            if strip is not None:
                task, payload = task_for(w, job, strip, self.config.png_row_above)
                w.in_flight[(job.id, strip.id)] = Assignment(
                    now, strip.row_start, strip.row_stop, job.width, ANSWERS[task.TYPE]
                )
                return SendStrip(job, task, payload)
        files_ok = self.files is not None and P.can_run(w.capabilities, self.files.ops)
        if room and self.files is not None and files_ok and P.CAPABILITY_FILES in w.capabilities:  # strips first
            unit = self.files.next_for(w.id, now)
            if unit is not None:
                w.files_in_flight[unit.id] = self.files.id
                return SendFile(self.files, unit)
        if quiet_s >= heartbeat_s:
            return SendHeartbeat()
        running = job is not None and not job.scheduler.finished
        return Wait(min(heartbeat_s, SPECULATION_POLL_S) if running else heartbeat_s)

    def sent(self, wid: str, nbytes: int, job: Job | None = None) -> None:
        """``nbytes`` of a task went to ``wid`` (``job``: a strip of that job)."""
        self.workers[wid].bytes_in += nbytes
        if job is not None:
            job.worker_bytes.setdefault(wid, [0, 0])[0] += nbytes

    def file_unreadable(self, wid: str, queue: FileQueue, unit_id: int, reason: str, now: float) -> None:
        """The master could not read a file it was about to send: it fails (any worker would)."""
        self.workers[wid].files_in_flight.pop(unit_id, None)
        queue.failed(unit_id, reason, now)

    # ------------------------------------------------------------------ the reader tells
    def result_sink(self, wid: str, message: P.Message, now: float) -> Job | None:
        """A result's header arrived: check it against its task before a payload byte is read.

        Returns the job whose output (or encoded pieces) it fills, or None when the strip is
        already done (a late or backup copy: the payload is read into scratch and dropped).
        Raises ProtocolError for a result the worker was never asked for, or of the wrong shape."""
        if not isinstance(message, P.Result | P.PngResult | P.JpegResult | P.TiffResult):
            raise ProtocolError(f"unexpected payload on {type(message).__name__}")
        w = self.workers[wid]
        task = w.in_flight.get((message.job_id, message.strip_id))
        if task is None:
            raise ProtocolError(f"result for job {message.job_id} strip {message.strip_id}, not assigned to it")
        if task.answer != message.TYPE:
            raise ProtocolError(f"{message.TYPE.name} for a task that wants {task.answer.name}")
        if (message.row_start, message.row_stop, message.width) != (task.row_start, task.row_stop, task.width):
            raise ProtocolError(
                f"result shape rows [{message.row_start}, {message.row_stop}) x {message.width}"
                f" does not match task rows [{task.row_start}, {task.row_stop}) x {task.width}"
            )
        w.result_started = now
        job = self.open_job(message)
        if job is not None and isinstance(message, P.Result):
            # Gray rows land straight in the output: one copy of a strip at a time, or a second
            # copy (a backup) could overwrite rows the first one's check has already passed.
            key = (job.id, message.strip_id)
            if self.landing.setdefault(key, wid) != wid:
                return None
        return job

    def open_job(self, result: StripResult) -> Job | None:
        """The current job, if ``result``'s strip is still to be done in it (its rows are ours)."""
        job = self.job
        if job is None or job.id != result.job_id or job.scheduler.strips[result.strip_id].done_by is not None:
            return None
        return job

    def lands(self, wid: str, result: StripResult) -> Job | None:
        """The job whose output ``wid``'s just-read ``result`` is in (to be checked, then counted),
        or None if it went to scratch: its strip was done, or another copy was landing."""
        job = self.open_job(result)
        if job is not None and isinstance(result, P.Result) and self.landing.get((job.id, result.strip_id)) != wid:
            return None
        return job

    def strip_done(self, wid: str, result: StripResult, piece: EncodedStrip | None, now: float) -> None:
        """A result's payload is in (rows in the output, or ``piece`` encoded). First copy counts."""
        w = self.workers[wid]
        job = self.job
        task = w.in_flight.pop((result.job_id, result.strip_id), None)
        if job is None or job.started is None or job.id != result.job_id or task is None:
            return  # dropped while its result arrived, or a late copy for a finished job
        if isinstance(result, P.Result):
            if self.landing.get((job.id, result.strip_id)) != wid:
                # Its rows went to scratch (another copy was landing): not a result, nor a failure.
                job.scheduler.discard(result.strip_id, w.id)
                return
            del self.landing[(job.id, result.strip_id)]
        counted = job.scheduler.complete(result.strip_id, w.id, now)
        if counted and piece is not None:
            job.encoded[result.row_start] = (result.row_stop, piece)
        rows = result.row_stop - result.row_start
        busy = (result.recv_us + result.compute_us) / 1e6
        # Speed includes transfer both ways: the worker's receive + compute, our receive.
        job.scheduler.observe(w.id, rows, busy + max(0.0, now - w.result_started))
        received = P.PREFIX_BYTES + len(result.encode()) + result.payload_len
        job.worker_bytes.setdefault(w.id, [0, 0])[1] += received
        w.strips, w.rows, w.bytes_out = w.strips + 1, w.rows + rows, w.bytes_out + received
        w.speed = job.scheduler.speeds.get(w.id, w.speed)
        w.mp_per_s = None if w.speed is None else w.speed * job.width / 1e6
        job.records.append(
            StripRecord(
                result.strip_id,
                w.id,
                result.row_start,
                result.row_stop,
                rows * job.width * job.channels,
                result.payload_len,
                round(task.sent_at - job.started, 6),
                round(now - job.started, 6),
                result.recv_us,
                result.compute_us,
                result.send_us,
                counted,
            )
        )
        if job.scheduler.finished:
            job.finish(now)

    def file_sink(self, wid: str, message: P.FileResult) -> FileUnit:
        """A FILE_RESULT's header arrived: the unit it answers, its size checked against the
        unit's bound. Raises ProtocolError for a file not assigned to ``wid``."""
        queue = self.files
        if self.workers[wid].files_in_flight.get(message.task_id) != message.job_id or queue is None:
            raise ProtocolError(f"FILE_RESULT for batch {message.job_id} file {message.task_id}, not assigned to it")
        unit = queue.units[message.task_id]
        if message.size > unit.max_result_bytes:
            raise ProtocolError(
                f"FILE_RESULT of {message.size} bytes for a {unit.width}x{unit.height} image"
                f" (limit {unit.max_result_bytes})"
            )
        return unit

    def file_of(self, wid: str, result: P.FileResult) -> FileUnit | None:
        """The unit a FILE_RESULT answers, if it is still of the current batch."""
        queue = self.files
        batch = self.workers[wid].files_in_flight.get(result.task_id)
        return queue.units[result.task_id] if queue is not None and batch == queue.id else None

    def file_done(self, wid: str, result: P.FileResult, error: str | None, now: float) -> None:
        """A FILE_RESULT is in and (unless ``error``) its bytes written to the unit's output."""
        w = self.workers[wid]
        unit = self.file_of(wid, result)
        w.files_in_flight.pop(result.task_id, None)
        queue = self.files
        if unit is None or queue is None or unit.state is not UnitState.RUNNING:
            return
        seconds = (result.decode_us + result.compute_us + result.encode_us) / 1e6
        w.strips += 1
        w.bytes_out += P.PREFIX_BYTES + len(result.encode()) + result.size
        if error is None:
            queue.done(unit.id, w.id, now, result.size, seconds)
            if seconds > 0:
                w.mp_per_s = unit.pixels / 1e6 / seconds
        else:
            queue.failed(unit.id, error, now)

    def drop(self, wid: str, state: WorkerState, reason: str, now: float) -> Dropped | None:
        """End one worker: requeue its strips and files. Idempotent: None if it had already left."""
        w = self.workers.get(wid)
        if w is None or not w.live:
            return None
        w.ended, w.reason = state, reason
        counts = state is WorkerState.LOST  # a departure costs a requeue, never an attempt
        if counts:
            w.losses += 1
            if w.losses >= QUARANTINE_AFTER_LOSSES:
                pause = min(QUARANTINE_CAP_S, QUARANTINE_BASE_S * 2 ** (w.losses - QUARANTINE_AFTER_LOSSES))
                w.quarantined_until = now + pause
        held: list[int] = []
        lost: list[int] = []
        job = self.job
        if job is not None and w.in_flight:
            held = sorted(sid for (jid, sid) in w.in_flight if jid == job.id)
            lost = job.scheduler.worker_lost(w.id, now, reason, counts=counts)
            w.failures += len(lost)
            if job.scheduler.finished:
                job.finish(now)
        files: list[str] = []
        requeued_files = 0
        if w.files_in_flight and self.files is not None:
            queue = self.files
            files = [str(queue.units[u].source) for u in w.files_in_flight]
            requeued = [u for u in w.files_in_flight if queue.attempt_lost(u, w.id, reason, now, counts=counts)]
            requeued_files = len(requeued)
            w.failures += requeued_files
        w.in_flight.clear()
        w.files_in_flight.clear()
        for key in [k for k, lander in self.landing.items() if lander == wid]:
            del self.landing[key]  # cut off mid-landing: its rows are redone (requeued above)
        return Dropped(w.id, reason, held, lost, files, requeued_files)
