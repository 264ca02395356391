"""Which rows go to which worker: speed-aware strip sizing, requeue, speculation, bounded retries.

Pure: no sockets, threads or clocks; every method that needs the time takes ``now`` (seconds on
any monotonic clock). The master calls it under its own lock.

The policy (parameters in :class:`Policy`):

1. Workers *pull*. A worker asking for work first gets a requeued strip (lost work is redone
   first), else a new strip carved from the top of the rows nobody has had yet.
2. A new strip's height follows the asking worker's measured speed: an EWMA of its rows/s, where
   a strip's time is what the worker spent receiving and converting it plus what the master spent
   receiving its result. It is sized to take about ``target_strip_s`` on that worker; a worker
   with no measurement yet gets one strip of ``initial_strip_bytes`` and nothing more until its
   result has measured it (a slow newcomer must not sit on two big strips).
3. Guided self-scheduling, aware of what each worker already holds: a strip never exceeds what
   the worker can finish by the time all workers, at their speeds, would finish the rows left
   (minus the rows it already holds), divided by ``tail_factor``. Strips shrink geometrically
   towards the end and all workers finish together; a slow worker holding enough is given
   nothing more for now rather than a strip everybody would wait for. ``min_strip_bytes``
   bounds the shrinking, since each strip costs a round trip.
4. Stragglers: when nothing is left to hand out, an idle worker gets a *backup copy* of a strip
   that has run more than ``speculate_after`` times its expected time on its worker, and at least
   ``speculate_min_s`` (a strip may wait behind another in its worker's prefetch queue, and early
   speed estimates are rough). The first result wins; the other is discarded (bit-identical).

Rules this module keeps:
- every row of the image belongs to exactly one strip, and the final output takes each strip from
  exactly one completed attempt (the first result wins; later copies are discarded);
- a strip is never handed to a worker that already failed it, nor twice to the same worker;
- a strip whose attempts failed on ``max_attempts`` workers fails the job instead of looping;
  only a worker *lost* while holding it counts, once per worker id (an id that reconnects is the
  same worker); one that departs (BYE, a clean close) costs the strip a requeue, never an attempt.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

#: Pre-planned strips (``plan_strips``) of about this many bytes.
DEFAULT_STRIP_BYTES = 4 << 20
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Policy:
    target_strip_s: float = 0.25
    tail_factor: float = 2.0
    initial_strip_bytes: int = 4 << 20
    min_strip_bytes: int = 256 << 10
    max_strip_bytes: int = 64 << 20
    speculate_after: float = 4.0
    speculate_min_s: float = 1.0
    ewma_alpha: float = 0.3
    max_attempts: int = MAX_ATTEMPTS

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.tail_factor < 1 or not 0 < self.ewma_alpha <= 1:
            raise ValueError("max_attempts >= 1, tail_factor >= 1 and 0 < ewma_alpha <= 1 are required")
        if not 0 < self.min_strip_bytes <= self.initial_strip_bytes <= self.max_strip_bytes:
            raise ValueError("need 0 < min_strip_bytes <= initial_strip_bytes <= max_strip_bytes")


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
    running_on: dict[str, float] = field(default_factory=dict)  # worker -> started at
    tried_by: set[str] = field(default_factory=set)
    failed_on: list[str] = field(default_factory=list)
    done_by: str | None = None
    backups: int = 0

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
    """Hands out the rows of one job to pulling workers and tracks them to completion.

    With ``strip_rows`` the strips are planned up front at that height (for tests and for users
    who want fixed strips); otherwise they are carved on demand by the policy above.
    """

    def __init__(
        self,
        height: int,
        row_bytes: int,
        policy: Policy | None = None,
        *,
        strip_rows: int | None = None,
        row_align: int = 1,
        halo: int = 0,
    ) -> None:
        """``halo``: rows of context each strip needs below it too (an operation chain's
        support): a strip is handed out once those rows exist as well."""
        if height <= 0 or row_bytes <= 0:
            raise ValueError(f"height and row_bytes must be positive, got {height}, {row_bytes}")
        self.policy = policy or Policy()
        self.height = height
        self.row_bytes = row_bytes
        self.strips: list[Strip] = []
        self._pending: deque[int] = deque()
        self._next_row = 0
        self.rows_ready = height  # rows whose pixels exist (less while the image is still decoding)
        self._frontier = 0  # strips[:_frontier] are all done
        self.row_align = row_align  # strips start on multiples of this (JPEG strips: whole MCU rows)
        self.halo = halo
        if strip_rows is not None:
            strip_rows = -(-strip_rows // row_align) * row_align
            for a, b in plan_strips(height, row_bytes, strip_rows=strip_rows):
                self._new_strip(a, b)
                self._pending.append(len(self.strips) - 1)
            self._next_row = height
        self.speeds: dict[str, float] = {}  # worker -> EWMA rows/s
        self.rows_done = 0
        self.strips_done = 0
        self.requeued: list[dict[str, object]] = []
        self.backups: list[dict[str, object]] = []
        self.failure: str | None = None

    # ------------------------------------------------------------------ state
    @property
    def finished(self) -> bool:
        return self.failure is not None or self.rows_done == self.height

    @property
    def rows_unassigned(self) -> int:
        return self.height - self._next_row

    def done_frontier(self) -> int:
        """The first row not yet done: rows above it are all converted (strips are carved, and
        planned, in row order, so they tile the image in list order)."""
        while self._frontier < len(self.strips) and self.strips[self._frontier].state is StripState.DONE:
            self._frontier += 1
        if self._frontier < len(self.strips):
            return self.strips[self._frontier].row_start
        return self._next_row  # every strip carved so far is done

    def set_rows_ready(self, rows: int) -> None:
        self.rows_ready = max(self.rows_ready, min(rows, self.height))

    def _new_strip(self, start: int, stop: int) -> Strip:
        strip = Strip(len(self.strips), start, stop)
        self.strips.append(strip)
        return strip

    # ------------------------------------------------------------------ speeds
    def observe(self, worker_id: str, rows: int, seconds: float) -> None:
        """Fold one strip's measured time into the worker's speed estimate."""
        if rows <= 0 or seconds <= 0:
            return
        rate = rows / seconds
        old = self.speeds.get(worker_id)
        a = self.policy.ewma_alpha
        self.speeds[worker_id] = rate if old is None else a * rate + (1 - a) * old

    def _held_rows(self, worker_id: str) -> int:
        return sum(s.rows for s in self.strips if s.state is StripState.RUNNING and worker_id in s.running_on)

    def strip_rows_for(self, worker_id: str, live: Sequence[str]) -> int:
        """How many new rows the policy gives ``worker_id`` now; 0 means "you hold your share: wait".

        With speeds known, the rows left (unassigned plus held by live workers) would take
        ``finish = left / sum(speeds)`` seconds if every worker ran at its speed to the end. A
        worker's *budget* is what it can do in that time minus what it already holds; it gets
        ``budget / tail_factor`` rows, at most ``target_strip_s`` worth. A worker without a
        measurement gets one strip of ``initial_strip_bytes`` (at most an equal share of what is
        left), and no second one until that strip's result has measured it.
        """
        p = self.policy
        min_rows = max(1, p.min_strip_bytes // self.row_bytes)
        max_rows = max(min_rows, p.max_strip_bytes // self.row_bytes)
        held = self._held_rows(worker_id)
        speed = self.speeds.get(worker_id)
        left = self.rows_unassigned + sum(s.rows for s in self.strips if s.state is StripState.RUNNING)
        if speed is None:
            if held:
                return 0  # one strip at a time until its first result tells us its speed
            rows = min(p.initial_strip_bytes // self.row_bytes, math.ceil(left / (len(live) * p.tail_factor)))
        else:
            known = [self.speeds[w] for w in live if w in self.speeds]
            typical = sum(known) / len(known) if known else speed
            total = sum(self.speeds.get(w, typical) for w in live)
            budget = speed * (left / total) - held
            rows = math.ceil(min(speed * p.target_strip_s, budget / p.tail_factor))
            if rows < min_rows and held:
                return 0  # it already holds what it can finish in time; someone faster takes the rest
        rows = max(min_rows, min(max_rows, rows))
        if self.rows_unassigned - rows < min_rows:  # do not leave a sliver behind
            rows = self.rows_unassigned
        return min(rows, self.rows_unassigned)

    # ------------------------------------------------------------------ assignment
    def next_strip(self, worker_id: str, now: float, live: Sequence[str] = ()) -> Strip | None:
        """The next strip for this worker, now marked running on it; None if there is none yet.

        ``live`` names the workers currently connected (for the speed shares); the asker is
        always counted.
        """
        if self.finished:
            return None
        live = list(live) if worker_id in live else [*live, worker_id]
        # 1. lost work first. Scan in queue order without reordering: strips this worker already
        #    failed stay where they are for the next worker that may take them.
        for index, sid in enumerate(self._pending):
            strip = self.strips[sid]
            if worker_id not in strip.tried_by and self._ready(strip.row_stop):
                del self._pending[index]
                return self._start(strip, worker_id, now)
        # 2. new rows, sized for this worker
        if self.rows_unassigned:
            rows = min(
                self.rows_unassigned, -(-self.strip_rows_for(worker_id, live) // self.row_align) * self.row_align
            )
            available = self.rows_ready - self._next_row - (self.halo if self.rows_ready < self.height else 0)
            if self.rows_ready < self.height:
                available -= available % self.row_align
            if rows > available:  # the image is still decoding: what there is, unless a sliver
                rows = available if available >= min(rows, max(1, self.policy.min_strip_bytes // self.row_bytes)) else 0
            if rows <= 0:
                return None
            strip = self._new_strip(self._next_row, self._next_row + rows)
            self._next_row += rows
            return self._start(strip, worker_id, now)
        # 3. a backup copy of the most overdue straggler
        return self._speculate(worker_id, now)

    def _ready(self, row_stop: int) -> bool:
        """The pixels of a strip ending at ``row_stop``, and of its halo below, exist."""
        return min(row_stop + self.halo, self.height) <= self.rows_ready

    def _start(self, strip: Strip, worker_id: str, now: float) -> Strip:
        strip.state = StripState.RUNNING
        strip.running_on[worker_id] = now
        strip.tried_by.add(worker_id)
        return strip

    def expected_s(self, strip: Strip, worker_id: str) -> float | None:
        speed = self.speeds.get(worker_id)
        if speed is None and self.speeds:
            speed = sorted(self.speeds.values())[len(self.speeds) // 2]  # the median worker
        return None if speed is None else strip.rows / speed

    def _speculate(self, worker_id: str, now: float) -> Strip | None:
        best: tuple[float, Strip] | None = None
        for strip in self.strips:
            if strip.state is not StripState.RUNNING or worker_id in strip.tried_by or len(strip.running_on) != 1:
                continue
            ((runner, started),) = strip.running_on.items()
            expected = self.expected_s(strip, runner)
            if expected is None:
                continue
            elapsed = now - started
            if elapsed < self.policy.speculate_min_s:
                continue
            overdue = elapsed / max(expected, 1e-6)
            if overdue > self.policy.speculate_after and (best is None or overdue > best[0]):
                best = (overdue, strip)
        if best is None:
            return None
        strip = best[1]
        strip.backups += 1
        self.backups.append({"strip": strip.id, "worker": worker_id, "of": next(iter(strip.running_on)), "at": now})
        return self._start(strip, worker_id, now)

    # ------------------------------------------------------------------ outcomes
    def complete(self, strip_id: int, worker_id: str, now: float) -> bool:
        """Record a result. Returns True if this result is the one that counts (first wins)."""
        strip = self.strips[strip_id]
        strip.running_on.pop(worker_id, None)
        if strip.state is StripState.DONE:
            return False
        strip.state = StripState.DONE
        strip.done_by = worker_id
        self.rows_done += strip.rows
        self.strips_done += 1
        return True

    def discard(self, strip_id: int, worker_id: str) -> None:
        """``worker_id``'s copy of a strip came back but was not used (another copy was landing
        its rows): neither a result nor a failure. Requeued if nothing else runs it."""
        strip = self.strips[strip_id]
        if strip.running_on.pop(worker_id, None) is None or strip.state is StripState.DONE:
            return
        self._requeue_if_idle(strip)

    def attempt_failed(self, strip_id: int, worker_id: str, now: float, reason: str, *, counts: bool = True) -> None:
        """The attempt of ``worker_id`` on a strip ended without a result: requeue or give up.

        ``counts``: the attempt counts against the strip (its worker was lost while holding it),
        once per worker identity; a worker that departed (BYE, a clean close) costs only a requeue."""
        strip = self.strips[strip_id]
        if strip.running_on.pop(worker_id, None) is None or strip.state is StripState.DONE:
            return
        if counts and worker_id not in strip.failed_on:
            strip.failed_on.append(worker_id)
        self.requeued.append({"strip": strip_id, "worker": worker_id, "reason": reason, "at": now})
        if len(strip.failed_on) >= self.policy.max_attempts:
            self.failure = (
                f"strip {strip_id} (rows {strip.row_start}-{strip.row_stop - 1}) failed on"
                f" {len(strip.failed_on)} workers ({', '.join(strip.failed_on)}); last: {reason}"
            )
            return
        self._requeue_if_idle(strip)

    def _requeue_if_idle(self, strip: Strip) -> None:
        """No copy of ``strip`` runs any more (none still running as a backup): queue it again,
        first in line."""
        if not strip.running_on:
            strip.state = StripState.PENDING
            self._pending.appendleft(strip.id)

    def worker_lost(self, worker_id: str, now: float, reason: str, *, counts: bool = True) -> list[int]:
        """End every attempt of a worker that left (``counts``: lost, not departed). Returns the
        strips that had to be requeued (not those already done, e.g. by a backup copy, nor those a
        backup copy still runs)."""
        held = [s.id for s in self.strips if worker_id in s.running_on]
        before = len(self.requeued)
        for sid in reversed(held):
            self.attempt_failed(sid, worker_id, now, reason, counts=counts)
        self.speeds.pop(worker_id, None)
        return sorted(int(str(r["strip"])) for r in self.requeued[before:])
