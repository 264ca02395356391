"""The master: accepts workers, runs jobs through the scheduler, lands results in the output array.

Threads: one accepts connections; each worker gets a *writer* (pulls strips from the scheduler,
sends tasks and idle heartbeats) and a *reader* (receives results with ``recv_into`` straight into
their rows of the job's output array). A worker's trouble (disconnect, silence, a bad frame, a
wrong-sized result) ends that worker only: its in-flight strips are requeued *before* its socket
is closed, so no strip is ever owned by a connection that can no longer deliver it.

State shared between threads is guarded by one lock (``self._lock``) with one condition that
writers wait on for work; payload bytes are never moved while holding it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from distgray import protocol as P
from distgray import status
from distgray.defaults import HEARTBEAT_INTERVAL_S as HEARTBEAT_INTERVAL_S
from distgray.defaults import HEARTBEAT_TIMEOUT_S as HEARTBEAT_TIMEOUT_S
from distgray.errors import DistgrayError, PeerDisconnected, PeerTimeout, ProtocolError, RemoteError
from distgray.imaging import U8Array
from distgray.master_files import FileWork
from distgray.master_results import ResultWork
from distgray.scheduler import Policy
from distgray.shm import Segment
from distgray.state import Assignment, Encoding, Job, WorkerConn, WorkerState
from distgray.transport import HANDSHAKE_TIMEOUT_S, Channel, listen, server_handshake

__all__ = ["Encoding", "Job", "Master", "MasterConfig", "WorkerConn", "WorkerState"]

log = logging.getLogger(__name__)

PREFETCH = 2
SPECULATION_POLL_S = 0.05  # how often an idle worker's writer looks for a straggler to back up
READER_GRACE_S = 1.0  # after a failed send, how long the reader may take to say why
MAX_HANDSHAKES = 64  # connections allowed to be mid-handshake at once
CLOSE_GRACE_S = 2.0  # on shutdown, how long a worker may take to hang up after our BYE
ANSWERS = {  # what a worker must answer each kind of strip task with
    P.MessageType.TASK: P.MessageType.RESULT,
    P.MessageType.PNG_TASK: P.MessageType.PNG_RESULT,
    P.MessageType.JPEG_TASK: P.MessageType.JPEG_RESULT,
}


@dataclass(frozen=True)
class MasterConfig:
    host: str = "0.0.0.0"
    port: int = 5003
    token: bytes | None = None  # None: --no-auth
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S
    prefetch: int = PREFETCH
    strip_rows: int | None = None
    policy: Policy = field(default_factory=Policy)
    max_handshakes: int = MAX_HANDSHAKES
    shared_memory: bool = True  # pixels by reference to workers that can read our memory
    png_row_above: bool = True  # send PNG strips the row above, so their first row filters well


class Master(FileWork, ResultWork):
    """Accepts workers and converts arrays with them. ``start()``, ``run``/``submit``, ``close()``."""

    def __init__(self, config: MasterConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self.workers: dict[str, WorkerConn] = {}  # every worker of this run, including departed
        self._taken_ids: set[str] = set()
        self._handshaking: set[Channel] = set()
        self._handshake_slots = threading.BoundedSemaphore(config.max_handshakes)
        self.job: Job | None = None
        self._job_ids = itertools.count(1)
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self._closing = False
        self.address: tuple[str, int] = (config.host, config.port)
        self.png_row_above = config.png_row_above

    # ------------------------------------------------------------------ lifecycle
    def start(self, listener: socket.socket | None = None) -> tuple[str, int]:
        """Bind (or take ``listener``, already listening) and start accepting workers.

        Returns the bound (host, port)."""
        self._listener = listener if listener is not None else listen(self.config.host, self.config.port)
        self._listener.settimeout(0.5)
        self.address = self._listener.getsockname()[:2]
        self._open_probe(self.config.shared_memory)
        self._spawn(self._accept_loop, "distgray-accept")
        return self.address

    def close(self, reason: str = "master shutting down") -> None:
        """Tell every worker BYE, close every connection and stop accepting."""
        with self._lock:
            self._closing = True
            live = self._live()
            pending = list(self._handshaking)
            self._work.notify_all()
        for channel in pending:  # a peer mid-handshake hears BYE too, and must not delay shutdown
            with contextlib.suppress(DistgrayError):
                channel.settimeout(2.0)
                channel.send(P.Bye(reason))
            channel.close()
        # A graceful close: BYE, then half-close so the worker sees end-of-stream after it, while
        # its reader keeps draining what the worker was sending (closing outright would reset the
        # connection under a worker mid-send, and it would never read the BYE).
        for w in live:
            with contextlib.suppress(DistgrayError):
                w.channel.settimeout(CLOSE_GRACE_S)
                w.channel.send(P.Bye(reason))
            w.channel.half_close()
        for w in live:
            if w.reader is not None:
                w.reader.join(timeout=CLOSE_GRACE_S)
            self._drop(w, WorkerState.GONE, reason)
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes a thread blocked in accept() at once (Linux)
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._threads_lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout=5.0)
        self._close_probe()

    def __enter__(self) -> Master:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, target: Any, name: str, *args: Any) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        with self._threads_lock:  # spawned from the accept loop and from connection threads
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        return t

    # ------------------------------------------------------------------ queries
    def live_workers(self) -> list[WorkerConn]:
        with self._lock:
            return self._live()

    def snapshot(self) -> dict[str, Any]:
        """Workers and the current job's progress, copied under the lock (the status page)."""
        with self._lock:
            return status.describe(list(self.workers.values()), self.job, time.monotonic())

    def wait_for_change(self, timeout: float) -> None:
        """Sleep until a result, a join or a loss changes something, or ``timeout`` passes."""
        with self._work:
            self._work.wait(timeout)

    def _live(self) -> list[WorkerConn]:  # caller holds the lock
        return [w for w in self.workers.values() if w.state in (WorkerState.IDLE, WorkerState.BUSY)]

    def wait_for_workers(self, n: int, timeout: float | None = None) -> bool:
        """Block until at least ``n`` workers are connected (or the timeout passes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._work:
            while len(self._live()) < n:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or self._closing:
                    return False
                self._work.wait(timeout=0.5 if left is None else min(left, 0.5))
            return True

    # ------------------------------------------------------------------ jobs
    def submit(
        self,
        pixels: U8Array,
        name: str = "image",
        *,
        encoding: Encoding | None = None,
        segment: Segment | None = None,
        rows_ready: int | None = None,
    ) -> Job:
        """Start converting ``pixels``; returns at once. One job runs at a time.

        ``encoding``: the output is encoded strip by strip (collect it with ``take_encoded``);
        ``segment``: ``pixels`` live in it (from ``share``/``pixel_buffer``);
        ``rows_ready``: only that many rows exist yet (more follow through ``rows_ready()``)."""
        with self._lock:
            if self.job is not None and not self.job.wait(0):
                raise RuntimeError("a job is already running")
            job = Job(
                next(self._job_ids),
                name,
                pixels,
                self.config.policy,
                self.config.strip_rows,
                encoding=encoding,
                segment=segment,
            )
            job.started = time.monotonic()
            if rows_ready is not None:
                job.scheduler.rows_ready = rows_ready
            self.job = job
            self._work.notify_all()
        log.info("job %d: %s, %dx%d", job.id, name, job.width, job.height)
        return job

    def run(
        self, pixels: U8Array, name: str = "image", timeout: float | None = None, *, encoding: Encoding | None = None
    ) -> Job:
        """Convert ``pixels`` and wait for the job to finish (done or failed)."""
        job = self.submit(pixels, name, encoding=encoding)
        job.wait(timeout)
        return job

    # ------------------------------------------------------------------ accepting
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closing:
            try:
                sock, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if not self._closing:
                    log.exception("accept failed")
                return
            if not self._handshake_slots.acquire(blocking=False):
                # A flood of connections that never finish their handshake must not cost a thread
                # each: past the limit, new ones are closed at once until a slot frees up.
                log.warning(
                    "connection %s:%d: refused: %d handshakes already pending", *addr[:2], self.config.max_handshakes
                )
                sock.close()
                continue
            self._spawn(self._serve_worker, f"distgray-conn-{addr[1]}", sock, f"{addr[0]}:{addr[1]}")

    def _serve_worker(self, sock: socket.socket, address: str) -> None:
        channel = Channel(sock, peer=address, timeout=HANDSHAKE_TIMEOUT_S)
        with self._lock:
            if self._closing:
                self._handshake_slots.release()
                channel.close()
                return
            self._handshaking.add(channel)
        try:
            hello, welcome = server_handshake(channel, self.config.token, self._welcome)
        except (DistgrayError, ValueError) as exc:
            if not self._closing:
                log.warning("connection %s: refused: %s", address, exc)
            channel.close()
            return
        finally:
            self._handshake_slots.release()
            with self._lock:
                self._handshaking.discard(channel)
        channel.peer = f"worker {welcome.worker_id}"
        channel.settimeout(self.config.heartbeat_timeout_s)
        w = WorkerConn(welcome.worker_id, address, channel, hello.capabilities)
        with self._lock:
            closing = self._closing
            if not closing:  # close() says BYE to registered workers; a late one hears it here
                self.workers[w.id] = w
                self._work.notify_all()
        if closing:
            with contextlib.suppress(DistgrayError):
                channel.send(P.Bye("master shutting down"))
            channel.close()
            return
        log.info("worker %s: joined from %s", w.id, address)
        w.reader = self._spawn(self._reader, f"distgray-read-{w.id}", w)
        try:
            self._offer_shm(w)
        except DistgrayError as exc:
            self._drop(w, WorkerState.LOST, str(exc))
            return
        self._writer(w)

    def _welcome(self, hello: P.Hello, proof: bytes) -> P.Welcome:
        with self._lock:
            wid = hello.worker_id
            base = wid.encode()[:100].decode("utf-8", "ignore")  # room for "#n" within 128 bytes
            for n in itertools.count(2):
                if wid not in self._taken_ids:
                    break
                wid = f"{base}#{n}"
            self._taken_ids.add(wid)  # ids stay unique for the master's whole run
        cfg = self.config
        return P.Welcome(
            proof, int(cfg.heartbeat_interval_s * 1000), int(cfg.heartbeat_timeout_s * 1000), cfg.prefetch, wid
        )

    # ------------------------------------------------------------------ per worker
    def _writer(self, w: WorkerConn) -> None:
        interval = self.config.heartbeat_interval_s
        while True:
            with self._work:
                job, strip, unit, task, payload = None, None, None, None, None
                while w.state in (WorkerState.IDLE, WorkerState.BUSY) and not self._closing:
                    job = self.job
                    room = len(w.in_flight) + len(w.files_in_flight) < self.config.prefetch
                    room = room and not self._probing(w)  # its pixels' way is about to be known
                    if room and job is not None and not job.scheduler.finished:
                        live = [x.id for x in self._live()]
                        strip = job.scheduler.next_strip(w.id, time.monotonic(), live)
                        if strip is not None:
                            task, payload = self._task_for(w, job, strip)
                            w.in_flight[(job.id, strip.id)] = Assignment(
                                time.monotonic(),
                                strip.row_start,
                                strip.row_stop,
                                job.width,
                                ANSWERS[task.TYPE],
                            )
                            w.state = WorkerState.BUSY
                            break
                    if room and (unit := self._take_file(w)) is not None:  # strips first: they hold memory
                        break
                    if time.monotonic() - w.channel.last_send >= interval:
                        break
                    # While a job runs, look again soon: a straggler may become worth a backup copy.
                    running = job is not None and not job.scheduler.finished
                    self._work.wait(timeout=min(interval, SPECULATION_POLL_S) if running else interval)
                else:
                    return
            try:
                if unit is not None:
                    self._send_file(w, unit)
                    continue
                if strip is None or job is None:
                    w.channel.send(P.Heartbeat())
                    continue
                log.debug("worker %s: strip %d, rows %d-%d", w.id, strip.id, strip.row_start, strip.row_stop - 1)
                job_bytes = job.worker_bytes.setdefault(w.id, [0, 0])
                assert task is not None
                sent = w.channel.send(task, payload)
                job_bytes[0] += sent
                w.bytes_in += sent
            except DistgrayError as exc:
                # The reader has the last word on why a connection ended: a worker that said BYE
                # and hung up just as we sent it a task left cleanly; it is not lost.
                if w.reader is not None:
                    w.reader.join(timeout=READER_GRACE_S)
                self._drop(w, WorkerState.LOST, str(exc))
                return

    def _reader(self, w: WorkerConn) -> None:
        try:
            while True:
                message, payload = w.channel.recv(lambda m: self._sink(w, m))
                if isinstance(message, P.Result | P.PngResult | P.JpegResult):
                    self._complete(w, message, payload)
                elif isinstance(message, P.ShmAnswer):
                    self._shm_answered(w, message)
                elif isinstance(message, P.FileResult):
                    self._complete_file(w, message, payload)
                elif isinstance(message, P.Heartbeat):
                    continue
                elif isinstance(message, P.Bye):
                    self._drop(w, WorkerState.GONE, f"left: {message.reason or 'bye'}")
                    return
                elif isinstance(message, P.Error):
                    raise RemoteError(f"worker reported error {message.code}: {message.message}", message.code)
                else:
                    raise ProtocolError(f"unexpected {type(message).__name__} from a worker")
        except PeerDisconnected as exc:
            broke = exc.mid_frame or isinstance(exc, PeerTimeout)  # silent or cut off mid-frame: lost
            self._drop(w, WorkerState.LOST if broke else WorkerState.GONE, str(exc))
        except DistgrayError as exc:
            self._drop(w, WorkerState.LOST, str(exc))

    def _sink(self, w: WorkerConn, message: P.Message) -> memoryview | None:
        return self._file_sink(w, message) if isinstance(message, P.FileResult) else self._result_sink(w, message)

    def _drop(self, w: WorkerConn, state: WorkerState, reason: str) -> None:
        """End one worker: requeue its strips first, then close its socket. Idempotent."""
        with self._work:
            if w.state in (WorkerState.LOST, WorkerState.GONE):
                return
            w.state, w.reason = state, reason
            job = self.job
            if job is not None and w.in_flight:
                held = sorted(sid for (jid, sid) in w.in_flight if jid == job.id)
                lost = job.scheduler.worker_lost(w.id, time.monotonic(), reason)
                w.failures += len(lost)
                log.warning("worker %s: %s; held strips %s, requeued %s", w.id, reason, held, lost or "none")
                if job.scheduler.finished:
                    job._finish()
            elif not self._closing:
                log.info("worker %s: %s", w.id, reason)
            if w.files_in_flight:
                files = [str(self.files.units[u].source) for u in w.files_in_flight] if self.files else []
                requeued = self._files_lost(w, reason)
                log.warning("worker %s: %s; held files %s, %d requeued", w.id, reason, files, len(requeued))
            w.in_flight.clear()
            self._work.notify_all()
        w.channel.close()
