"""The worker: connect, authenticate, then task -> grayscale -> result until the master says BYE.

Three threads per session: a *reader* that drains TASK frames into fresh buffers (so the master's
sends never block behind our compute, which would deadlock two full socket buffers), the *main*
loop that converts and sends results, and a *heartbeat* that speaks when we have been quiet.

When the master cannot be reached, or goes away without BYE, the worker reconnects with
exponential backoff and jitter for up to ``retry_for_s`` in all. A wrong token, a master that
is not the one pinned, a protocol version or a refusal of plaintext ends the worker at once:
retrying cannot fix it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import queue
import random
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

from distgray.config import DEFAULT_PORT, DEFAULT_WORKER_HOST, WORKER_RETRY_FOR_S
from distgray.errors import (
    AuthenticationError,
    DistgrayError,
    ImageError,
    NotDistgray,
    PeerDisconnected,
    ProtocolError,
    RemoteError,
    VersionMismatch,
)
from distgray.imaging import stripcodec
from distgray.imaging.files import convert_encoded
from distgray.imaging.save import save_options
from distgray.net import shm
from distgray.net.channel import Channel, connect
from distgray.net.handshake import client_handshake
from distgray.net.tls import ClientTLS, is_loopback
from distgray.wire import protocol as P

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 10.0
CONNECT_TIMEOUT_S = 10.0
BYE_GRACE_S = 1.0  # how long to wait for the other side of a goodbye (its BYE, or its hang-up)
#: A worker refuses any single task bigger than this (an 8K RGB image whole is ~100 MB).
MAX_STRIP_BYTES = 512 << 20


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerConfig:
    host: str = DEFAULT_WORKER_HOST
    port: int = DEFAULT_PORT
    token: bytes | None = None
    worker_id: str = ""
    retry_for_s: float = WORKER_RETRY_FOR_S  # keep trying to reach the master this long; then give up
    max_tasks: int | None = None  # leave after this many strips (burst mode, for tests and demos)
    max_strip_bytes: int = MAX_STRIP_BYTES
    throttle: float = 1.0  # >1: sleep so each strip takes this many times as long (testing, demos)
    shared_memory: bool = True  # offer to read pixels from the master's shared memory (same host)
    tls: ClientTLS | None = None  # how to check the master over TLS; None: plaintext
    require_tls: bool = True  # refuse to talk plaintext to a master on another machine

    def tls_for(self) -> ClientTLS | None:
        """TLS for this master: always with a pin or CA; plaintext only to loopback or when
        ``require_tls`` is off (--no-tls). Raises ValueError when TLS is needed but unknown."""
        if self.tls is not None and (self.tls.pin is not None or self.tls.ca is not None):
            return self.tls
        if is_loopback(self.host) or not self.require_tls:
            return None
        raise ValueError(
            f"master {self.host} is on another machine: pass the --tls-fingerprint it printed"
            " (or --tls-ca for your own certificates); --no-tls only on a network you trust"
        )


Work = P.Task | P.FileTask
Inbox = queue.Queue[tuple[Work, np.ndarray, int, float] | BaseException | P.Bye]  # task, payload, recv us, recv CPU s


class _Leave(Exception):
    """The session ended in a way that means: do not reconnect."""


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.worker_id = config.worker_id or default_worker_id()
        self.tasks_done = 0
        self._stop = threading.Event()
        self._last_send_done_us = 0
        self._joined = False  # the current connection finished its handshake
        self.tls = config.tls_for()

    def stop(self) -> None:
        """Finish the strip in hand, tell the master BYE and return from ``run``."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (a second Ctrl+C then means: leave at once)."""
        return self._stop.is_set()

    def run(self) -> int:
        """Work until told BYE, stopped, or the master stays unreachable. Returns an exit code.

        ``retry_for_s`` is one budget for reaching a master, reset only by a finished handshake:
        a peer that accepts and then fails the handshake (the status page's port, a typo'd one,
        a silent listener) uses it up like an unreachable one, with the same growing backoff."""
        attempt = 0
        since = time.monotonic()
        last_reason = ""
        while not self._stop.is_set():
            left = self.config.retry_for_s - (time.monotonic() - since)
            self._joined = False
            reason = ""
            try:
                channel = connect(
                    self.config.host, self.config.port, timeout=max(0.5, min(CONNECT_TIMEOUT_S, left)), tls=self.tls
                )
            except PeerDisconnected as exc:
                reason = str(exc)
            except AuthenticationError as exc:
                log.error("worker %s: %s", self.worker_id, exc)
                return 1
            else:
                try:
                    self._session(channel)
                except _Leave:
                    return 0
                except RemoteError as exc:
                    if exc.code == P.ErrorCode.SHUTTING_DOWN:
                        log.info("worker %s: %s", self.worker_id, exc)
                        return 0
                    if exc.code == P.ErrorCode.TLS_REQUIRED:
                        log.error("worker %s: %s", self.worker_id, exc)
                        return 1
                    reason = str(exc)
                except (AuthenticationError, VersionMismatch) as exc:
                    log.error("worker %s: %s", self.worker_id, exc)
                    return 1
                except NotDistgray as exc:
                    reason = self._stranger(exc)
                except DistgrayError as exc:
                    reason = f"connection lost: {exc}" if self._joined else f"handshake failed: {exc}"
                finally:
                    channel.close()
            if self._joined:  # a real session ran: a new budget, a fresh backoff
                attempt, since = 0, time.monotonic()
            waited = time.monotonic() - since
            if waited >= self.config.retry_for_s:
                log.error("worker %s: giving up after %.0f s: %s", self.worker_id, waited, reason)
                return 1
            delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)
            delay = min(delay, max(0.0, self.config.retry_for_s - waited))
            attempt += 1
            # The same trouble again is not news: one line when it changes, debug otherwise.
            level = logging.DEBUG if reason == last_reason else logging.WARNING
            log.log(level, "worker %s: %s; retrying in %.1f s", self.worker_id, reason, delay)
            last_reason = reason
            self._stop.wait(delay)
        return 0

    def _stranger(self, exc: NotDistgray) -> str:
        """One line naming what answered instead of a distgray master."""
        where = f"{self.config.host}:{self.config.port}"
        if exc.first_bytes.startswith(b"HTTP/"):
            what = "an HTTP server (the status page's port?)"
        elif exc.first_bytes[:1] == b"\x15" or exc.first_bytes[:1] == b"\x16":
            what = "a TLS server that is not a distgray master"
        else:
            what = f"something that is not a distgray master (it sent {exc.first_bytes[:8]!r})"
        return f"{where} is {what}; workers connect to the master's --port (default {DEFAULT_PORT})"

    # ------------------------------------------------------------------ one connection
    def _session(self, channel: Channel) -> None:
        capabilities = [
            P.CAPABILITY_LUMA_U8,
            P.CAPABILITY_FILES,
            P.CAPABILITY_PNG,
            P.CAPABILITY_JPEG,
            P.CAPABILITY_TIFF,
            P.CAPABILITY_ALPHA,
            P.CAPABILITY_OPS,
        ]
        if importlib.util.find_spec("cv2") is not None:
            capabilities.append(P.CAPABILITY_CANNY)
        if self.config.shared_memory and shm.available():
            capabilities.append(P.CAPABILITY_SHM)
        welcome = client_handshake(
            channel, self.worker_id, self.config.token, tuple(capabilities), max_payload=self.config.max_strip_bytes
        )
        self.worker_id = welcome.worker_id
        self._joined = True
        channel.peer = f"master {self.config.host}:{self.config.port}"
        channel.settimeout(welcome.heartbeat_timeout_ms / 1000)
        log.info("worker %s: connected to %s:%d", self.worker_id, self.config.host, self.config.port)
        inbox: Inbox = queue.Queue()
        # The master may keep `prefetch` tasks in flight; one more is a protocol error, refused
        # before its payload is allocated, so a runaway master cannot exhaust our memory.
        slots = threading.Semaphore(welcome.prefetch)
        ended = threading.Event()
        reader = threading.Thread(
            target=self._read, args=(channel, inbox, slots, welcome.prefetch), daemon=True, name="distgray-worker-read"
        )
        reader.start()
        threading.Thread(
            target=self._heartbeat, args=(channel, welcome, ended), daemon=True, name="distgray-worker-heartbeat"
        ).start()
        try:
            self._work(channel, inbox, slots, reader)
        finally:
            ended.set()

    def _work(self, channel: Channel, inbox: Inbox, slots: threading.Semaphore, reader: threading.Thread) -> None:
        while True:
            if self._stop.is_set() or (self.config.max_tasks is not None and self.tasks_done >= self.config.max_tasks):
                reason = "stopped" if self._stop.is_set() else f"done {self.tasks_done} tasks"
                with contextlib.suppress(DistgrayError):
                    channel.send(P.Bye(reason))
                # A graceful close: stop sending, then let the reader drain whatever the master
                # still sends until it hangs up. Closing with unread data would reset the
                # connection and could destroy our last result and the BYE before the master
                # reads them.
                channel.half_close()
                reader.join(timeout=BYE_GRACE_S)
                log.info("worker %s: leaving (%s)", self.worker_id, reason)
                raise _Leave
            try:
                item = inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(item, P.Bye):
                log.info("worker %s: master said bye: %s", self.worker_id, item.reason)
                raise _Leave
            if isinstance(item, BaseException):
                raise item
            task, data, recv_us, recv_cpu_s = item
            started, cpu_started = time.perf_counter(), time.thread_time()
            result: P.Result | P.PngResult | P.JpegResult | P.TiffResult | P.FileResult
            out: bytes | memoryview | None
            if isinstance(task, P.FileTask):
                result, out = convert_file(task, data, self.worker_id)
                self._pace(cpu_started, recv_cpu_s)
            elif isinstance(task, P.PngTask | P.JpegTask | P.TiffTask):
                result, out = self._encoded_strip(task, data, recv_us, started, cpu_started, recv_cpu_s)
            else:
                log.debug(
                    "worker %s: strip %d, rows %d-%d", self.worker_id, task.strip_id, task.row_start, task.row_stop - 1
                )
                out = _gray_rows(task, data.reshape(task.pixel_rows, task.width, task.channels)).data
                self._pace(cpu_started, recv_cpu_s)
                compute_us = int((time.perf_counter() - started) * 1e6)
                result = P.Result(
                    task.job_id,
                    task.strip_id,
                    task.row_start,
                    task.row_stop,
                    task.width,
                    recv_us,
                    compute_us,
                    self._last_send_done_us,
                )
            del item, data  # a shared-memory mapping goes with the last reference to its pixels
            # Free the slot before the result leaves: the master may send the next task the moment
            # it has read this result, possibly before send() returns here.
            slots.release()
            sent = time.perf_counter()
            try:
                channel.send(result, out)
            except PeerDisconnected:
                self._leave_if_told(inbox)
                raise
            self._last_send_done_us = int((time.perf_counter() - sent) * 1e6)
            self.tasks_done += 1

    def _encoded_strip(
        self,
        task: P.PngTask | P.JpegTask | P.TiffTask,
        data: np.ndarray,
        recv_us: int,
        started: float,
        cpu_started: float,
        recv_cpu_s: float,
    ) -> tuple[P.PngResult | P.JpegResult | P.TiffResult, bytes]:
        log.debug(
            "worker %s: %s strip %d, rows %d-%d",
            self.worker_id,
            task.TYPE.name,
            task.strip_id,
            task.row_start,
            task.row_stop - 1,
        )
        gray = _gray_rows(task, data.reshape(task.pixel_rows, task.width, task.channels))
        result: P.PngResult | P.JpegResult | P.TiffResult
        start, last = task.row_start, task.last
        if isinstance(task, P.PngTask):
            piece = stripcodec.encode(gray, "PNG", task.level, row_start=start, last=last, above=task.above)
        elif isinstance(task, P.TiffTask):
            tiff_rows, predictor = task.rows_per_strip, task.predictor
            piece = stripcodec.encode(
                gray, "TIFF", task.level, row_start=start, last=last, tiff_rows=tiff_rows, predictor=predictor
            )
        else:
            piece = stripcodec.encode(gray, "JPEG", task.quality, row_start=start, last=last)
        self._pace(cpu_started, recv_cpu_s)
        compute_us = int((time.perf_counter() - started) * 1e6)
        where = (task.job_id, task.strip_id, task.row_start, task.row_stop, task.width)
        times = (recv_us, compute_us, self._last_send_done_us)
        if isinstance(task, P.PngTask):
            result = P.PngResult(*where, piece.adler, piece.length, len(piece.data), *times)
        elif isinstance(task, P.TiffTask):
            result = P.TiffResult(*where, task.rows_per_strip, len(piece.data), *times)
        else:
            result = P.JpegResult(*where, len(piece.data), *times)
        return result, piece.data

    def _pace(self, cpu_started: float, recv_cpu_s: float) -> None:
        """--throttle, a testing and demo aid: FACTOR times the work. Measured in CPU time, so that
        a worker paused (SIGSTOP) or starved of CPU is not slowed further by it."""
        if self.config.throttle > 1:
            spent = time.thread_time() - cpu_started + recv_cpu_s
            time.sleep((self.config.throttle - 1) * spent)

    def _leave_if_told(self, inbox: Inbox) -> None:
        """After a failed send: if the master's BYE arrived just before, leave instead of reconnecting."""
        deadline = time.monotonic() + BYE_GRACE_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = inbox.get(timeout=left)
            except queue.Empty:
                return
            if isinstance(item, P.Bye):
                log.info("worker %s: master said bye: %s", self.worker_id, item.reason)
                raise _Leave
            if isinstance(item, BaseException):
                return

    def _read(self, channel: Channel, inbox: Inbox, slots: threading.Semaphore, prefetch: int) -> None:
        marks: list[float] = []

        def sink(message: P.Message) -> memoryview:
            if not isinstance(message, P.Task | P.FileTask):
                raise ProtocolError("only TASK and FILE_TASK frames carry a payload to a worker")
            if not slots.acquire(blocking=False):
                raise ProtocolError(f"master sent more than {prefetch} tasks at once (its own prefetch limit)")
            marks.extend((time.perf_counter(), time.thread_time()))
            return np.empty(message.payload_len, dtype=np.uint8).data

        try:
            while True:
                marks.clear()
                message, payload = channel.recv(sink)
                if isinstance(message, P.Task) and message.shm_segment:
                    if not slots.acquire(blocking=False):
                        raise ProtocolError(f"master sent more than {prefetch} tasks at once (its own prefetch limit)")
                    if not self.config.shared_memory:
                        raise ProtocolError("a task by shared memory, which this worker did not offer")
                    try:
                        pixels = shm.map_region(message.shm_segment, message.shm_offset, message.pixel_bytes)
                    except OSError as exc:
                        # A master stopping removes its job's segment and then says BYE: a task
                        # already on its way names a segment that is gone. Listen for that BYE.
                        bye = self._bye_soon(channel)
                        if bye is not None:
                            inbox.put(bye)
                            return
                        raise ProtocolError(f"cannot map shared memory {message.shm_segment}: {exc}") from exc
                    inbox.put((message, pixels, 0, 0.0))
                elif isinstance(message, P.Task | P.FileTask):
                    assert payload is not None
                    recv_us = int((time.perf_counter() - marks[0]) * 1e6)
                    recv_cpu_s = time.thread_time() - marks[1]
                    inbox.put((message, np.frombuffer(payload, dtype=np.uint8), recv_us, recv_cpu_s))
                elif isinstance(message, P.ShmOffer):
                    probe = shm.read_probe(message.segment) if self.config.shared_memory else None
                    channel.send(P.ShmAnswer(probe is not None, probe or bytes(P.SHM_PROBE_BYTES)))
                elif isinstance(message, P.Bye):
                    inbox.put(message)
                    return
                elif isinstance(message, P.Error):
                    inbox.put(RemoteError(f"master reported: {message.message}", message.code))
                    return
                elif not isinstance(message, P.Heartbeat):
                    inbox.put(DistgrayError(f"unexpected {type(message).__name__} from the master"))
                    return
        except BaseException as exc:  # handed to the main loop, which decides
            inbox.put(exc)

    @staticmethod
    def _bye_soon(channel: Channel) -> P.Bye | None:
        """The master's BYE, if one arrives within BYE_GRACE_S (other frames are skipped)."""
        deadline = time.monotonic() + BYE_GRACE_S
        channel.settimeout(BYE_GRACE_S)
        try:
            while time.monotonic() < deadline:
                message, _ = channel.recv()
                if isinstance(message, P.Bye):
                    return message
        except DistgrayError:
            return None
        return None

    def _heartbeat(self, channel: Channel, welcome: P.Welcome, ended: threading.Event) -> None:
        interval = welcome.heartbeat_interval_ms / 1000
        while not ended.wait(interval / 2):
            if time.monotonic() - channel.last_send >= interval:
                try:
                    channel.send(P.Heartbeat())
                except DistgrayError:
                    return


def _gray_rows(task: P.Task, pixels: np.ndarray) -> np.ndarray:
    """A strip task's gray rows (gray + alpha pairs for an ALPHA task), after its operation chain
    if it has one (a chain this worker cannot run is the master's fault: its connection ends, as
    for any malformed task)."""
    keep_above = isinstance(task, P.PngTask) and task.above
    alpha = isinstance(task, P.PngTask | P.TiffTask) and task.alpha
    try:
        return stripcodec.gray_with_ops(pixels, task.ops, task.halo_above, task.halo_below, keep_above, alpha)
    except ValueError as exc:
        raise ProtocolError(f"{task.TYPE.name}: {exc}") from exc


def convert_file(task: P.FileTask, data: np.ndarray, worker_id: str) -> tuple[P.FileResult, bytes | None]:
    """A FILE_TASK's answer: the encoded gray file, or BAD_INPUT with the reason."""
    options = save_options(task.format, task.quality or None, task.png_level)  # as the master would save
    log.debug("worker %s: file task %d (%d bytes -> %s)", worker_id, task.task_id, task.size, task.format)
    try:
        done = convert_encoded(
            data.tobytes(), task.format, options, task.max_pixels, name=f"file {task.task_id}", chain=task.ops
        )
    except ImageError as exc:
        reason = str(exc).removeprefix(f"file {task.task_id}: ")  # the master knows which file
        message = reason.encode()[:1000].decode("utf-8", "ignore")
        return P.FileResult(task.job_id, task.task_id, 0, P.FileStatus.BAD_INPUT, message=message), None
    us = (int(done.decode_s * 1e6), int(done.compute_s * 1e6), int(done.encode_s * 1e6))
    result = P.FileResult(
        task.job_id, task.task_id, len(done.data), P.FileStatus.OK, done.width, done.height, *us, mode=done.mode
    )
    return result, done.data
