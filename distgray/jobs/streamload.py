"""A streamed PNG decoding in the background while the workers convert its first rows.

:class:`StreamDecode` runs :func:`pngstream.decode_into` on its own thread and publishes each
band's rows to the engine's job once the job is attached, so the job may wait for its workers
(``--min-workers``) while decoding has already begun.
"""

from __future__ import annotations

import logging
import threading

from distgray.engines.base import Engine, RunningJob
from distgray.errors import ImageError
from distgray.imaging import pngstream
from distgray.imaging.kernel import U8Array

log = logging.getLogger(__name__)


class StreamDecode:
    def __init__(self, layout: pngstream.PngLayout, out: U8Array, engine: Engine) -> None:
        self.layout, self.out, self.engine = layout, out, engine
        self.rows = 0
        self.error: ImageError | None = None
        self._job: RunningJob | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="distgray-decode", daemon=True)

    def start(self) -> StreamDecode:
        self._thread.start()
        return self

    def attach(self, job: RunningJob) -> None:
        """From now on, decoded rows are the job's to hand out (and a decoding error fails it)."""
        with self._lock:
            self._job, rows, error = job, self.rows, self.error
        self.engine.rows_ready(job, rows)
        if error is not None:
            self.engine.cancel(job, str(error))

    def join(self) -> None:
        """Wait for the decoding to end; raise its error, if any."""
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _ready(self, rows: int) -> None:
        with self._lock:
            self.rows, job = rows, self._job
        if job is not None:
            self.engine.rows_ready(job, rows)

    def _run(self) -> None:
        try:
            pngstream.decode_into(self.layout, self.out, self._ready)
        except ImageError as exc:
            self._failed(exc)
        except Exception as exc:  # a bug must fail this job with a message, not hang it
            log.debug("decoding %s", self.layout.path, exc_info=True)
            self._failed(ImageError(f"{self.layout.path}: cannot decode image: {type(exc).__name__}: {exc}"))

    def _failed(self, exc: ImageError) -> None:
        with self._lock:
            self.error, job = exc, self._job
        if job is not None:
            self.engine.cancel(job, str(exc))
