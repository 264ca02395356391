"""The master's side of strip results (RESULT, PNG_RESULT, JPEG_RESULT), mixed into :class:`Master`.

A result is checked against the task it answers before a byte of its payload is read; gray rows
land straight in the job's output array (``recv_into``), encoded strips in a buffer of their own
sized by the (bounded) header. The first copy of a strip to complete counts; a late or backup copy
is read into scratch and dropped.
"""

from __future__ import annotations

import threading
import time

from distgray import protocol as P
from distgray.errors import ProtocolError
from distgray.master_strips import StripWire
from distgray.pngstrip import EncodedStrip
from distgray.state import StripRecord, WorkerConn, WorkerState


class ResultWork(StripWire):
    """Mixin: needs ``self._lock``/``self._work`` (the master's lock and condition) and ``self.job``."""

    _work: threading.Condition

    def _result_sink(self, w: WorkerConn, message: P.Message) -> memoryview | None:
        """Where a result's payload lands: its rows of the output (RESULT) or a buffer of its own
        (PNG_RESULT, bounded by the header's checks), or scratch if the strip is already done."""
        if not isinstance(message, P.Result | P.PngResult | P.JpegResult):
            raise ProtocolError(f"unexpected payload on {type(message).__name__}")
        with self._lock:
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
            w.result_started = time.monotonic()
            job = self.job
            if job is None or job.id != message.job_id:
                return None  # a backup copy for a job already finished: read and discard
            if job.scheduler.strips[message.strip_id].done_by is not None:
                return None  # another copy already won: read and discard
            if isinstance(message, P.PngResult | P.JpegResult):
                return memoryview(bytearray(message.payload_len))
            return job.output[task.row_start : task.row_stop].data.cast("B")

    def _complete(
        self, w: WorkerConn, result: P.Result | P.PngResult | P.JpegResult, payload: memoryview | None = None
    ) -> None:
        piece = None
        if isinstance(result, P.PngResult) and payload is not None:
            piece = EncodedStrip(payload.tobytes(), result.adler32, result.filtered_len)
        elif isinstance(result, P.JpegResult) and payload is not None:
            piece = EncodedStrip(payload.tobytes(), 0, result.row_stop - result.row_start)
        elif isinstance(result, P.Result) and self._still_open(result):  # its rows landed in the output
            piece = self._encode_here(self.job, result)
        now = time.monotonic()
        with self._work:
            job = self.job
            task = w.in_flight.pop((result.job_id, result.strip_id), None)
            if not w.in_flight and w.state is WorkerState.BUSY:
                w.state = WorkerState.IDLE
            self._work.notify_all()  # a prefetch slot is free
            if job is None or job.started is None or job.id != result.job_id or task is None:
                return  # dropped while its result arrived, or a late copy for a finished job
            sent_at = task.sent_at
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
                    round(sent_at - job.started, 6),
                    round(now - job.started, 6),
                    result.recv_us,
                    result.compute_us,
                    result.send_us,
                    counted,
                )
            )
            if job.scheduler.finished:
                job._finish()
