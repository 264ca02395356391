"""Which rows go to which worker: strip planning, assignment, requeue, bounded retries.

Pure: no sockets, threads or clocks; every method that needs the time takes ``now`` (seconds on
any monotonic clock). The master calls it under its own lock.

Rules this module keeps:
- every row of the image belongs to exactly one strip, and the final output takes each strip from
  exactly one completed attempt (the first result wins; later copies are discarded);
- a strip is never handed to a worker that already failed it;
- a strip whose attempts failed on ``max_attempts`` workers fails the job instead of looping.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

#: Strips of about this many source bytes: big enough that per-strip overhead (a round trip,
#: a few syscalls) is noise, small enough that 2+ workers each get many strips of an 8K image.
DEFAULT_STRIP_BYTES = 4 << 20
MAX_ATTEMPTS = 3


class StripState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"


@dataclass
class Strip:
    id: int
    row_start: int
    row_stop: int
    state: StripState = StripState.PENDING
    running_on: set[str] = field(default_factory=set)
    failed_on: list[str] = field(default_factory=list)
    done_by: str | None = None

    @property
    def rows(self) -> int:
        return self.row_stop - self.row_start


def plan_strips(
    height: int, row_bytes: int, *, strip_rows: int | None = None, target_bytes: int = DEFAULT_STRIP_BYTES
) -> list[tuple[int, int]]:
    """Split ``height`` rows into consecutive [start, stop) ranges that tile them exactly.

    ``strip_rows`` fixes the strip height; otherwise strips hold about ``target_bytes``.
    """
    if height <= 0 or row_bytes <= 0:
        raise ValueError(f"height and row_bytes must be positive, got {height}, {row_bytes}")
    if strip_rows is None:
        strip_rows = max(1, target_bytes // row_bytes)
    if strip_rows <= 0:
        raise ValueError(f"strip_rows must be positive, got {strip_rows}")
    return [(y, min(y + strip_rows, height)) for y in range(0, height, strip_rows)]


class Scheduler:
    """Hands out the strips of one job to pulling workers and tracks them to completion."""

    def __init__(self, ranges: list[tuple[int, int]], *, max_attempts: int = MAX_ATTEMPTS) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.strips = [Strip(i, a, b) for i, (a, b) in enumerate(ranges)]
        self.max_attempts = max_attempts
        self._pending: deque[int] = deque(range(len(self.strips)))
        self.rows_done = 0
        self.strips_done = 0
        self.requeued: list[dict[str, object]] = []
        self.failure: str | None = None

    @property
    def total_rows(self) -> int:
        return sum(s.rows for s in self.strips)

    @property
    def finished(self) -> bool:
        return self.failure is not None or self.strips_done == len(self.strips)

    def next_strip(self, worker_id: str, now: float) -> Strip | None:
        """The next pending strip this worker may take, now marked running on it; else None."""
        if self.finished:
            return None
        # Scan in queue order without reordering: strips this worker already failed stay where
        # they are (at the front, if requeued) for the next worker that may take them.
        for index, sid in enumerate(self._pending):
            strip = self.strips[sid]
            if worker_id not in strip.failed_on:
                del self._pending[index]
                strip.state = StripState.RUNNING
                strip.running_on.add(worker_id)
                return strip
        return None

    def complete(self, strip_id: int, worker_id: str, now: float) -> bool:
        """Record a result. Returns True if this result is the one that counts (first wins)."""
        strip = self.strips[strip_id]
        strip.running_on.discard(worker_id)
        if strip.state is StripState.DONE:
            return False
        strip.state = StripState.DONE
        strip.done_by = worker_id
        self.rows_done += strip.rows
        self.strips_done += 1
        return True

    def attempt_failed(self, strip_id: int, worker_id: str, now: float, reason: str) -> None:
        """The attempt of ``worker_id`` on a strip ended without a result: requeue or give up."""
        strip = self.strips[strip_id]
        if worker_id not in strip.running_on:
            return
        strip.running_on.discard(worker_id)
        if strip.state is StripState.DONE:
            return
        strip.failed_on.append(worker_id)
        self.requeued.append({"strip": strip_id, "worker": worker_id, "reason": reason, "at": now})
        if len(strip.failed_on) >= self.max_attempts:
            self.failure = (
                f"strip {strip_id} (rows {strip.row_start}-{strip.row_stop - 1}) failed on"
                f" {len(strip.failed_on)} workers ({', '.join(strip.failed_on)}); last: {reason}"
            )
            return
        if not strip.running_on:
            strip.state = StripState.PENDING
            self._pending.appendleft(strip_id)  # redo lost work first

    def worker_lost(self, worker_id: str, now: float, reason: str) -> list[int]:
        """Requeue every strip running on a worker that left; returns their ids."""
        lost = [s.id for s in self.strips if worker_id in s.running_on]
        for sid in reversed(lost):
            self.attempt_failed(sid, worker_id, now, reason)
        return lost
