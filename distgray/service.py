"""Jobs of one master run: a queue, their history, and running each one from file to file.

:class:`Service` owns the job records the status page shows. Images given on the command line and
images uploaded through the page (serve mode) become :class:`JobEntry` records; they run one at a
time, in order, through :meth:`Service.process`: load, wait for workers, convert on the master's
workers, save atomically, make preview thumbnails and the per-worker report.
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from distgray import fileio, imaging, jpegfast, jpegstrip, pngstream, pngstrip
from distgray.errors import DistgrayError, ImageError, TaskFailed
from distgray.master import Encoding, Job, Master
from distgray.report import format_summary, job_report, write_json_atomic
from distgray.shm import Segment
from distgray.streamload import StreamDecode

log = logging.getLogger("distgray")

#: An input decoded while its job runs, rather than loaded first.
Source = pngstream.PngLayout | jpegfast.JpegLayout


class JobState(enum.StrEnum):
    QUEUED = "queued"
    LOADING = "loading"
    WAITING = "waiting for workers"
    RUNNING = "running"
    SAVING = "saving"
    DONE = "done"
    FAILED = "failed"


@dataclass
class JobEntry:
    """One image's way through the master, as the status page and the history show it."""

    id: int
    source: Path
    output: Path
    format: str
    name: str
    file_bytes: int
    uploaded: bool = False
    state: JobState = JobState.QUEUED
    error: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None  # wall clock, for people
    finished_at: float | None = None
    job: Job | None = None  # the master's job while (and after) it converts
    report: dict[str, Any] | None = None
    thumbnails: dict[str, bytes] = field(default_factory=dict)  # "input"/"output" -> PNG

    @property
    def finished(self) -> bool:
        return self.state in (JobState.DONE, JobState.FAILED)

    def describe(self, detail: bool = True) -> dict[str, Any]:
        """JSON for the page. ``detail`` adds the per-worker summary (not the per-strip log, and
        no server-side paths: the page shows file names only)."""
        took = None
        if self.started_at is not None:
            took = round((self.finished_at or time.time()) - self.started_at, 3)
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "error": self.error,
            "file_bytes": self.file_bytes,
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "output": self.output.name,
            "uploaded": self.uploaded,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": took,
            "thumbnails": sorted(self.thumbnails),
            "download": self.state is JobState.DONE,
            "summary": _page_summary(self.report) if detail else None,
        }


def _page_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {k: v for k, v in report.items() if k not in ("strip_log", "input", "output")}


@dataclass(frozen=True)
class ServiceOptions:
    quality: int | None = None
    png_level: int = imaging.DEFAULT_PNG_LEVEL
    max_pixels: int = imaging.DEFAULT_MAX_PIXELS
    min_workers: int = 1
    timeout: float | None = None  # per job
    report: Path | None = None
    output_dir: Path = Path("results")
    upload_dir: Path = Path("results/uploads")
    max_upload_bytes: int = 512 << 20
    serve: bool = False  # accept uploads and keep running
    worker_command: str = ""  # how to start a worker, for the "no workers" message
    previews: bool = True  # thumbnails for the status page (~40 ms each for 8K): off without one
    strip_encoding: bool = True  # PNG/JPEG outputs encoded by the workers strip by strip


class Service:
    """The job queue and history of one master run. Thread-safe; the page reads it concurrently."""

    def __init__(self, master: Master, options: ServiceOptions, local_workers: list[subprocess.Popen[bytes]]) -> None:
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

    def _convert_whole(
        self, entry: JobEntry, loaded: imaging.LoadedImage, quiet: bool, stream: Source | None
    ) -> tuple[Job | None, float]:
        """Convert on the workers (unless already gray), then compose and save the output here."""
        job = None
        if loaded.kind is imaging.Kind.GRAY:
            log.info("%s: already grayscale (%s): copied unchanged, no workers needed", entry.source, loaded.mode)
        else:
            job = self._convert(entry, loaded, quiet, stream=stream)
        if "input" not in entry.thumbnails:
            self._preview(entry, "input", loaded)
        entry.state = JobState.SAVING
        image, notes = imaging.compose_output(loaded, job.output if job is not None else None, entry.format)
        for note in notes:
            log.warning("%s: %s", entry.output, note)
        t_save = time.monotonic()
        options = imaging.save_options(entry.format, self.options.quality, self.options.png_level)
        imaging.save_atomic(image, entry.output, entry.format, options)
        self._preview(entry, "output", image)
        return job, t_save

    def _strip_encoding(self, entry: JobEntry, loaded: imaging.LoadedImage) -> Encoding | None:
        """How the workers can encode this output strip by strip: PNG, or JPEG within its limits
        (gray only: an output keeping alpha is composed here)."""
        if not self.options.strip_encoding or loaded.kind is not imaging.Kind.COLOR:
            return None
        if loaded.has_alpha and entry.format == "PNG":
            return None
        if entry.format == "PNG":
            return Encoding("PNG", self.options.png_level)
        if entry.format == "JPEG" and max(loaded.width, loaded.height) <= jpegstrip.MAX_SIDE:
            quality = self.options.quality if self.options.quality is not None else imaging.DEFAULT_JPEG_QUALITY
            return Encoding("JPEG", quality)
        return None

    def _convert_encoded(
        self, entry: JobEntry, loaded: imaging.LoadedImage, quiet: bool, stream: Source | None, encoding: Encoding
    ) -> tuple[Job, float]:
        """An output made of strips the workers encoded, written in row order as they arrive
        (through a temporary file: a failed job leaves nothing behind)."""
        joiner: pngstrip.PngJoiner | jpegstrip.JpegJoiner
        if encoding.format == "PNG":
            joiner = pngstrip.PngJoiner(loaded.width, loaded.height, encoding.setting)
        else:
            joiner = jpegstrip.JpegJoiner(loaded.width, loaded.height, encoding.setting)
        done: list[tuple[Job, float]] = []

        def write(fh: BinaryIO) -> None:
            fh.write(joiner.head())
            row = 0

            def drain(job: Job) -> None:
                nonlocal row
                for stop, piece in self.master.take_encoded(job, row):
                    fh.write(joiner.strip(piece))
                    row = stop

            job = self._convert(entry, loaded, quiet, encoding=encoding, tick=drain, stream=stream)
            done.append((job, time.monotonic()))  # "saving": what is left once the job is done
            entry.state = JobState.SAVING
            drain(job)
            fh.write(joiner.tail())

        imaging.atomic_write(entry.output, write, f" {encoding.format}")
        return done[0]

    def _preview(
        self, entry: JobEntry, which: str, image: Image.Image | imaging.LoadedImage, gray: bool = False
    ) -> None:
        """A thumbnail for the page (of the input, if given a LoadedImage), unless previews are off."""
        if self.options.previews:
            if isinstance(image, imaging.LoadedImage):
                image = fileio.preview_of(image)
            entry.thumbnails[which] = fileio.thumbnail_png(image, gray=gray)

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

    def _convert(
        self,
        entry: JobEntry,
        loaded: imaging.LoadedImage,
        quiet: bool = False,
        *,
        encoding: Encoding | None = None,
        tick: Callable[[Job], None] | None = None,
        stream: Source | None = None,
    ) -> Job:
        """Run the job on the workers with a progress bar; ``tick(job)`` is called while it runs.

        With ``stream``, ``loaded`` has no pixels yet: they are decoded into a new buffer from
        now on, while the job waits for workers and runs (rows are handed out as they appear)."""
        opts, master = self.options, self.master
        deadline = None if opts.timeout is None else time.monotonic() + opts.timeout
        decode, segment = None, None
        try:
            if stream is not None:
                loaded.pixels, segment = master.pixel_buffer(stream.shape)
                if isinstance(stream, pngstream.PngLayout):
                    decode = StreamDecode(stream, loaded.pixels, master).start()
                elif not jpegfast.decode_into(stream, loaded.pixels):
                    _decode_with_pillow(loaded.pixels, entry.source, opts.max_pixels)
            self._wait_for_workers(entry, deadline)
            if stream is None:
                # In shared memory (if a worker can read ours), the shared copy replaces the original.
                assert loaded.pixels is not None
                loaded.pixels, segment = master.share(loaded.pixels)
            return self._run_job(entry, loaded, segment, quiet, encoding, tick, deadline, decode)
        finally:
            if segment is not None:
                segment.close()  # unlinked now; unmapped when the last array on it goes

    def _wait_for_workers(self, entry: JobEntry, deadline: float | None) -> None:
        opts, master = self.options, self.master
        if len(master.live_workers()) < opts.min_workers:
            entry.state = JobState.WAITING
            log.info("waiting for %d worker(s)...", opts.min_workers)
        procs = self.local_workers
        while not master.wait_for_workers(opts.min_workers, timeout=0.5):
            if procs and all(p.poll() is not None for p in procs) and len(procs) >= opts.min_workers:
                raise TaskFailed(f"local workers exited (codes {[p.returncode for p in procs]}) before joining")
            if deadline is not None and time.monotonic() > deadline:
                raise TaskFailed(f"timed out after {opts.timeout:g} s waiting for {opts.min_workers} worker(s)")

    def _run_job(
        self,
        entry: JobEntry,
        loaded: imaging.LoadedImage,
        segment: Segment | None,
        quiet: bool,
        encoding: Encoding | None,
        tick: Callable[[Job], None] | None,
        deadline: float | None,
        decode: StreamDecode | None,
    ) -> Job:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        opts, master = self.options, self.master
        assert loaded.pixels is not None
        rows_ready = 0 if decode is not None else None
        job = master.submit(loaded.pixels, entry.name, encoding=encoding, segment=segment, rows_ready=rows_ready)
        entry.job, entry.state = job, JobState.RUNNING
        if decode is not None:
            decode.attach(job)
        else:  # the preview is made while the workers convert (the master would only wait)
            self._preview(entry, "input", loaded)
        with (
            logging_redirect_tqdm(),
            tqdm(total=job.height, unit="rows", desc=entry.name, disable=True if quiet else None, leave=False) as bar,
        ):
            waiting = False
            while not job.wait(0.2):
                if tick is not None:
                    tick(job)
                bar.update(job.rows_done - bar.n)
                none_left = not master.live_workers()
                if none_left and not waiting and not quiet:  # once per episode, not every tick
                    log.warning(
                        "no workers connected: the job waits (%d/%d rows done). Start one with:\n    %s",
                        job.rows_done,
                        job.height,
                        opts.worker_command,
                    )
                waiting = none_left
                if deadline is not None and time.monotonic() > deadline:
                    raise TaskFailed(f"timed out after {opts.timeout:g} s ({job.rows_done}/{job.height} rows done)")
            bar.update(job.rows_done - bar.n)
        if decode is not None:
            decode.join()  # raises the decoding's error, if that is why the job failed
            self._preview(entry, "input", loaded)
        if job.failure:
            if opts.report:  # what happened is most useful when it went wrong
                entry.report = job_report(job, master)
                write_json_atomic(entry.report, opts.report)
            raise TaskFailed(f"job failed: {job.failure}")
        return job


def _decode_with_pillow(out: imaging.U8Array, source: Path, max_pixels: int) -> None:
    whole = imaging.load_image(source, max_pixels)
    if whole.pixels is None or whole.pixels.shape != out.shape:
        raise ImageError(f"{source}: decoders disagree about the image's shape")
    np.copyto(out, whole.pixels)


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
