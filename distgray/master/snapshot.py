"""What the status page shows of the cluster, as plain JSON-ready dicts: pure functions of the books.

The master calls :func:`describe` under its lock (so the figures are one consistent moment) and
hands the copy on; nothing here touches sockets, threads or the clock by itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from distgray.master.books import Job, WorkerBook
from distgray.scheduling.strips import StripState

#: Throughput for the ETA is measured over this many recent seconds of the job (all of it, early on),
#: so it follows workers joining or leaving and settles as the job goes.
ETA_WINDOW_S = 10.0


def describe(
    workers: Iterable[WorkerBook], job: Job | None, now: float, heard: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """``heard``: when each worker was last heard from (monotonic); a worker missing from it is
    taken as heard ``now``."""
    heard = heard or {}
    return {
        "workers": [describe_worker(w, now, heard.get(w.id, now)) for w in workers],
        "job": describe_job(job, now) if job is not None else None,
    }


def describe_worker(w: WorkerBook, now: float, last_heard: float) -> dict[str, Any]:
    return {
        "id": w.id,
        "address": w.address,
        "state": w.state.value,
        "reason": w.reason,
        "in_flight": len(w.in_flight),
        "strips": w.strips,
        "rows": w.rows,
        "bytes_in": w.bytes_in,
        "bytes_out": w.bytes_out,
        "failures": w.failures,
        "speed_rows_per_s": _round(w.speed, 1),
        "speed_mp_per_s": _round(w.mp_per_s, 2),
        "heartbeat_age_s": round(max(0.0, now - last_heard), 1),
    }


def describe_job(job: Job, now: float) -> dict[str, Any]:
    """Progress of the master's current (or last) job: rows, strips, throughput, ETA, strip map."""
    sched = job.scheduler
    started = job.started if job.started is not None else now
    end = job.finished_at if job.finished_at is not None else now
    elapsed = max(0.0, end - started)
    if job.finished_at is not None:  # done: the whole job's average
        rate = sched.rows_done / elapsed if elapsed > 0 and sched.rows_done else None
    else:
        rate = throughput_rows_per_s(job, elapsed)
    left = job.height - sched.rows_done
    return {
        "id": job.id,
        "name": job.name,
        "width": job.width,
        "height": job.height,
        "rows_done": sched.rows_done,
        "fraction_done": sched.rows_done / job.height,
        "strips_done": sched.strips_done,
        "strips_running": sum(1 for s in sched.strips if s.state is StripState.RUNNING),
        "strips_planned": len(sched.strips),
        "rows_unassigned": sched.rows_unassigned,
        "elapsed_s": round(elapsed, 3),
        "mp_per_s": _round(rate * job.width / 1e6 if rate else None, 2),
        "eta_s": eta_s(left, rate),
        "finished": job.finished_at is not None,
        "failure": sched.failure,
        "requeued": [{"strip": r["strip"], "worker": r["worker"], "reason": r["reason"]} for r in sched.requeued],
        "backups": len(sched.backups),
        "strip_map": strip_map(job),
    }


def throughput_rows_per_s(job: Job, elapsed: float, window: float = ETA_WINDOW_S) -> float | None:
    """Rows per second finished over the last ``window`` seconds of the job (None before any)."""
    if elapsed <= 0 or job.scheduler.rows_done == 0:
        return None
    since = max(0.0, elapsed - window)
    rows = sum(r.row_stop - r.row_start for r in job.records if r.counted and r.done_s >= since)
    span = elapsed - since
    return rows / span if rows and span > 0 else None


def eta_s(rows_left: int, rows_per_s: float | None) -> float | None:
    """Seconds until done at the measured rate; 0 when done; None while there is no rate yet."""
    if rows_left <= 0:
        return 0.0
    if not rows_per_s:
        return None
    return round(rows_left / rows_per_s, 1)


def strip_map(job: Job) -> list[dict[str, Any]]:
    """Every strip carved so far: its rows, its state and the worker that did (or is doing) it.

    Rows not yet carved into strips are not listed: the page draws them as still to do.
    """
    out = []
    for s in job.scheduler.strips:
        worker = s.done_by if s.done_by is not None else next(iter(s.running_on), None)
        out.append(
            {
                "start": s.row_start,
                "stop": s.row_stop,
                "state": s.state.value,
                "worker": worker,
                "retried": bool(s.failed_on),
            }
        )
    return out


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
