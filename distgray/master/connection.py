"""One joined worker's connection: its writer and reader threads, and how it ends.

The writer asks the :class:`Cluster` for its next step and carries it out (send a strip, send a
file, heartbeat, wait, stop); the reader receives results with ``recv_into`` straight into their
rows of the job's output and tells the cluster. Every cluster call holds the master's lock
(``Guard``); payload bytes never move while holding it. A worker's trouble ends this connection
only: the cluster requeues its strips *before* its socket closes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from distgray.errors import DistgrayError, ImageError, PeerDisconnected, PeerTimeout, ProtocolError, RemoteError
from distgray.imaging import files, verify
from distgray.imaging.encoded import EncodedStrip
from distgray.master.books import Job, WorkerState
from distgray.master.cluster import Cluster, SendFile, SendHeartbeat, SendStrip, Stop, Wait
from distgray.master.pixels import SharedPixels
from distgray.master.tasks import StripResult, encode_here, piece_of
from distgray.net.channel import Channel
from distgray.wire import protocol as P

log = logging.getLogger(__name__)

READER_GRACE_S = 1.0  # after a failed send, how long the reader may take to say why


class BadResult(ProtocolError):
    """A result that fails its check (see ``imaging.verify``): the worker is not to be trusted."""


def check_strip(job: Job, result: StripResult, piece: EncodedStrip | None, rows: int) -> str | None:
    """Why ``result`` (its rows in ``job.output``, or ``piece``) is wrong, or None. The structure
    of an encoded piece is always checked; ``rows`` rows of it are recomputed from the source."""
    last = result.row_stop == job.height
    alpha = job.encoding is not None and job.encoding.alpha
    if isinstance(result, P.PngResult) and piece is not None:
        return verify.check_png(job.pixels, piece, result.row_start, result.row_stop, last, rows, alpha, job.ops)
    if isinstance(result, P.JpegResult) and piece is not None:
        assert job.encoding is not None
        q = job.encoding.setting
        return verify.check_jpeg(job.pixels, piece, result.row_start, result.row_stop, last, q, rows, job.ops)
    if isinstance(result, P.TiffResult) and piece is not None:
        assert job.encoding is not None
        if result.rows_per_strip != job.encoding.tiff_rows:
            return f"TIFF strips of {result.rows_per_strip} rows, the job's have {job.encoding.tiff_rows}"
        start, stop = result.row_start, result.row_stop
        return verify.check_tiff(job.pixels, piece, start, stop, result.rows_per_strip, rows, alpha, job.ops)
    if rows and isinstance(result, P.Result):
        got = job.output[result.row_start : result.row_stop]
        return verify.check_plain(job.pixels, got, result.row_start, rows, job.ops)
    return None


@dataclass(frozen=True)
class Guard:
    """The cluster and the one lock every call on it holds; writers wait on ``work`` for change."""

    cluster: Cluster
    lock: threading.Lock
    work: threading.Condition


class Connection:
    """Worker ``wid`` on ``channel``. ``writer()`` runs on the connection's own thread, ``reader()``
    on a second one (``self.reader``, set by the master)."""

    def __init__(
        self, wid: str, channel: Channel, guard: Guard, pixels: SharedPixels, heartbeat_s: float, verify_rows: int = 0
    ) -> None:
        self.wid = wid
        self.verify_rows = verify_rows
        self.channel = channel
        self.guard = guard
        self.pixels = pixels
        self.heartbeat_s = heartbeat_s
        self.reader: threading.Thread | None = None

    def offer_shm(self, capabilities: tuple[str, ...]) -> None:
        """Ask a worker that offers ``shm`` to prove it can read our memory (from its writer)."""
        probe = self.pixels.probe
        if probe is not None and P.CAPABILITY_SHM in capabilities:
            with self.guard.lock:
                self.guard.cluster.shm_offered(self.wid, time.monotonic())
            self.channel.send(P.ShmOffer(probe.name))

    def writer(self) -> None:
        wid, interval, channel = self.wid, self.heartbeat_s, self.channel
        while True:
            with self.guard.work:
                while True:
                    now = time.monotonic()
                    step = self.guard.cluster.next_step(wid, now, now - channel.last_send, interval)
                    if not isinstance(step, Wait):
                        break
                    self.guard.work.wait(timeout=step.timeout_s)
            if isinstance(step, Stop):
                return
            try:
                if isinstance(step, SendFile):
                    self._send_file(channel, step)
                elif isinstance(step, SendHeartbeat):
                    channel.send(P.Heartbeat())
                elif isinstance(step, SendStrip):
                    task = step.task
                    log.debug("worker %s: strip %d, rows %d-%d", wid, task.strip_id, task.row_start, task.row_stop - 1)
                    sent = channel.send(task, step.payload)
                    with self.guard.lock:
                        self.guard.cluster.sent(wid, sent, step.job)
            except DistgrayError as exc:
                # The reader has the last word on why a connection ended: a worker that said BYE
                # and hung up just as we sent it a task left cleanly; it is not lost.
                if self.reader is not None:
                    self.reader.join(timeout=READER_GRACE_S)
                self.drop(WorkerState.LOST, str(exc))
                return

    def _send_file(self, channel: Channel, step: SendFile) -> None:
        wid, queue, unit = self.wid, step.queue, step.unit
        try:
            data = unit.source.read_bytes()
        except OSError as exc:
            with self.guard.work:
                reason = f"{unit.source}: cannot read: {exc.strerror or exc}"
                self.guard.cluster.file_unreadable(wid, queue, unit.id, reason, time.monotonic())
                self.guard.work.notify_all()
            return
        task = P.FileTask(
            queue.id, unit.id, len(data), queue.max_pixels, unit.format, unit.quality, unit.png_level, queue.ops
        )
        log.debug("worker %s: file %s (%d bytes)", wid, unit.source, len(data))
        sent = channel.send(task, data)
        with self.guard.lock:
            self.guard.cluster.sent(wid, sent)

    def read(self) -> None:
        """The reader thread's loop: until the worker leaves or breaks the protocol."""
        wid = self.wid
        try:
            while True:
                message, payload = self.channel.recv(self._sink)
                if isinstance(message, P.Result | P.PngResult | P.JpegResult | P.TiffResult):
                    self._strip_result(message, payload)
                elif isinstance(message, P.ShmAnswer):
                    ok = self.pixels.proves(message.probe, message.ok)
                    with self.guard.work:
                        self.guard.cluster.shm_answered(wid, ok)
                        self.guard.work.notify_all()
                    log.info("worker %s: pixels by %s", wid, "shared memory" if ok else "TCP")
                elif isinstance(message, P.FileResult):
                    self._file_result(message, payload)
                elif isinstance(message, P.Heartbeat):
                    continue
                elif isinstance(message, P.Bye):
                    self.drop(WorkerState.GONE, f"left: {message.reason or 'bye'}")
                    return
                elif isinstance(message, P.Error):
                    raise RemoteError(f"worker reported error {message.code}: {message.message}", message.code)
                else:
                    raise ProtocolError(f"unexpected {type(message).__name__} from a worker")
        except PeerDisconnected as exc:
            broke = exc.mid_frame or isinstance(exc, PeerTimeout)  # silent or cut off mid-frame: lost
            self.drop(WorkerState.LOST if broke else WorkerState.GONE, str(exc))
        except BadResult as exc:
            # Caught returning wrong work: dropped, its strips redone elsewhere, never given more.
            with self.guard.lock:
                self.guard.cluster.distrust(wid)
            self.drop(WorkerState.LOST, f"sent a wrong result: {exc}")
        except DistgrayError as exc:
            self.drop(WorkerState.LOST, str(exc))

    def _sink(self, message: P.Message) -> memoryview | None:
        """Where a result's payload lands: its rows of the output (RESULT), a buffer of its own
        (PNG_, JPEG_, TIFF_ and FILE_RESULT: bounded by the header's checks), or scratch (None)
        when the strip is already done."""
        with self.guard.lock:
            if isinstance(message, P.FileResult):
                self.guard.cluster.file_sink(self.wid, message)
                return memoryview(bytearray(message.size))
            job = self.guard.cluster.result_sink(self.wid, message, time.monotonic())
        if job is None:
            return None  # a late or backup copy: read and discard
        if isinstance(message, P.PngResult | P.JpegResult | P.TiffResult):
            return memoryview(bytearray(message.payload_len))
        assert isinstance(message, P.Result)
        return job.output[message.row_start : message.row_stop].data.cast("B")

    def _strip_result(self, result: StripResult, payload: memoryview | None) -> None:
        piece = piece_of(result, payload)
        with self.guard.lock:
            job = self.guard.cluster.lands(self.wid, result)
        if job is not None:  # the copy that counts (so far): check it before it is trusted
            problem = check_strip(job, result, piece, self.verify_rows)
            if problem is not None:
                raise BadResult(f"strip {result.strip_id} (rows {result.row_start}-{result.row_stop - 1}): {problem}")
        if isinstance(result, P.Result):  # its rows landed in the output; an encoded job encodes them here
            piece = encode_here(job, result) if job is not None else None
        with self.guard.work:
            self.guard.cluster.strip_done(self.wid, result, piece, time.monotonic())
            self.guard.work.notify_all()  # a prefetch slot is free

    def _file_result(self, result: P.FileResult, payload: memoryview | None) -> None:
        wid = self.wid
        with self.guard.lock:
            unit = self.guard.cluster.file_of(wid, result)
        error = None
        if unit is not None and result.status is P.FileStatus.OK:
            assert payload is not None
            problem = verify.check_file(payload, unit.width, unit.height) if self.verify_rows else None
            if problem is not None:
                raise BadResult(f"file {unit.source.name}: {problem}")
            try:
                files.write_bytes_atomic(payload, unit.output)
            except ImageError as exc:
                error = str(exc)
        elif unit is not None:
            error = result.message or "the worker could not convert it"
        with self.guard.work:
            self.guard.cluster.file_done(wid, result, error, time.monotonic())
            self.guard.work.notify_all()

    def drop(self, state: WorkerState, reason: str) -> None:
        """End this worker: the cluster requeues its strips first, then its socket closes. Idempotent."""
        wid = self.wid
        with self.guard.work:
            dropped = self.guard.cluster.drop(wid, state, reason, time.monotonic())
            closing = self.guard.cluster.closing
            self.guard.work.notify_all()
        if dropped is not None:
            if dropped.held_strips or dropped.requeued_strips:
                log.warning(
                    "worker %s: %s; held strips %s, requeued %s",
                    wid,
                    reason,
                    dropped.held_strips,
                    dropped.requeued_strips or "none",
                )
            elif not closing:
                log.info("worker %s: %s", wid, reason)
            if dropped.held_files:
                log.warning(
                    "worker %s: %s; held files %s, %d requeued", wid, reason, dropped.held_files, dropped.requeued_files
                )
        self.channel.close()
