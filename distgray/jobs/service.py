"""Jobs of one run: a queue, their history, and running each one in order. The page's board.

:class:`Service` owns the job records the status page shows. Images given on the command line and
images uploaded through the page (serve mode) become :class:`JobEntry` records; they run one at a
time, in order, through a :class:`~distgray.jobs.convert.Converter` on the run's engine. The page
sees the service only through the few calls of ``distgray.web.board.JobBoard`` (status, one
entry, an upload, health), which it implements.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distgray import formats
from distgray.engines.base import Engine
from distgray.errors import DistgrayError
from distgray.jobs.convert import Converter
from distgray.jobs.entries import JobEntry, JobState, ServiceOptions
from distgray.jobs.report import silent
from distgray.storage import places
from distgray.storage.places import Place

log = logging.getLogger(__name__)

__all__ = ["JobEntry", "JobState", "Service", "ServiceOptions"]


class Service:
    """The job queue and history of one run. Thread-safe; the page reads it concurrently."""

    def __init__(self, engine: Engine, options: ServiceOptions, say: Callable[[str], None] = silent) -> None:
        self.engine = engine
        self.options = options
        self.converter = Converter(engine, options, say)
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._entries: dict[int, JobEntry] = {}
        self._ids = itertools.count(1)
        self.started_at = time.time()
        # Watch mode: what the watched folder holds (waiting, converting, done, failed), for the page.
        self.inbox: Callable[[], dict[str, Any]] | None = None

    # ------------------------------------------------------------------ the page's settings
    @property
    def serve(self) -> bool:
        return self.options.serve

    @property
    def max_upload_bytes(self) -> int:
        return self.options.max_upload_bytes

    @property
    def max_pixels(self) -> int:
        return self.options.max_pixels

    # ------------------------------------------------------------------ the queue
    def enqueue(
        self,
        source: Place,
        output: Path,
        fmt: str,
        *,
        name: str | None = None,
        uploaded: bool = False,
        ops: str | None = None,
    ) -> JobEntry:
        """``source``: a local file, or a TIFF behind a URL read by ranges (see bands.plan).
        ``ops``: the job's operation chain (spelled), else the run's (``--op``)."""
        size = places.size_of(source) or 0  # (unreadable: loading it says what is wrong, in order)
        with self._queued:
            entry = JobEntry(next(self._ids), source, output, fmt, name or source.name, size, uploaded)
            entry.ops = self.options.ops if ops is None else ops
            self._entries[entry.id] = entry
            self._queued.notify_all()
        return entry

    def enqueue_upload(self, source: Path, output: Path, fmt: str, name: str, ops: str | None = None) -> JobEntry:
        """An image uploaded through the page, stored at ``source`` (from :meth:`upload_paths`).

        Uploads and their outputs are kept within the budget (``keep_upload_bytes``, and
        ``keep_upload_s`` of age): the oldest finished ones are removed first, so that pages on
        other sites, or forgetful users, cannot fill the disk."""
        entry = self.enqueue(source, output, fmt, name=name, uploaded=True, ops=ops)
        self.prune_uploads(time.time())
        return entry

    def prune_uploads(self, now: float) -> list[int]:
        """Remove the files of finished uploads past the age or size budget. Returns their job ids."""
        with self._lock:
            uploads = [e for e in self._entries.values() if e.uploaded and not e.pruned]
        sizes = {e.id: _size(e.source) + _size(e.output) for e in uploads if isinstance(e.source, Path)}
        total = sum(sizes.values())
        removed: list[int] = []
        for entry in sorted((e for e in uploads if e.finished), key=lambda e: e.finished_at or 0):
            old = entry.finished_at is not None and now - entry.finished_at > self.options.keep_upload_s
            if not old and total <= self.options.keep_upload_bytes:
                continue
            for path in (entry.source, entry.output):
                if isinstance(path, Path):  # (uploads are local files)
                    path.unlink(missing_ok=True)
            entry.pruned = True
            total -= sizes[entry.id]
            removed.append(entry.id)
            log.info("job %d: upload and output removed (kept within --keep-uploads)", entry.id)
        return removed

    def next_queued(self, timeout: float) -> JobEntry | None:
        """The oldest queued job, waiting up to ``timeout`` seconds for one."""
        with self._queued:
            self._queued.wait_for(self._first_queued, timeout)
            return self._first_queued()

    def _first_queued(self) -> JobEntry | None:
        return next((e for e in self._entries.values() if e.state is JobState.QUEUED), None)

    def entry(self, job_id: int) -> JobEntry | None:
        with self._lock:
            return self._entries.get(job_id)

    def upload_paths(self, filename: str, fmt: str) -> tuple[Path, Path]:
        """Fresh (upload, output) paths for an uploaded file, never overwriting an earlier one."""
        stem = Path(filename).stem or "upload"
        suffix = Path(filename).suffix.lower() or formats.EXTENSIONS.get(fmt, ".png")
        with self._lock:
            for n in itertools.count(1):
                tag = "" if n == 1 else f"-{n}"
                upload = self.options.upload_dir / f"{stem}{tag}{suffix}"
                output = self.options.output_dir / formats.gray_name(stem, suffix, tag)
                if not upload.exists() and not output.exists():
                    upload.parent.mkdir(parents=True, exist_ok=True)
                    upload.touch()  # claim the name before the lock is released
                    return upload, output
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """Everything the page shows, as JSON: the engine's workers and job, and this run's jobs."""
        snap = self.engine.snapshot()
        with self._lock:
            entries = list(self._entries.values())
        current = next((e for e in entries if not e.finished and e.state is not JobState.QUEUED), None)
        job = snap["job"]
        shown = current or next((e for e in reversed(entries) if e.finished), None)
        progress = job if (shown is not None and shown.job is not None and job and job["id"] == shown.job.id) else None
        return {
            "serve": self.options.serve,
            "max_upload_bytes": self.options.max_upload_bytes,
            "max_pixels": self.options.max_pixels,
            "worker_command": self.options.worker_command,
            "uptime_s": round(time.time() - self.started_at, 1),
            "current": None if shown is None else {**shown.describe(), "progress": progress},
            "jobs": [e.describe(detail=False) for e in reversed(entries)],
            "workers": snap["workers"],
            # which engine runs the work, and its own page if it has one (Dask's dashboard)
            "engine": snap.get("engine", {"name": "builtin", "dashboard": None}),
            "inbox": self.inbox() if self.inbox is not None else None,
        }

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "workers": self.engine.live_workers()}

    @property
    def any_failed(self) -> bool:
        with self._lock:
            return any(e.state is JobState.FAILED for e in self._entries.values())

    # ------------------------------------------------------------------ running jobs
    def serve_forever(self, stop: threading.Event) -> None:
        """Run queued jobs in order until ``stop`` is set; a failed job does not stop the rest."""
        while not stop.is_set():
            entry = self.next_queued(timeout=0.5)
            if entry is None:
                continue
            try:
                self.process(entry)
            except DistgrayError as exc:
                log.error("job %d (%s) failed: %s", entry.id, entry.name, exc)
            except Exception as exc:  # a bug must cost one job, not the service
                log.error("job %d (%s) failed: internal error: %s: %s", entry.id, entry.name, type(exc).__name__, exc)
                log.debug("traceback", exc_info=True)

    def process(self, entry: JobEntry, quiet: bool = False) -> None:
        """Convert one queued image end to end (see :meth:`Converter.process`)."""
        self.converter.process(entry, quiet)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
