"""The master's side of whole-file work (FILE_TASK / FILE_RESULT), mixed into :class:`Master`.

Kept apart from the strip machinery it shares threads and locks with: a worker's writer offers
it a file when there is no strip to send, its reader hands it FILE_RESULT frames. The file's
bytes are read outside the lock just before sending; the returned bytes land in one buffer sized
by the (bounded) header and are written atomically to the unit's output.
"""

from __future__ import annotations

import logging
import threading
import time

from distgray import fileio
from distgray import protocol as P
from distgray.errors import ImageError, ProtocolError
from distgray.filequeue import FileQueue, FileUnit, UnitState
from distgray.state import WorkerConn, WorkerState

log = logging.getLogger(__name__)


class FileWork:
    """Mixin: needs ``self._work`` (the master's condition) and calls ``notify_all`` on it."""

    _work: threading.Condition
    files: FileQueue | None = None

    def submit_files(self, queue: FileQueue) -> None:
        """Hand a batch's whole-file units to the workers (those that offer ``file-gray``)."""
        with self._work:
            if self.files is not None and not self.files.finished:
                raise RuntimeError("a file batch is already running")
            self.files = queue
            self._work.notify_all()

    def file_states(self) -> dict[int, tuple[UnitState, str | None, str | None, float | None]]:
        """Each unit of the current batch: (state, worker, error, seconds of its last attempt),
        copied under the lock."""
        with self._work:
            units = self.files.units.values() if self.files is not None else ()
            return {u.id: (u.state, u.worker, u.error, _took(u.sent_at, u.done_at)) for u in units}

    def _take_file(self, w: WorkerConn) -> FileUnit | None:  # caller holds the lock
        if self.files is None or P.CAPABILITY_FILES not in w.capabilities:
            return None
        unit = self.files.next_for(w.id, time.monotonic())
        if unit is not None:
            w.files_in_flight[unit.id] = self.files.id
            w.state = WorkerState.BUSY
        return unit

    def _send_file(self, w: WorkerConn, unit: FileUnit) -> None:
        queue = self.files
        assert queue is not None
        try:
            data = unit.source.read_bytes()
        except OSError as exc:
            with self._work:
                w.files_in_flight.pop(unit.id, None)
                queue.failed(unit.id, f"{unit.source}: cannot read: {exc.strerror or exc}", time.monotonic())
                self._work.notify_all()
            return
        task = P.FileTask(queue.id, unit.id, len(data), queue.max_pixels, unit.format, unit.quality, unit.png_level)
        log.debug("worker %s: file %s (%d bytes)", w.id, unit.source, len(data))
        w.bytes_in += w.channel.send(task, data)

    def _file_sink(self, w: WorkerConn, message: P.FileResult) -> memoryview:
        with self._work:
            queue = self.files
            if w.files_in_flight.get(message.task_id) != message.job_id or queue is None:
                raise ProtocolError(
                    f"FILE_RESULT for batch {message.job_id} file {message.task_id}, not assigned to it"
                )
            unit = queue.units[message.task_id]
            if message.size > unit.max_result_bytes:
                raise ProtocolError(
                    f"FILE_RESULT of {message.size} bytes for a {unit.width}x{unit.height} image"
                    f" (limit {unit.max_result_bytes})"
                )
        return memoryview(bytearray(message.size))

    def _complete_file(self, w: WorkerConn, result: P.FileResult, payload: memoryview | None) -> None:
        with self._work:
            queue = self.files
            batch = w.files_in_flight.get(result.task_id)
            unit = queue.units[result.task_id] if queue is not None and batch == queue.id else None
        error = None
        if unit is not None and result.status is P.FileStatus.OK:
            assert payload is not None
            try:
                fileio.write_bytes_atomic(payload, unit.output)
            except ImageError as exc:
                error = str(exc)
        elif unit is not None:
            error = result.message or "the worker could not convert it"
        now = time.monotonic()
        with self._work:
            w.files_in_flight.pop(result.task_id, None)
            if not w.in_flight and not w.files_in_flight and w.state is WorkerState.BUSY:
                w.state = WorkerState.IDLE
            if unit is not None and queue is not None and unit.state is UnitState.RUNNING:
                seconds = (result.decode_us + result.compute_us + result.encode_us) / 1e6
                w.strips += 1
                w.bytes_out += P.PREFIX_BYTES + len(result.encode()) + result.size
                if error is None:
                    queue.done(unit.id, w.id, now, result.size, seconds)
                    if seconds > 0:
                        w.mp_per_s = unit.pixels / 1e6 / seconds
                else:
                    queue.failed(unit.id, error, now)
            self._work.notify_all()

    def _files_lost(self, w: WorkerConn, reason: str) -> list[int]:  # caller holds the lock
        queue, held = self.files, list(w.files_in_flight)
        w.files_in_flight.clear()
        if queue is None:
            return []
        now = time.monotonic()
        requeued = [uid for uid in held if queue.attempt_lost(uid, w.id, reason, now)]
        w.failures += len(requeued)
        return requeued


def _took(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start
