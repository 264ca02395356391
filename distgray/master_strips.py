"""The master's strip-level choices, mixed into :class:`Master`: which task a worker gets, how its
pixels travel, and what happens to an encoded strip.

* PNG or JPEG output: workers that offer ``png-strip`` (``jpeg-strip``) get PNG_TASKs
  (JPEG_TASKs) and return encoded strips (PNG: with the row above, unless ``png_row_above`` is
  off); a worker without it gets a plain TASK and the master encodes its gray rows itself, so
  any worker can take part in any job.
* Shared memory: a worker that read back the probe (SHM_OFFER / SHM_ANSWER) gets tasks that name
  the job's segment instead of carrying pixels, when the job's pixels are in one.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time

import numpy as np

from distgray import jpegstrip, pngstrip, shm
from distgray import protocol as P
from distgray.imaging import U8Array
from distgray.scheduler import Strip
from distgray.state import Job, WorkerConn

log = logging.getLogger(__name__)

SHM_ANSWER_S = 2.0  # how long a worker's SHM_ANSWER may take before it is taken as "no"


class StripWire:
    """Mixin: needs ``self._lock``, and ``self._probe`` set by ``start()``."""

    _lock: threading.Lock
    _work: threading.Condition
    _probe: shm.Probe | None = None
    png_row_above: bool = True

    # ------------------------------------------------------------------ shared memory
    def _open_probe(self, enabled: bool) -> None:
        if not enabled or not shm.available():
            return
        shm.sweep_stale()
        try:
            self._probe = shm.Probe()
        except OSError as exc:  # debug: before "listening on", and TCP works anyway
            log.debug("shared memory unavailable (%s): all pixels go over TCP", exc)

    def _close_probe(self) -> None:
        if self._probe is not None:
            self._probe.close()

    def _offer_shm(self, w: WorkerConn) -> None:
        """Ask a worker that offers ``shm`` to prove it can read our memory (from its writer)."""
        if self._probe is not None and P.CAPABILITY_SHM in w.capabilities:
            with self._lock:
                w.shm_offered_at = time.monotonic()
            w.channel.send(P.ShmOffer(self._probe.name))

    def _probing(self, w: WorkerConn) -> bool:  # caller holds the lock
        """Whether ``w`` is yet to answer our offer: it gets no strips for that moment (at most
        ``SHM_ANSWER_S``), so that they all take the way it can read."""
        return w.shm_offered_at is not None and time.monotonic() - w.shm_offered_at < SHM_ANSWER_S

    def _shm_answered(self, w: WorkerConn, answer: P.ShmAnswer) -> None:
        ok = self._probe is not None and answer.ok and hmac.compare_digest(answer.probe, self._probe.secret)
        with self._work:
            w.shm, w.shm_offered_at = ok, None
            self._work.notify_all()
        log.info("worker %s: pixels by %s", w.id, "shared memory" if ok else "TCP")

    def share(self, pixels: U8Array) -> tuple[U8Array, shm.Segment | None]:
        """``pixels`` copied into a new shared-memory segment, if any live worker can read ours;
        otherwise ``pixels`` itself. The caller closes the segment when the job is over."""
        shared, segment = self.pixel_buffer(pixels.shape, when_used=True)
        if segment is None:
            return pixels, None
        np.copyto(shared, pixels)
        return shared, segment

    def pixel_buffer(self, shape: tuple[int, ...], *, when_used: bool = False) -> tuple[U8Array, shm.Segment | None]:
        """An uninitialised uint8 array of ``shape`` for a job's pixels: in a new shared-memory
        segment if this master offers shared memory (``when_used``: and a live worker reads it),
        else in private memory. The caller closes the segment when the job is over."""
        with self._lock:
            wanted = self._probe is not None and (not when_used or any(w.shm for w in self._live()))
        nbytes = int(np.prod(shape))
        if wanted:
            try:
                segment = shm.Segment(nbytes)
                return segment.array(shape), segment
            except OSError as exc:
                log.info("no room in shared memory for %d MB (%s): pixels go over TCP", nbytes >> 20, exc)
        return np.empty(shape, dtype=np.uint8), None

    def _live(self) -> list[WorkerConn]:
        raise NotImplementedError

    # ------------------------------------------------------------------ tasks
    def _task_for(self, w: WorkerConn, job: Job, strip: Strip) -> tuple[P.Task, memoryview | None]:
        """The task that gives ``strip`` to ``w``, and the payload to send with it (or None)."""
        enc = job.encoding
        png = enc is not None and enc.format == "PNG" and P.CAPABILITY_PNG in w.capabilities
        jpeg = enc is not None and enc.format == "JPEG" and P.CAPABILITY_JPEG in w.capabilities
        above = png and self.png_row_above and strip.row_start > 0
        first = strip.row_start - above
        segment, offset = "", 0
        if job.segment is not None and w.shm:
            segment, offset = job.segment.name, first * job.width * job.channels
        common = (job.id, strip.id, strip.row_start, strip.row_stop, job.width, job.channels, segment, offset)
        task: P.Task
        last = strip.row_stop == job.height
        if png and enc is not None:
            task = P.PngTask(*common, enc.setting, above, last)
        elif jpeg and enc is not None:
            task = P.JpegTask(*common, enc.setting, last)
        else:
            task = P.Task(*common)
        payload = None if segment else job.pixels[first : strip.row_stop].data
        return task, payload

    # ------------------------------------------------------------------ encoded strips
    job: Job | None

    def _still_open(self, result: P.Result) -> bool:
        """Whether ``result``'s strip is still to be done in the current job (its rows are ours)."""
        with self._lock:
            job = self.job
            return job is not None and job.id == result.job_id and not job.scheduler.strips[result.strip_id].done_by

    def _encode_here(self, job: Job | None, result: P.Result) -> pngstrip.EncodedStrip | None:
        """A plain RESULT for an encoded job (a worker that cannot encode strips): encode it here."""
        if job is None or job.encoding is None:
            return None
        rows = job.output[result.row_start : result.row_stop]
        last, enc = result.row_stop == job.height, job.encoding
        if enc.format == "JPEG":
            return jpegstrip.encode_strip(rows, enc.setting, result.row_start, last)
        return pngstrip.encode_strip(rows, enc.setting, has_above=False, first=result.row_start == 0, last=last)

    def rows_ready(self, job: Job, rows: int) -> None:
        """Rows [0, rows) of a streaming job's pixels are in place: they may be handed out."""
        with self._work:
            job.scheduler.set_rows_ready(rows)
            if rows >= job.height and job.input_ready_at is None:
                job.input_ready_at = time.monotonic()
            self._work.notify_all()

    def fail(self, job: Job, reason: str) -> None:
        """End ``job`` as failed (its pixels could not be loaded, say)."""
        with self._work:
            if not job.scheduler.finished:
                job.scheduler.failure = reason
                job._finish()
            self._work.notify_all()

    def take_encoded(self, job: Job, row: int) -> list[tuple[int, pngstrip.EncodedStrip]]:
        """Encoded strips of ``job`` that continue the file from ``row``, in order (the writer's)."""
        with self._lock:
            return job.take_encoded(row)
