"""What the page needs of the jobs: a :class:`JobBoard`, and the :class:`BoardEntry` it lists.

The page never sees the engine, the master or a socket: the few calls below are all it makes.
``distgray.jobs.service.Service`` is the board of a real run; page tests pass a small fake.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class BoardEntry(Protocol):
    """One job as the page shows it."""

    @property
    def output(self) -> Path: ...

    @property
    def thumbnails(self) -> dict[str, bytes]:
        """``"input"``/``"output"`` -> a PNG preview, once made."""
        ...

    @property
    def downloadable(self) -> bool:
        """Done, with its output file in place."""
        ...

    def describe(self, detail: bool = True) -> dict[str, Any]:
        """The job as JSON (no server-side paths)."""
        ...


class JobBoard(Protocol):
    @property
    def serve(self) -> bool:
        """Whether uploads are accepted (serve mode)."""
        ...

    @property
    def max_upload_bytes(self) -> int: ...

    @property
    def max_pixels(self) -> int: ...

    def status(self) -> dict[str, Any]:
        """Everything the page shows, as JSON: workers, the current job, the run's jobs."""
        ...

    def entry(self, job_id: int) -> BoardEntry | None: ...

    def upload_paths(self, filename: str, fmt: str) -> tuple[Path, Path]:
        """Fresh (upload, output) paths for an uploaded file (the upload's name is claimed)."""
        ...

    def enqueue_upload(self, source: Path, output: Path, fmt: str, name: str, ops: str | None = None) -> BoardEntry:
        """Queue an upload; ``ops``: its operation chain (spelled), else the run's."""
        ...

    def health(self) -> dict[str, Any]:
        """Liveness: ``{"status": "ok", "workers": N}``."""
        ...
