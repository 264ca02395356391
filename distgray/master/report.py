"""A job's figures as the built-in cluster saw them: per strip, per worker, requeues, memory.

Pure reading of the books (the caller holds the master's lock or the job is over), plus the
peak memory of processes from ``/proc``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distgray.master.books import Job, WorkerBook


def _blank_worker() -> dict[str, Any]:
    return {"strips": 0, "rows": 0, "busy_s": 0.0, "discarded": 0, "bytes_in": 0, "bytes_out": 0}


def job_report(job: Job, workers: Mapping[str, WorkerBook]) -> dict[str, Any]:
    """Figures of one job: image, strips (with per-strip times), per worker, requeues."""
    assert job.started is not None
    wall = (job.finished_at or job.started) - job.started
    per_worker: dict[str, dict[str, Any]] = {}
    for r in job.records:
        w = per_worker.setdefault(r.worker, _blank_worker())
        if not r.counted:
            w["discarded"] += 1
        w["strips"] += 1
        w["rows"] += r.row_stop - r.row_start
        w["busy_s"] += (r.recv_us + r.compute_us) / 1e6
    for wid, (sent, received) in job.worker_bytes.items():
        w = per_worker.setdefault(wid, _blank_worker())
        w["bytes_in"] = sent  # bytes into the worker: its tasks
        w["bytes_out"] = received  # bytes out of the worker: its results
    for wid, w in per_worker.items():
        conn = workers.get(wid)
        w["address"] = conn.address if conn else ""
        w["state"] = conn.state.value if conn else "unknown"
        w["shared_memory"] = bool(conn and conn.shm)  # pixels by reference, not over TCP
        w["busy_s"] = round(w["busy_s"], 4)
        w["rows_per_s"] = round(w["rows"] / w["busy_s"], 1) if w["busy_s"] else None
        speed = job.scheduler.speeds.get(wid)
        w["speed_rows_per_s"] = round(speed, 1) if speed is not None else None  # the scheduler's EWMA
    report: dict[str, Any] = {
        "job": job.id,
        "name": job.name,
        "width": job.width,
        "height": job.height,
        "channels": job.channels,
        "status": "failed" if job.failure else ("done" if job.scheduler.finished else "unfinished"),
        "failure": job.failure,
        "strips": len(job.scheduler.strips),
        "encoded_strips": job.encoding.format if job.encoding else None,  # output encoded by the workers
        # A streamed input: when its last row was decoded, from the job's start (rows went out before).
        "input_ready_s": None if job.input_ready_at is None else round(job.input_ready_at - job.started, 4),
        "wall_s": round(wall, 4),
        "megapixels_per_s": round(job.width * job.height / 1e6 / wall, 2) if wall > 0 else None,
        "workers": per_worker,
        "requeued": job.scheduler.requeued,
        "backups": job.scheduler.backups,
        "strip_log": [vars(r) for r in job.records],
    }
    return report


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
