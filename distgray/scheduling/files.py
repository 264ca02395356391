"""Whole-file work units of a batch: who has which file, requeues, bounded retries. Pure.

A batch sends ordinary-sized images to workers as their encoded file bytes (FILE_TASK); the
worker decodes, converts and encodes, and returns the encoded file. This module only keeps the
books; the master calls it under its lock, and takes ``now`` from the caller like ``strips``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from distgray.scheduling.strips import MAX_ATTEMPTS
from distgray.storage.places import Place


class UnitState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class FileUnit:
    id: int
    source: Place  # a local path, or an object behind a URL
    output: Place
    format: str  # Pillow's name of the output format
    width: int  # from the file's header, before decoding
    height: int
    file_bytes: int
    quality: int = 0  # 0: the format's default
    png_level: int = 6
    state: UnitState = UnitState.PENDING
    worker: str | None = None  # the worker running it, or the one that did it
    tried_by: list[str] = field(default_factory=list)
    lost_on: list[str] = field(default_factory=list)  # workers lost while holding it, once each
    error: str | None = None
    sent_at: float | None = None
    done_at: float | None = None
    bytes_out: int = 0
    worker_seconds: float = 0.0  # decode + convert + encode, as the worker measured them

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def max_result_bytes(self) -> int:
        """The largest encoded gray file we accept back: gray + alpha, uncompressed, plus 1 MiB."""
        return 2 * self.pixels + (1 << 20)


class FileQueue:
    """The file units of one batch, in order. Not thread-safe: the master holds its lock."""

    def __init__(
        self,
        queue_id: int,
        units: Iterable[FileUnit],
        max_pixels: int,
        max_attempts: int = MAX_ATTEMPTS,
        ops: str = "",
    ):
        """``ops``: the operation chain every file gets after gray (``imaging.ops.spell``)."""
        self.id = queue_id
        self.units: dict[int, FileUnit] = {u.id: u for u in units}
        self.max_pixels = max_pixels
        self.ops = ops
        self.max_attempts = max_attempts
        self.requeued: list[dict[str, object]] = []

    @property
    def finished(self) -> bool:
        return all(u.state in (UnitState.DONE, UnitState.FAILED) for u in self.units.values())

    def states(self) -> dict[int, tuple[UnitState, str | None, str | None, float | None]]:
        """Each unit: (state, worker, error, seconds of its last attempt: sent -> done)."""
        return {u.id: (u.state, u.worker, u.error, _took(u.sent_at, u.done_at)) for u in self.units.values()}

    def next_for(self, worker_id: str, now: float) -> FileUnit | None:
        """The first pending unit, preferring one this worker has not failed before."""
        pending = [u for u in self.units.values() if u.state is UnitState.PENDING]
        unit = next((u for u in pending if worker_id not in u.tried_by), None) or next(iter(pending), None)
        if unit is not None:
            unit.state, unit.worker, unit.sent_at = UnitState.RUNNING, worker_id, now
            unit.tried_by.append(worker_id)
        return unit

    def done(self, unit_id: int, worker_id: str, now: float, bytes_out: int, worker_seconds: float) -> None:
        unit = self.units[unit_id]
        unit.state, unit.worker, unit.done_at = UnitState.DONE, worker_id, now
        unit.bytes_out, unit.worker_seconds = bytes_out, worker_seconds

    def failed(self, unit_id: int, reason: str, now: float) -> None:
        """A failure that another worker would repeat (bad input, cannot write): final."""
        unit = self.units[unit_id]
        unit.state, unit.error, unit.done_at = UnitState.FAILED, reason, now

    def attempt_lost(self, unit_id: int, worker_id: str, reason: str, now: float, *, counts: bool = True) -> bool:
        """The worker running a unit went away. Requeue it (True) or, after too many, fail it.

        ``counts``: the worker was lost (not departed), which counts once per worker id."""
        unit = self.units[unit_id]
        if unit.state is not UnitState.RUNNING or unit.worker != worker_id:
            return False
        self.requeued.append({"file": str(unit.source), "worker": worker_id, "reason": reason})
        if counts and worker_id not in unit.lost_on:
            unit.lost_on.append(worker_id)
        if len(unit.lost_on) >= self.max_attempts:
            self.failed(
                unit_id, f"failed on {len(unit.lost_on)} workers ({', '.join(unit.lost_on)}); last: {reason}", now
            )
            return False
        unit.state, unit.worker, unit.sent_at = UnitState.PENDING, None, None
        return True


def _took(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start
