"""The Dask engine: the same jobs on a Dask cluster (``--engine dask``, ``pip install 'distgray[dask]'``).

An adapter from the :class:`~distgray.engines.base.Engine` interface to a ``distributed.Client``
(an existing cluster's scheduler, or a ``LocalCluster`` the command line started). ``jobs/`` does
not know which engine runs its work.

What travels where:

* A strip's pixels go from this process straight to one worker (``scatter(direct=True)``), never
  through the scheduler; the task (:func:`~distgray.engines.dasktasks.convert_strip`) names them
  by key. Its answer (gray rows, or the strip encoded as PNG, JPEG or TIFF by the same code the
  built-in workers run) comes straight back: the client gathers from the workers
  (``direct_to_workers=True``; Dask's default would relay every result through the scheduler),
  falling back to the scheduler only for a worker it cannot reach. The scheduler sees keys and
  sizes only.
* A batch's whole file goes as its path when the workers can read it (tried first), else as its
  bytes (scattered the same way); the encoded gray file comes back and is written here,
  atomically, like the built-in engine's.

Faults: Dask reruns a task whose worker died when its inputs survive; when the strip's pixels
died with the worker (scattered data has no other copy) the task fails, and this engine sends the
strip again, from the rows it still holds, up to :data:`MAX_ATTEMPTS` times. Dask's own wire is
pickle between trusted peers: run it on a private network or with its TLS (``Security``).
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, LocalCluster

from distgray.config import DASK_CONNECT_TIMEOUT_S
from distgray.engines import daskjob, dasktasks
from distgray.engines.base import FileState, PixelBuffer, RunningJob
from distgray.engines.daskjob import DaskJob, DaskStrip
from distgray.errors import DistgrayError, ImageError
from distgray.imaging import files
from distgray.imaging import ops as imaging_ops
from distgray.imaging.encoded import EncodedStrip, Encoding
from distgray.imaging.kernel import U8Array
from distgray.imaging.sparse import SparseRows
from distgray.master.report import peak_rss_mb
from distgray.net import shm
from distgray.scheduling.files import FileQueue, FileUnit, UnitState
from distgray.storage.remote import Remote

log = logging.getLogger(__name__)

Future = Any  # distributed.Future, whose methods are not annotated

#: A strip is sent again after a failed attempt (its worker died with its pixels) this many times in all.
MAX_ATTEMPTS = 3
#: How often running strips are checked for pixels lost with a worker (futures that never complete).
SWEEP_S = 1.0
#: A strip or file that no worker takes (they are all gone, say) fails after this long.
SEND_RETRY_S = 30.0
#: Strips sent in one scatter at most (those waiting when the sender is free).
SEND_BATCH = 64
#: Answers fetched from the workers in one round at most.
GATHER_BATCH = 32
#: How long the scheduler's list of workers is reused before asking again.
WORKERS_TTL_S = 0.5
#: Bytes of input pixels in one strip by default, at most (a Dask task costs ~1-10 ms to run) ...
STRIP_BYTES = 8 << 20
#: ... and at least this many strips a worker, to spread them.
STRIPS_PER_WORKER = 4


def connect(address: str | None, local_workers: int) -> tuple[Client, LocalCluster | None]:
    """A client of the scheduler at ``address``, or of a LocalCluster of ``local_workers``
    processes (one thread each; all cores when 0) started here on 127.0.0.1. Raises
    DistgrayError when the scheduler cannot be reached."""
    cluster = None
    try:
        if address:
            return Client(address, timeout=DASK_CONNECT_TIMEOUT_S, direct_to_workers=True), None
        has_page = importlib.util.find_spec("bokeh") is not None  # Dask's dashboard needs bokeh
        cluster = LocalCluster(
            n_workers=local_workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0" if has_page else None,
            silence_logs=logging.WARNING,
        )
        return Client(cluster, direct_to_workers=True), cluster
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise DistgrayError(f"Dask: cannot reach {address or 'a local cluster'}: {exc}") from exc


@dataclass
class _Files:
    queue: FileQueue
    by_path: bool = True  # the workers read the inputs themselves until one cannot
    futures: dict[int, Future] = field(default_factory=dict)


class DaskEngine:
    """Jobs on a Dask cluster through ``client``; ``cluster``: a LocalCluster to close with it."""

    def __init__(
        self,
        client: Client,
        *,
        cluster: Any = None,
        strip_rows: int | None = None,
        png_row_above: bool = True,
        shared_memory: bool = True,
    ) -> None:
        self.client = client
        self.cluster = cluster
        self.strip_rows = strip_rows
        self.png_row_above = png_row_above
        # Pixels by reference for workers on this host, as the built-in engine's: when every
        # worker is (a LocalCluster, or a scheduler on loopback), until one cannot open a segment.
        self.shared_memory = shared_memory and shm.available() and self._all_local()
        self._lock = threading.Lock()
        self._change = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._workers_seen: dict[str, dict[str, Any]] = {}
        self._workers_at = -WORKERS_TTL_S
        self.job: DaskJob | None = None
        self._files: _Files | None = None
        self._answers: queue.Queue[tuple[str, Any, int, Future] | None] = queue.Queue()
        self._outbox: queue.Queue[tuple[DaskJob, DaskStrip] | None] = queue.Queue()
        self._collector = threading.Thread(target=self._collect, name="distgray-dask", daemon=True)
        self._collector.start()
        self._sender = threading.Thread(target=self._send_loop, name="distgray-dask-send", daemon=True)
        self._sender.start()

    # ------------------------------------------------------------------ the cluster
    def scheduler_address(self) -> str:
        scheduler = self.client.scheduler
        return str(scheduler.address) if scheduler is not None else "?"

    def dashboard_link(self) -> str | None:
        """Dask's own status page, if its scheduler serves one (it needs bokeh)."""
        try:
            if "dashboard" not in self.client.scheduler_info(n_workers=0).get("services", {}):
                return None
            return str(self.client.dashboard_link) or None
        except (AttributeError, KeyError, ValueError, OSError):
            return None

    def _workers(self) -> dict[str, dict[str, Any]]:
        """The scheduler's workers, asked at most every :data:`WORKERS_TTL_S` (a job's loop and
        the page ask often; each asking is a round trip to the scheduler)."""
        now = time.monotonic()
        with self._lock:
            if now - self._workers_at < WORKERS_TTL_S:
                return self._workers_seen
        info = self.client.scheduler_info(n_workers=-1)
        workers: dict[str, dict[str, Any]] = info.get("workers", {})
        with self._lock:
            self._workers_seen, self._workers_at = workers, time.monotonic()
        return workers

    def live_workers(self) -> int:
        return len(self._workers())

    def _all_local(self) -> bool:
        scheduler = self.client.scheduler
        address = str(scheduler.address) if scheduler is not None else ""
        return address.startswith(("tcp://127.", "inproc://")) or self.cluster is not None

    def wait_for_workers(self, n: int, timeout: float | None = None) -> bool:
        try:
            self.client.wait_for_workers(n, timeout=timeout)
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._workers_at = -WORKERS_TTL_S  # ask the scheduler afresh next time
        return True

    def wait_for_change(self, timeout: float) -> None:
        with self._change:
            self._change.wait(timeout)

    def workers_exited(self) -> str | None:
        return None  # Dask restarts a LocalCluster's workers; a remote cluster's come and go

    def close(self) -> None:
        self._answers.put(None)
        self._outbox.put(None)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    # ------------------------------------------------------------------ one image
    def pixel_buffer(self, shape: tuple[int, ...], sparse: bool = False) -> tuple[U8Array, PixelBuffer | None]:
        return shm.buffer(shape, self.shared_memory, sparse)

    def share(self, pixels: U8Array) -> tuple[U8Array, PixelBuffer | None]:
        """In shared memory for workers on this host; else as they are (strips are scattered)."""
        if not self.shared_memory:
            return pixels, None
        shared, segment = self.pixel_buffer(pixels.shape)
        if segment is None:
            return pixels, None
        shared[...] = pixels
        return shared, segment

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
        if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or not pixels.flags.c_contiguous:
            raise ValueError("pixels must be a C-contiguous (height, width, 3|4) uint8 array")
        store = buffer if streamed and isinstance(buffer, SparseRows | shm.Segment) else None
        if streamed and store is None:
            raise TypeError(f"a streamed job needs a sparse buffer of this engine, not {buffer!r}")
        height, width, channels = pixels.shape
        align = encoding.row_align if encoding is not None else 1
        # ~8 MB of pixels a strip (a task costs ~10 ms of Dask's time), but 4 strips a worker at least
        per_worker = -(-height // (STRIPS_PER_WORKER * max(1, self.live_workers())))
        rows = self.strip_rows or max(1, min(STRIP_BYTES // (width * channels), per_worker))
        rows = -(-rows // align) * align
        ready = height if rows_ready is None else rows_ready
        segment = buffer if isinstance(buffer, shm.Segment) else None
        job = DaskJob(next(self._ids), name, pixels, encoding, rows, ready, store, segment, ops)
        with self._lock:
            self.job = job
        self._send_ready(job)
        return job

    def rows_ready(self, job: RunningJob, rows: int) -> None:
        own = _own(job)
        with self._lock:
            own.rows_ready_now = max(own.rows_ready_now, rows)
        self._send_ready(own)

    def written(self, job: RunningJob, row: int) -> None:
        with self._lock:
            _own(job).written(row)

    def rows_converted(self, job: RunningJob) -> int:
        with self._lock:
            return _own(job).frontier()

    def cancel(self, job: RunningJob, reason: str) -> None:
        own = _own(job)
        with self._change:
            own.finish(reason)
            futures = [f for pair in own.futures.values() for f in pair if f is not None]
            own.futures.clear()
            self._change.notify_all()
        if futures:
            self.client.cancel(futures)

    def take_encoded(self, job: RunningJob, row: int) -> list[tuple[int, EncodedStrip]]:
        own = _own(job)
        taken = []
        with self._lock:
            while (item := own.encoded.pop(row, None)) is not None:
                taken.append(item)
                row = item[0]
        return taken

    def _send_ready(self, job: DaskJob) -> None:
        """Carve strips out of the rows ready and not yet sent, and send them."""
        align = job.encoding.row_align if job.encoding is not None else 1
        new: list[DaskStrip] = []
        with self._lock:
            # rows whose pixels exist, less a chain's halo below them until the last row is in
            ready = job.rows_ready_now if job.rows_ready_now >= job.height else job.rows_ready_now - job.support
            while job.rows_assigned < ready and not job.wait(0):
                stop = min(job.height, job.rows_assigned + job.strip_rows, ready)
                if stop < job.height:
                    stop -= stop % align
                if stop <= job.rows_assigned:
                    break  # wait for whole MCU rows / TIFF strips
                if stop < job.height and job.store is None and stop - job.rows_assigned < job.strip_rows:
                    break  # a whole strip, unless a streamed job's window holds fewer rows than one
                strip = DaskStrip(len(job.strips), job.rows_assigned, stop)
                job.strips.append(strip)
                job.rows_assigned = stop
                new.append(strip)
        for strip in new:
            self._outbox.put((job, strip))

    def _send_loop(self) -> None:
        """The sender thread: strips as they are carved (or given up on by a dead worker), sent in
        batches: one scatter of many strips moves them to the workers in parallel, where one
        scatter each would pay a round trip per strip, and nobody who hands rows over waits."""
        while (item := self._outbox.get()) is not None:
            batch = [item]
            while len(batch) < SEND_BATCH:
                try:
                    more = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._outbox.put(None)
                    break
                batch.append(more)
            try:
                self._send_strips(batch)
            except Exception:  # one batch's trouble must not stop the sender
                log.exception("dask engine: sending %d strips failed", len(batch))

    def _send_strips(self, batch: list[tuple[DaskJob, DaskStrip]]) -> None:
        batch = [(job, strip) for job, strip in batch if not job.wait(0)]
        if not batch:
            return
        sent = []
        halos: dict[tuple[int, int], dict[str, Any]] = {}
        for job, strip in batch:
            enc = job.encoding
            above = enc is not None and enc.format == "PNG" and self.png_row_above and strip.row_start > 0
            # With a chain, the strip comes with its halo (the row above a PNG strip inside it).
            halo_above, halo_below = (
                imaging_ops.halo_of(job.support, strip.row_start, strip.row_stop, job.height, above)
                if job.ops
                else (int(above), 0)
            )
            halos[job.id, strip.index] = (
                {"ops": job.ops, "halo_above": halo_above, "halo_below": halo_below} if job.ops else {}
            )
            pixels = job.pixels[strip.row_start - halo_above : strip.row_stop + halo_below]
            sent.append((job, strip, above, pixels))
        by_reference = [item for item in sent if item[0].segment is not None and self.shared_memory]
        sent = [item for item in sent if item[0].segment is None or not self.shared_memory]
        for job, strip, above, pixels in by_reference:
            assert job.segment is not None
            halo = halos[job.id, strip.index]
            offset = (strip.row_start - halo.get("halo_above", above)) * job.width * job.channels
            key = f"distgray-strip-{job.id}-{strip.index}-{strip.attempts}"
            last = strip.row_stop == job.height
            where = (job.segment.name, offset, pixels.shape)
            by_ref = self.client.submit(
                dasktasks.convert_shared,
                *where,
                strip.row_start,
                last,
                above,
                job.encoding,
                **halo,
                key=key,
                pure=False,
            )
            self._register(job, strip, pixels, None, by_ref)
        if not sent:
            return
        try:
            datas = self._scatter([pixels for _, _, _, pixels in sent])
            tasks = [
                self.client.submit(
                    dasktasks.convert_strip,
                    data,
                    strip.row_start,
                    strip.row_stop == job.height,
                    above,
                    job.encoding,
                    **halos[job.id, strip.index],
                    key=f"distgray-strip-{job.id}-{strip.index}-{strip.attempts}",
                    pure=False,
                    retries=0,
                )
                for (job, strip, above, _), data in zip(sent, datas, strict=True)
            ]
        except Exception as exc:  # no worker took them for SEND_RETRY_S, or the scheduler is gone
            with self._change:
                for job, strip, _, _ in sent:
                    job.finish(f"Dask: cannot send strip {strip.index}: {exc}")
                self._change.notify_all()
            return
        for (job, strip, _, pixels), data, task in zip(sent, datas, tasks, strict=True):
            self._register(job, strip, pixels, data, task)

    def _register(self, job: DaskJob, strip: DaskStrip, pixels: U8Array, data: Future | None, task: Future) -> None:
        with self._lock:
            strip.state, strip.attempts = "running", strip.attempts + 1
            strip.sent_s = time.monotonic() - job.started
            strip.bytes_in = pixels.nbytes if data is not None else 0  # by reference: no bytes moved
            job.futures[strip.index] = (data, task)
        task.add_done_callback(lambda f, j=job, i=strip.index: self._answers.put(("strip", j, i, f)))

    def _strip_failed(self, job: DaskJob, index: int, future: Future, reason: str) -> None:
        """An attempt at a strip failed: send it again, or after MAX_ATTEMPTS fail the job."""
        strip = job.strips[index]
        with self._change:
            current = job.futures.get(index)
            if job.wait(0) or current is None or current[1] is not future:
                return  # the job is over, or this attempt was already given up on
            job.futures.pop(index, None)
            if strip.attempts >= MAX_ATTEMPTS:
                job.finish(f"strip {index} (rows {strip.row_start}-{strip.row_stop - 1}) failed: {reason}")
                self._change.notify_all()
                return
            job.requeued.append({"strip": index, "worker": strip.worker or "?", "reason": reason})
            strip.state = "pending"
        log.warning("dask engine: strip %d failed (%s): sending it again", index, reason)
        self._outbox.put((job, strip))

    def _scatter(self, data: Any) -> Any:
        """``data`` straight to one worker (a list: each item to one, spread over them). A worker
        that just died may still be on the scheduler's list for a moment: try again (another
        will be picked) for SEND_RETRY_S."""
        deadline, pause = time.monotonic() + SEND_RETRY_S, 0.05
        while True:
            try:
                return self.client.scatter(data, direct=True, hash=False)
            # KeyError: the data reached a worker that died before the scheduler heard of it (its
            # update_data names a worker the scheduler no longer has): scatter again.
            except (OSError, TimeoutError, RuntimeError, KeyError) as exc:
                if time.monotonic() > deadline or self.client.status not in ("running", "connecting"):
                    raise
                log.info("dask engine: a worker did not take data (%s): trying another", exc)
                time.sleep(pause)
                pause = min(1.0, pause * 2)

    # ------------------------------------------------------------------ answers
    def _collect(self) -> None:
        while True:
            try:
                item = self._answers.get(timeout=SWEEP_S)
            except queue.Empty:
                self._sweep()
                continue
            items = [item]
            while item is not None and len(items) < GATHER_BATCH:  # the answers already here, too
                try:
                    item = self._answers.get_nowait()
                except queue.Empty:
                    break
                items.append(item)
            answers = [i for i in items if i is not None]
            results = self._gather([future for _, _, _, future in answers])
            for kind, owner, index, future in answers:
                try:
                    if kind == "strip":
                        self._strip_answer(owner, index, future, results)
                    else:
                        self._file_answer(owner, index, future, results)
                except Exception:  # one answer's trouble must not stop the others
                    log.exception("dask engine: handling a %s answer failed", kind)
            if None in items:
                return

    def _gather(self, futures: list[Future]) -> dict[str, Any]:
        """The results of the finished ``futures``, by key, fetched in one round (each fetch asks
        the scheduler where the data is, then the workers): {} when that fails, and each answer
        is then fetched on its own."""
        finished = [f for f in futures if f.status == "finished"]
        if len(finished) < 2:
            return {}
        try:
            values = self.client.gather(finished)
        except Exception:  # one of them lost with its worker: fetch one by one, as if alone
            return {}
        return {f.key: v for f, v in zip(finished, values, strict=True)}

    def _sweep(self) -> None:
        """Strips whose pixels died with their worker before the task ran: Dask cannot make them
        again (scattered data has no recipe), and their futures may never complete. Send again."""
        with self._lock:
            job = self.job
            running = list(job.futures.items()) if job is not None and not job.wait(0) else []
        for index, (data, task) in running:
            assert job is not None
            lost_pixels = data is not None and data.status in ("lost", "cancelled", "error")
            if task.status == "lost" or (task.status == "pending" and lost_pixels):
                why = f"its pixels were lost with their worker ({getattr(data, 'status', 'lost')})"
                self._strip_failed(job, index, task, why)

    def _strip_answer(self, job: DaskJob, index: int, future: Future, results: dict[str, Any]) -> None:
        if future.status != "finished":
            self._strip_failed(job, index, future, _why(future))
            return
        with self._lock:
            current = job.futures.get(index)
        if job.wait(0) or current is None or current[1] is not future:
            return  # the job is over, or this is an attempt already given up on
        strip = job.strips[index]
        try:
            done: dasktasks.StripDone | None = (
                results[future.key] if future.key in results else future.result(timeout=SEND_RETRY_S)
            )
        except Exception as exc:  # done, but its answer died with its worker before it got here
            self._strip_failed(job, index, future, f"its answer was lost ({type(exc).__name__}: {exc})")
            return
        if done is None:  # a worker that cannot see this host's shared memory: scatter from now on
            log.info("dask engine: a worker cannot read this host's shared memory: pixels are sent from now on")
            self.shared_memory = False
            with self._lock:
                job.futures.pop(index, None)
                strip.state = "pending"
            self._outbox.put((job, strip))
            return
        log.debug(
            "dask engine: strip %d (rows %d-%d) done by %s", index, strip.row_start, strip.row_stop - 1, done.worker
        )
        with self._change:
            job.futures.pop(index, None)
            strip.state, strip.worker, strip.seconds = "done", done.worker, done.seconds
            strip.done_s = time.monotonic() - job.started
            if done.piece is not None:
                job.encoded[strip.row_start] = (strip.row_stop, done.piece)
                strip.bytes_out = len(done.piece.data)
            elif done.gray is not None:
                job.output[strip.row_start : strip.row_stop] = done.gray
                strip.bytes_out = done.gray.nbytes
            if job.rows_assigned == job.height and all(s.state == "done" for s in job.strips):
                job.finish()
            self._change.notify_all()

    # ------------------------------------------------------------------ batches
    def submit_files(self, queue_: FileQueue) -> None:
        files_ = _Files(queue_)
        with self._lock:
            self._files = files_
        for unit in list(queue_.units.values()):
            self._send_file(files_, unit)

    def _send_file(self, files_: _Files, unit: FileUnit) -> None:
        # A path made absolute (the workers' working folder is not ours), or the URL's place
        # itself (its filesystem and options travel with it: Dask's peers are trusted).
        source: str | Remote | Future = unit.source if isinstance(unit.source, Remote) else os.path.abspath(unit.source)
        if not files_.by_path:
            try:
                data = unit.source.read_bytes()
            except OSError as exc:
                with self._change:
                    files_.queue.failed(unit.id, f"{unit.source}: cannot read: {exc.strerror}", time.monotonic())
                    self._change.notify_all()
                return
            try:
                source = self._scatter(data)
            except Exception as exc:  # no worker took it for SEND_RETRY_S
                with self._change:
                    files_.queue.failed(unit.id, f"{unit.source}: Dask: no worker took it: {exc}", time.monotonic())
                    self._change.notify_all()
                return
        queue_ = files_.queue
        args = (unit.source.name, unit.format, unit.quality, unit.png_level, queue_.max_pixels, queue_.ops)
        key = f"distgray-file-{files_.queue.id}-{unit.id}-{len(unit.tried_by)}"
        task = self.client.submit(dasktasks.convert_file, source, *args, key=key, pure=False)
        with self._lock:
            unit.state, unit.sent_at = UnitState.RUNNING, time.monotonic()
            unit.tried_by.append("dask")
            files_.futures[unit.id] = task
        task.add_done_callback(lambda f, q=files_, u=unit.id: self._answers.put(("file", q, u, f)))

    def _file_answer(self, files_: _Files, unit_id: int, future: Future, results: dict[str, Any]) -> None:
        unit = files_.queue.units[unit_id]
        now = time.monotonic()
        if future.status != "finished":  # its worker died (with its bytes, say): again, a few times
            reason = _why(future)
            with self._change:
                files_.futures.pop(unit_id, None)
                if len(unit.tried_by) >= MAX_ATTEMPTS:
                    files_.queue.failed(unit_id, f"{unit.source}: {reason}", now)
                    self._change.notify_all()
                    return
                files_.queue.requeued.append({"file": str(unit.source), "worker": "dask", "reason": reason})
            self._send_file(files_, unit)
            return
        done: dasktasks.FileDone = results[future.key] if future.key in results else future.result()
        if done.unreadable:  # the workers do not see this machine's files: send bytes from now on
            if files_.by_path:
                log.info("dask engine: workers cannot read %s (%s): sending file contents", unit.source, done.error)
            files_.by_path = False
            self._send_file(files_, unit)
            return
        error = done.error
        if done.data is not None:
            try:
                files.write_bytes_atomic(done.data, unit.output)
            except ImageError as exc:
                error = str(exc)
        with self._change:
            if error is None and done.data is not None:
                files_.queue.done(unit_id, done.worker, now, len(done.data), done.seconds)
            else:
                files_.queue.failed(unit_id, error or "failed", now)
            files_.futures.pop(unit_id, None)
            self._change.notify_all()

    def file_states(self) -> dict[int, FileState]:
        with self._lock:
            if self._files is None:
                return {}
            return self._files.queue.states()

    # ------------------------------------------------------------------ what the page and report show
    def snapshot(self) -> dict[str, Any]:
        workers = self._workers()
        with self._lock:
            job = self.job
            per = daskjob.per_worker(job) if job is not None else {}
            described = daskjob.describe_job(job) if job is not None else None
        return {
            "workers": daskjob.describe_workers(workers, per),
            "job": described,
            "engine": {"name": "dask", "dashboard": self.dashboard_link()},
        }

    def report(self, job: RunningJob) -> dict[str, Any]:
        own = _own(job)
        with self._lock:
            report = daskjob.job_report(own)
        workers_rss = self._workers_peak_rss()
        report.update(
            master_peak_rss_mb=peak_rss_mb(os.getpid()),
            local_worker_peak_rss_mb=max(workers_rss) if workers_rss else None,
        )
        return report

    def _workers_peak_rss(self) -> list[float]:
        try:
            answers = self.client.run(dasktasks.peak_rss_mb)
        except Exception:  # a worker leaving mid-call: no figure rather than no report
            return []
        return [float(v) for v in answers.values() if v is not None]


def _why(future: Future) -> str:
    if future.status == "cancelled":
        return "cancelled (its worker or its pixels were lost)"
    if future.status == "lost":
        return "lost with its worker"
    try:
        exc = future.exception(timeout=5)
    except Exception as other:
        return f"{type(other).__name__}: {other}"
    return f"{type(exc).__name__}: {exc}"


def _own(job: RunningJob) -> DaskJob:
    if not isinstance(job, DaskJob):
        raise TypeError(f"not a job of this engine: {job!r}")
    return job
