"""The master's threads and sockets: accept workers, carry out what the cluster says, land results.

Threads: one accepts connections and runs each handshake on a thread of its own; a joined worker
becomes a :class:`~distgray.master.connection.Connection` (a writer carrying out the cluster's
steps, a reader landing results). A worker's trouble (disconnect, silence, a bad frame, a
wrong-sized result) ends that worker only: its strips are requeued by the cluster *before* its
socket is closed, so no strip is ever owned by a connection that can no longer deliver it.

Every cluster call is made holding ``self._lock``; writers wait on ``self._work`` (the same lock)
for something to change. Payload bytes are never moved while holding it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from distgray.config import (
    ACCEPT_BACKOFF_CAP_S,
    ACCEPT_BACKOFF_S,
    CLOSE_GRACE_S,
    DEFAULT_HOST,
    DEFAULT_PORT,
    HANDSHAKE_TIMEOUT_S,
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_TIMEOUT_S,
    MAX_HANDSHAKES,
    MAX_HANDSHAKES_PER_HOST,
    PREFETCH,
    VERIFY_ROWS,
)
from distgray.errors import DistgrayError, PeerDisconnected, ProtocolError
from distgray.imaging.encoded import EncodedStrip, Encoding
from distgray.imaging.kernel import U8Array
from distgray.imaging.sparse import RowStore, SparseRows
from distgray.master.admission import Admission
from distgray.master.books import Job, WorkerBook, WorkerState
from distgray.master.cluster import Cluster, ClusterConfig
from distgray.master.connection import Connection, Guard
from distgray.master.pixels import SharedPixels
from distgray.net.channel import Channel, listen
from distgray.net.handshake import server_handshake
from distgray.net.shm import Segment
from distgray.net.tls import TLS_HANDSHAKE_BYTE, ServerTLS, TlsSocket, is_loopback
from distgray.scheduling.files import FileQueue, UnitState
from distgray.scheduling.strips import Policy
from distgray.wire import protocol as P

__all__ = ["Job", "Master", "MasterConfig", "WorkerState"]

log = logging.getLogger(__name__)

#: accept() errors that pass: out of descriptors or memory, or a peer that left before we took it.
TRANSIENT_ACCEPT_ERRORS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
)


class _Deadline:
    """Closes ``sock`` (waking any read on it) when ``seconds`` have passed, unless cancelled first."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.sock = sock
        self.expired = False
        self._lock = threading.Lock()
        self._cancelled = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self.expired = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
        self._timer.cancel()


@dataclass(frozen=True)
class MasterConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: bytes | None = None  # None: --no-auth
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S
    prefetch: int = PREFETCH
    strip_rows: int | None = None
    policy: Policy = field(default_factory=Policy)
    max_handshakes: int = MAX_HANDSHAKES
    max_handshakes_per_host: int = MAX_HANDSHAKES_PER_HOST
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    tls: ServerTLS | None = None  # None: plaintext from anywhere (--no-tls); loopback is always plaintext-ok
    verify_rows: int = VERIFY_ROWS  # rows of each strip recomputed here and compared (0: none)
    shared_memory: bool = True  # pixels by reference to workers that can read our memory
    png_row_above: bool = True  # send PNG strips the row above, so their first row filters well

    def cluster(self) -> ClusterConfig:
        return ClusterConfig(self.prefetch, self.strip_rows, self.policy, self.png_row_above)


class Master:
    """Accepts workers and converts arrays with them. ``start()``, ``run``/``submit``, ``close()``."""

    def __init__(self, config: MasterConfig) -> None:
        self.config = config
        self.cluster = Cluster(config.cluster())
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._guard = Guard(self.cluster, self._lock, self._work)
        self._links: dict[str, Connection] = {}
        self._handshaking: set[Channel] = set()
        self._admission = Admission(config.max_handshakes, config.max_handshakes_per_host)
        self._pixels = SharedPixels()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self.address: tuple[str, int] = (config.host, config.port)

    # ------------------------------------------------------------------ lifecycle
    def start(self, listener: socket.socket | None = None) -> tuple[str, int]:
        """Bind (or take ``listener``, already listening) and start accepting workers.

        Returns the bound (host, port)."""
        self._listener = listener if listener is not None else listen(self.config.host, self.config.port)
        self._listener.settimeout(0.5)
        self.address = self._listener.getsockname()[:2]
        self._pixels.open(self.config.shared_memory)
        self._spawn(self._accept_loop, "distgray-accept")
        return self.address

    def close(self, reason: str = "master shutting down") -> None:
        """Tell every worker BYE, close every connection and stop accepting."""
        with self._work:
            live = [(wid, self._links[wid]) for wid in self.cluster.close()]
            pending = list(self._handshaking)
            self._work.notify_all()
        for channel in pending:  # a peer mid-handshake hears BYE too, and must not delay shutdown
            with contextlib.suppress(DistgrayError):
                channel.settimeout(CLOSE_GRACE_S)
                channel.send(P.Bye(reason))
            channel.close()
        # A graceful close: BYE, then half-close so the worker sees end-of-stream after it, while
        # its reader keeps draining what the worker was sending (closing outright would reset the
        # connection under a worker mid-send, and it would never read the BYE).
        for _, link in live:
            with contextlib.suppress(DistgrayError):
                link.channel.settimeout(CLOSE_GRACE_S)
                link.channel.send(P.Bye(reason))
            link.channel.half_close()
        for _, link in live:
            if link.reader is not None:
                link.reader.join(timeout=CLOSE_GRACE_S)
            link.drop(WorkerState.GONE, reason)
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes a thread blocked in accept() at once (Linux)
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        for t in self.threads():
            t.join(timeout=5.0)
        self._pixels.close()

    def __enter__(self) -> Master:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def threads(self) -> list[threading.Thread]:
        """The master's threads still running (accept, and a writer and reader per worker)."""
        with self._threads_lock:
            return [t for t in self._threads if t.is_alive()]

    def _spawn(self, target: Any, name: str, *args: Any) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        with self._threads_lock:  # spawned from the accept loop and from connection threads
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        return t

    # ------------------------------------------------------------------ queries
    @property
    def workers(self) -> dict[str, WorkerBook]:
        """Every worker of this run, departed ones included (read-only: the cluster owns them)."""
        return self.cluster.workers

    @property
    def job(self) -> Job | None:
        return self.cluster.job

    def live_workers(self) -> list[WorkerBook]:
        with self._lock:
            return self.cluster.live()

    def snapshot(self) -> dict[str, Any]:
        """Workers and the current job's progress, copied under the lock (the status page)."""
        with self._lock:
            heard = {wid: link.channel.last_recv for wid, link in self._links.items()}
            return self.cluster.snapshot(time.monotonic(), heard)

    def wait_for_change(self, timeout: float) -> None:
        """Sleep until a result, a join or a loss changes something, or ``timeout`` passes."""
        with self._work:
            self._work.wait(timeout)

    def wait_for_workers(self, n: int, timeout: float | None = None) -> bool:
        """Block until at least ``n`` workers are connected (or the timeout passes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._work:
            while len(self.cluster.live()) < n:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or self.cluster.closing:
                    return False
                self._work.wait(timeout=0.5 if left is None else min(left, 0.5))
            return True

    def file_states(self) -> dict[int, tuple[UnitState, str | None, str | None, float | None]]:
        """Each unit of the current batch: (state, worker, error, seconds of its last attempt)."""
        with self._lock:
            return self.cluster.file_states()

    # ------------------------------------------------------------------ jobs
    def submit(
        self,
        pixels: U8Array,
        name: str = "image",
        *,
        encoding: Encoding | None = None,
        segment: Segment | None = None,
        rows_ready: int | None = None,
        store: RowStore | None = None,
        ops: str = "",
    ) -> Job:
        """Start converting ``pixels``; returns at once. One job runs at a time.

        ``encoding``: the output is encoded strip by strip (collect it with ``take_encoded``);
        ``segment``: ``pixels`` live in it (from ``share``/``pixel_buffer``);
        ``rows_ready``: only that many rows exist yet (more follow through ``rows_ready()``);
        ``store``: a streamed job's rows, given back as ``written()`` says they are in the file;
        ``ops``: the operation chain the workers run on each strip with its halo (``imaging.ops``;
        only workers that offer ``ops`` get its strips)."""
        with self._work:
            job = self.cluster.submit(
                pixels,
                name,
                time.monotonic(),
                encoding=encoding,
                segment=segment,
                rows_ready=rows_ready,
                store=store,
                ops=ops,
            )
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

    def rows_ready(self, job: Job, rows: int) -> None:
        """Rows [0, rows) of a streaming job's pixels are in place: they may be handed out."""
        with self._work:
            self.cluster.rows_ready(job, rows, time.monotonic())
            self._work.notify_all()

    def fail(self, job: Job, reason: str) -> None:
        """End ``job`` as failed (its pixels could not be loaded, say)."""
        with self._work:
            self.cluster.fail(job, reason, time.monotonic())
            self._work.notify_all()

    def written(self, job: Job, row: int) -> None:
        """Rows [0, row) of ``job``'s output are in its file (a streamed job lets their memory go)."""
        with self._lock:
            job.written(row)

    def rows_converted(self, job: Job) -> int:
        """The first row of ``job`` not yet converted: every row above it is in the output."""
        with self._lock:
            return job.scheduler.done_frontier()

    def take_encoded(self, job: Job, row: int) -> list[tuple[int, EncodedStrip]]:
        """Encoded strips of ``job`` that continue the file from ``row``, in order (the writer's)."""
        with self._lock:
            return job.take_encoded(row)

    def submit_files(self, queue: FileQueue) -> None:
        """Hand a batch's whole-file units to the workers (those that offer ``file-gray``)."""
        with self._work:
            self.cluster.submit_files(queue)
            self._work.notify_all()

    def pixel_buffer(
        self, shape: tuple[int, ...], *, when_used: bool = False, sparse: bool = False
    ) -> tuple[U8Array, Segment | SparseRows | None]:
        """An uninitialised uint8 array of ``shape`` for a job's pixels: in a new shared-memory
        segment if this master offers shared memory (``when_used``: and a live worker reads it),
        else in private memory. The caller closes the segment when the job is over. ``sparse``:
        memory only for the rows in a streamed job's window (see ``SharedPixels.buffer``)."""
        with self._lock:
            wanted = not when_used or self.cluster.reads_shared_memory()
        return self._pixels.buffer(shape, wanted, sparse)

    def share(self, pixels: U8Array) -> tuple[U8Array, Segment | None]:
        """``pixels`` copied into a new shared-memory segment, if any live worker can read ours;
        otherwise ``pixels`` itself. The caller closes the segment when the job is over."""
        shared, segment = self.pixel_buffer(pixels.shape, when_used=True)
        if not isinstance(segment, Segment):
            return pixels, None
        shared[...] = pixels
        return shared, segment

    # ------------------------------------------------------------------ accepting
    def _accept_loop(self) -> None:
        assert self._listener is not None
        backoff = ACCEPT_BACKOFF_S
        last_logged = last_refusal_log = 0.0
        refusals = 0
        while not self.cluster.closing:
            try:
                sock, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self.cluster.closing or exc.errno not in TRANSIENT_ACCEPT_ERRORS:
                    if not self.cluster.closing:
                        log.error("accept failed for good: %s", exc)
                    return
                # Out of file descriptors (or buffers): keep the listener, wait, try again (as
                # asyncio and Tornado do); one line a second at most.
                now = time.monotonic()
                if now - last_logged >= 1.0:
                    log.warning("accept failed: %s; retrying in %.2f s", exc.strerror or exc, backoff)
                    last_logged = now
                time.sleep(backoff)
                backoff = min(ACCEPT_BACKOFF_CAP_S, backoff * 2)
                continue
            backoff = ACCEPT_BACKOFF_S
            host = str(addr[0])
            with self._lock:
                refused = self._admission.admit(host)
            if refused is not None:
                # Told why, without waiting (the send buffer of a fresh socket is empty), then
                # closed; logged once a second at most (a flood must not flood the log too).
                now = time.monotonic()
                refusals += 1
                if now - last_refusal_log >= 1.0:
                    more = f" ({refusals - 1} more since the last such line)" if refusals > 1 else ""
                    log.warning("connection %s:%d: refused: %s%s", host, addr[1], refused, more)
                    last_refusal_log, refusals = now, 0
                with contextlib.suppress(OSError):
                    sock.setblocking(False)
                    sock.send(P.encode_frame(P.Error(P.ErrorCode.BUSY, f"master busy: {refused}; retry later"), 0))
                sock.close()
                continue
            self._spawn(self._serve_worker, f"distgray-conn-{addr[1]}", sock, host, f"{host}:{addr[1]}")

    def _serve_worker(self, sock: socket.socket, host: str, address: str) -> None:
        # One deadline for the whole handshake, TLS included: a peer that sends a byte every few
        # seconds must not keep its slot (a per-read timeout would let it, for ever).
        holder = _Deadline(sock, self.config.handshake_timeout_s)
        try:
            channel = self._secure(sock, host, address, holder)
        except (OSError, DistgrayError) as exc:
            holder.cancel()
            with self._lock:
                self._admission.release(host)
            if not self.cluster.closing:
                log.warning("connection %s: refused: %s", address, exc)
            with contextlib.suppress(OSError):
                sock.close()
            return
        with self._lock:
            if self.cluster.closing:
                self._admission.release(host)
                holder.cancel()
                channel.close()
                return
            self._handshaking.add(channel)
        try:
            hello, welcome = server_handshake(channel, self.config.token, self._welcome)
        except (DistgrayError, ValueError) as exc:
            if not self.cluster.closing:
                why = "handshake not finished in time" if holder.expired else exc
                log.warning("connection %s: refused: %s", address, why)
            channel.close()
            return
        finally:
            holder.cancel()
            with self._lock:
                self._admission.release(host)
                self._handshaking.discard(channel)
        if holder.expired:
            channel.close()
            return
        wid = welcome.worker_id
        channel.peer = f"worker {wid}"
        channel.settimeout(self.config.heartbeat_timeout_s)
        link = Connection(
            wid, channel, self._guard, self._pixels, self.config.heartbeat_interval_s, self.config.verify_rows
        )
        with self._work:
            joined = self.cluster.join(wid, address, hello.capabilities, time.monotonic(), secure=channel.secure)
            if joined is not None:  # close() says BYE to joined workers; a late one hears it here
                self._links[wid] = link
                self._work.notify_all()
        if joined is None:
            with contextlib.suppress(DistgrayError):
                channel.send(P.Bye("master shutting down"))
            channel.close()
            return
        log.info("worker %s: joined from %s%s", wid, address, " over TLS" if channel.secure else "")
        link.reader = self._spawn(link.read, f"distgray-read-{wid}")
        try:
            link.offer_shm(hello.capabilities)
        except DistgrayError as exc:
            link.drop(WorkerState.LOST, str(exc))
            return
        link.writer()

    def _secure(self, sock: socket.socket, host: str, address: str, holder: _Deadline) -> Channel:
        """The connection as a channel: TLS if the peer starts a ClientHello, plaintext only from
        loopback (or with ``--no-tls``). Raises OSError or DistgrayError when refused."""
        sock.settimeout(self.config.handshake_timeout_s)
        first = sock.recv(1, socket.MSG_PEEK)
        if not first:
            raise PeerDisconnected("closed before saying anything")
        tls = self.config.tls
        if first[0] == TLS_HANDSHAKE_BYTE:
            if tls is None:
                raise ProtocolError("asked for TLS, but this master runs with --no-tls")
            try:
                secure = TlsSocket(sock, tls.context, server_side=True)
            except ssl.SSLError as exc:
                raise ProtocolError(f"TLS handshake failed: {exc.reason or exc}") from exc
            return Channel(secure, peer=address, timeout=self.config.handshake_timeout_s)
        if tls is not None and not is_loopback(host):
            with contextlib.suppress(OSError):
                sock.sendall(
                    P.encode_frame(
                        P.Error(
                            P.ErrorCode.TLS_REQUIRED,
                            "this master takes workers from other machines over TLS only:"
                            " run the worker with the --tls-fingerprint the master printed",
                        ),
                        0,
                    )
                )
            raise ProtocolError("plaintext from another machine (TLS is required; the master runs without --no-tls)")
        return Channel(sock, peer=address, timeout=self.config.handshake_timeout_s)

    def _welcome(self, hello: P.Hello, proof: bytes) -> P.Welcome:
        with self._lock:
            wid = self.cluster.name_worker(hello.worker_id)
        cfg = self.config
        return P.Welcome(
            proof, int(cfg.heartbeat_interval_s * 1000), int(cfg.heartbeat_timeout_s * 1000), cfg.prefetch, wid
        )
