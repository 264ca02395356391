"""Jobs of one master run: a queue, their history, and running each one from file to file.

:class:`Service` owns the job records the status page shows. Images given on the command line and
images uploaded through the page (serve mode) become :class:`JobEntry` records; they run one at a
time, in order, through :meth:`Service.process`: load, wait for workers, convert on the master's
workers, save atomically, make preview thumbnails and the per-worker report.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from distgray import imaging, jpegfast, pngstream
from distgray.conversion import Conversion
from distgray.errors import DistgrayError
from distgray.jobs import JobEntry, JobState, ServiceOptions
from distgray.local_workers import WorkerProcess
from distgray.master import Job, Master
from distgray.report import format_summary, job_report, write_json_atomic

log = logging.getLogger("distgray")

__all__ = ["JobEntry", "JobState", "Service", "ServiceOptions", "peak_rss_mb"]


class Service(Conversion):
    """The job queue and history of one master run. Thread-safe; the page reads it concurrently."""

    def __init__(self, master: Master, options: ServiceOptions, local_workers: list[WorkerProcess]) -> None:
        self.master = master
        self.options = options
        self.local_workers = local_workers
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._entries: dict[int, JobEntry] = {}
        self._ids = itertools.count(1)
        self.started_at = time.time()

    # ------------------------------------------------------------------ the queue
    def enqueue(
        self, source: Path, output: Path, fmt: str, *, name: str | None = None, uploaded: bool = False
    ) -> JobEntry:
        try:
            size = source.stat().st_size
        except OSError:
            size = 0  # load_image reports what is wrong with it, in order, like any other failure
        with self._queued:
            entry = JobEntry(next(self._ids), source, output, fmt, name or source.name, size, uploaded)
            self._entries[entry.id] = entry
            self._queued.notify_all()
        return entry

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
        suffix = Path(filename).suffix.lower() or imaging.EXTENSIONS.get(fmt, ".png")
        with self._lock:
            for n in itertools.count(1):
                tag = "" if n == 1 else f"-{n}"
                upload = self.options.upload_dir / f"{stem}{tag}{suffix}"
                output = self.options.output_dir / f"{stem}{tag}_gray{suffix}"
                if not upload.exists() and not output.exists():
                    upload.parent.mkdir(parents=True, exist_ok=True)
                    upload.touch()  # claim the name before the lock is released
                    return upload, output
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """Everything the page shows, as JSON: the master's workers and job, and this run's jobs."""
        snap = self.master.snapshot()
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
        }

    # ------------------------------------------------------------------ running a job
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
        """Convert one queued image end to end. Raises on failure, after marking the entry failed.

        ``quiet`` (batches): no progress bar or summary table of its own."""
        opts = self.options
        t0 = time.monotonic()
        entry.started_at, entry.state = time.time(), JobState.LOADING
        try:
            # A plain RGB PNG is decoded band by band while the workers start on it, a YCbCr JPEG
            # straight into the job's buffer (both in _convert); anything else is loaded here.
            stream = pngstream.probe(entry.source, opts.max_pixels) or jpegfast.probe(entry.source, opts.max_pixels)
            if stream is not None:
                fmt = "PNG" if isinstance(stream, pngstream.PngLayout) else "JPEG"
                loaded = imaging.LoadedImage(entry.source, fmt, "RGB", imaging.Kind.COLOR, stream.width, stream.height)
            else:
                loaded = imaging.load_image(entry.source, opts.max_pixels)
            t_loaded = time.monotonic()
            entry.width, entry.height, entry.mode = loaded.width, loaded.height, loaded.mode
            for note in loaded.notes:
                log.info("%s: %s", entry.source, note)
            job: Job | None
            encoding = self._strip_encoding(entry, loaded)
            if encoding is not None:
                # Encoded by the workers strip by strip and written as the strips come in.
                job, t_save = self._convert_encoded(entry, loaded, quiet, stream, encoding)
                self._preview(entry, "output", loaded, gray=True)
            else:
                job, t_save = self._convert_whole(entry, loaded, quiet, stream)
            t_saved = time.monotonic()
            self._finish_report(entry, job, t0, t_loaded, t_save, t_saved, quiet)
            entry.state = JobState.DONE
        except BaseException as exc:
            entry.state = JobState.FAILED
            entry.error = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            raise
        finally:
            entry.finished_at = time.time()
            if entry.job is not None:
                entry.job.release()

    def _finish_report(
        self, entry: JobEntry, job: Job | None, t0: float, t_loaded: float, t_save: float, t_saved: float, quiet: bool
    ) -> None:
        total = t_saved - t0
        if job is None:
            if not quiet:
                print(f"{entry.output}: written ({entry.width}x{entry.height}, {entry.mode}) in {total:.3f} s")
            return
        rss = [r for r in (peak_rss_mb(p.pid) for p in self.local_workers) if r is not None]
        report = job_report(job, self.master)
        report.update(
            output=str(entry.output),
            input=str(entry.source),
            total_s=round(total, 4),
            load_s=round(t_loaded - t0, 4),
            save_s=round(t_saved - t_save, 4),
            master_peak_rss_mb=peak_rss_mb(os.getpid()),
            local_worker_peak_rss_mb=max(rss) if rss else None,
        )
        entry.report = report
        if not quiet:
            print(format_summary(report), flush=True)
        if self.options.report:
            write_json_atomic(report, self.options.report)


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a live process in MB (Linux /proc VmHWM); None where unknown."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None
