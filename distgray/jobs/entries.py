"""The records of a run's jobs (what the status page lists) and the job service's options."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distgray import config
from distgray.engines.base import RunningJob
from distgray.storage.places import Place


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
    source: Place  # a local path, or (streamed from the store) an object behind a URL
    output: Path
    format: str
    name: str
    file_bytes: int
    uploaded: bool = False
    pruned: bool = False  # its upload and output were removed (serve mode's budget)
    state: JobState = JobState.QUEUED
    error: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None  # wall clock, for people
    finished_at: float | None = None
    job: RunningJob | None = None  # the engine's job while (and after) it converts
    report: dict[str, Any] | None = None
    thumbnails: dict[str, bytes] = field(default_factory=dict)  # "input"/"output" -> PNG
    ops: str = ""  # the operation chain after gray (``imaging.ops.spell``), "" for gray only

    @property
    def finished(self) -> bool:
        return self.state in (JobState.DONE, JobState.FAILED)

    @property
    def downloadable(self) -> bool:
        """Done, and its output file is there."""
        return self.state is JobState.DONE and self.output.is_file()

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
            "ops": self.ops,
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
    png_level: int = config.DEFAULT_PNG_LEVEL
    max_pixels: int = config.DEFAULT_MAX_PIXELS
    min_workers: int = 1
    timeout: float | None = None  # per job
    report: Path | None = None
    output_dir: Path = Path(config.DEFAULT_OUTPUT_DIR)
    upload_dir: Path = Path(config.DEFAULT_OUTPUT_DIR) / "uploads"
    max_upload_bytes: int = config.MAX_UPLOAD_MB << 20
    keep_upload_bytes: int = config.KEEP_UPLOADS_MB << 20  # uploads + their outputs, at most
    keep_upload_s: float = config.KEEP_UPLOADS_HOURS * 3600
    serve: bool = False  # accept uploads and keep running
    worker_command: str = ""  # how to start a worker, for the "no workers" message
    previews: bool = True  # thumbnails for the status page (~40 ms each for 8K): off without one
    strip_encoding: bool = True  # PNG/JPEG outputs encoded by the workers strip by strip
    window_bytes: int = config.DEFAULT_WINDOW_MB << 20  # an image's pixels in memory, at most
    ops: str = ""  # the operation chain every job gets unless it names its own (--op, spelled)
    strip_rows: int | None = None  # fixed strip height (--strip-rows): a streamed window holds one
