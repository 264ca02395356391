"""What a finished job did, as a JSON-ready dict (``--report``) and as the terminal summary.

Both come from the same dict, so the table a person reads and the file a script reads agree.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from distgray.master import Job, Master


def _blank_worker() -> dict[str, Any]:
    return {"strips": 0, "rows": 0, "busy_s": 0.0, "discarded": 0, "bytes_in": 0, "bytes_out": 0}


def job_report(job: Job, master: Master) -> dict[str, Any]:
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
        conn = master.workers.get(wid)
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


def format_summary(report: dict[str, Any]) -> str:
    lines = [
        f"image      {report['name']}: {report['width']}x{report['height']}"
        f" ({report['width'] * report['height'] / 1e6:.1f} MP)",
        f"strips     {report['strips']}, {len(report['requeued'])} requeued, {len(report['backups'])} backup copies",
        f"wall time  {report['wall_s']:.3f} s distributed"
        + (
            f" (+ load {report['load_s']:.3f} s, save {report['save_s']:.3f} s) = {report['total_s']:.3f} s end to end"
            if "total_s" in report
            else ""
        ),
    ]
    if report.get("output"):
        lines.append(f"output     {report['output']}")
    header = (
        f"{'worker':<24} {'state':<5} {'strips':>6} {'rows':>7} {'MB in':>8} {'MB out':>8} {'busy s':>8}"
        f" {'rows/s':>9} {'speed':>9}"
    )
    lines += ["", header, "-" * len(header)]
    for wid, w in sorted(report["workers"].items()):
        rate = f"{w['rows_per_s']:.0f}" if w["rows_per_s"] else "-"
        speed = f"{w['speed_rows_per_s']:.0f}" if w.get("speed_rows_per_s") else "-"
        mark = "*" if w.get("shared_memory") else " "
        lines.append(
            f"{wid[:24]:<24} {w['state'][:5]:<5} {w['strips']:>6} {w['rows']:>7} {w['bytes_in'] / 1e6:>7.1f}{mark}"
            f" {w['bytes_out'] / 1e6:>8.1f} {w['busy_s']:>8.3f} {rate:>9} {speed:>9}"
        )
    lines.append(
        "(MB in: task bytes sent to the worker, * pixels read from shared memory instead; MB out: result bytes it"
        " returned;\n busy s: its receive + compute (+ encode) time; rows/s: rows / busy s; speed: the scheduler's"
        " estimate,\n rows/s including transfer both ways)"
    )
    for r in report["requeued"]:
        lines.append(f"requeued   strip {r['strip']} from {r['worker']}: {r['reason']}")
    return "\n".join(lines)


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
