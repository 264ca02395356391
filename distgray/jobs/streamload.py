"""An input decoding band by band in the background while the workers convert its first rows.

:class:`StreamDecode` runs a band reader (:func:`pngstream.decode_into`,
:func:`tiffbands.decode_into`) on its own thread and publishes each band's rows to the engine's
job once the job is attached, so the job may wait for its workers (``--min-workers``) while
decoding has already begun.

With a *window* (a streamed job, whose image need not fit in memory) the reader also waits: it
decodes a band only while the rows decoded and not yet written to the output stay within
``window_rows``, and asks the buffer to commit each band's memory before it is written into.
The writer tells it, through :meth:`written`, how far the output file has come.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from distgray.engines.base import Engine, PixelBuffer, RunningJob
from distgray.errors import ImageError
from distgray.imaging.kernel import U8Array
from distgray.storage.places import Place

log = logging.getLogger(__name__)

#: A band reader: decode into ``out``, calling ``ready(rows_done)`` after each band.
Reader = Callable[[U8Array, Callable[[int], None]], None]


class StreamDecode:
    def __init__(
        self,
        path: Place,
        read: Reader,
        out: U8Array,
        engine: Engine,
        *,
        buffer: PixelBuffer | None = None,
        window_rows: int | None = None,
        band_rows: int = 128,
        preview_side: int = 0,
    ) -> None:
        self.path, self.read, self.out, self.engine = path, read, out, engine
        self.height = out.shape[0]
        self.rows = 0
        self.error: ImageError | None = None
        self.buffer, self.window_rows, self.band_rows = buffer, window_rows, band_rows
        self._written = 0
        self._stopped = False
        # A streamed job's rows do not stay: every ``step``-th row and column is kept, as decoded,
        # for the page's previews (``preview_side``: at least twice the preview's longest side).
        height, width = out.shape[:2]
        self._step = max(1, -(-max(height, width) // preview_side)) if preview_side else 0
        self.preview: U8Array | None = None
        if self._step:
            self.preview = np.empty((-(-height // self._step), -(-width // self._step), 3), dtype=np.uint8)
        self._previewed = 0
        self._job: RunningJob | None = None
        self._room = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="distgray-decode", daemon=True)

    def start(self) -> StreamDecode:
        self._commit(0)
        self._thread.start()
        return self

    def attach(self, job: RunningJob) -> None:
        """From now on, decoded rows are the job's to hand out (and a decoding error fails it)."""
        with self._room:
            self._job, rows, error = job, self.rows, self.error
        self.engine.rows_ready(job, rows)
        if error is not None:
            self.engine.cancel(job, str(error))

    def written(self, row: int) -> None:
        """Rows [0, row) are in the output file: the window moves on."""
        with self._room:
            if row > self._written:
                self._written = row
                self._room.notify_all()

    def stop(self) -> None:
        """The job is over (or failed): stop decoding at the next band."""
        with self._room:
            self._stopped = True
            self._room.notify_all()

    def join(self) -> None:
        """Wait for the decoding to end; raise its error, if any."""
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _commit(self, row: int) -> None:
        if self.buffer is not None and row < self.height:
            self.buffer.commit(row, min(self.height, row + self.band_rows))

    def _sample(self, rows: int) -> None:
        if self.preview is None or rows <= self._previewed:
            return
        first = -(-self._previewed // self._step) * self._step  # the next row on the grid
        if first < rows:
            sampled = self.out[first : rows : self._step, :: self._step, :3]
            self.preview[first // self._step : first // self._step + len(sampled)] = sampled
        self._previewed = rows

    def _ready(self, rows: int) -> None:
        self._sample(rows)
        with self._room:
            self.rows, job = rows, self._job
        if job is not None:
            self.engine.rows_ready(job, rows)
        if self.window_rows is not None and rows < self.height:
            with self._room:  # the next band must fit in the window behind the written rows
                while not self._stopped and rows + self.band_rows > self._written + self.window_rows:
                    self._room.wait()
                if self._stopped:
                    raise _Stopped
        self._commit(rows)

    def _run(self) -> None:
        try:
            self.read(self.out, self._ready)
        except _Stopped:
            pass
        except ImageError as exc:
            self._failed(exc)
        except OSError as exc:  # no room to commit a band (a full /dev/shm, say)
            self._failed(ImageError(f"{self.path}: no memory for the next band: {exc}"))
        except Exception as exc:  # a bug must fail this job with a message, not hang it
            log.debug("decoding %s", self.path, exc_info=True)
            self._failed(ImageError(f"{self.path}: cannot decode image: {type(exc).__name__}: {exc}"))

    def _failed(self, exc: ImageError) -> None:
        with self._room:
            self.error, job = exc, self._job
        if job is not None:
            self.engine.cancel(job, str(exc))


class _Stopped(BaseException):
    """Raised through the reader to end it early: the job no longer wants its rows. Not an
    Exception, so no reader's error handling takes it for a decoding error."""
