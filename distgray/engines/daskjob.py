"""The Dask engine's books of one image: its strips, their states and answers, and what the page
and the report show of them. Pure data and functions of it; the engine holds the lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from distgray.imaging import ops as imaging_ops
from distgray.imaging.encoded import EncodedStrip, Encoding
from distgray.imaging.kernel import U8Array
from distgray.imaging.sparse import SparseRows
from distgray.net import shm

Future = Any  # distributed.Future, whose methods are not annotated


@dataclass
class DaskStrip:
    index: int
    row_start: int
    row_stop: int
    state: str = "pending"  # pending, running, done
    worker: str | None = None
    attempts: int = 0
    sent_s: float = 0.0  # from the job's start
    done_s: float = 0.0
    seconds: float = 0.0  # the task's own compute time
    bytes_in: int = 0
    bytes_out: int = 0


class DaskJob:
    """One image on the Dask engine (a :class:`~distgray.engines.base.RunningJob`)."""

    def __init__(
        self,
        job_id: int,
        name: str,
        pixels: U8Array,
        encoding: Encoding | None,
        strip_rows: int,
        rows_ready: int,
        store: SparseRows | shm.Segment | None,
        segment: shm.Segment | None = None,
        ops: str = "",
    ) -> None:
        self.id, self.name, self.pixels, self.encoding = job_id, name, pixels, encoding
        # the chain each strip gets, and its halo each way
        self.ops, self.support = ops, imaging_ops.support_of(ops)
        self.height, self.width, self.channels = pixels.shape
        self.strip_rows = strip_rows
        self.store = store
        self.segment = segment  # the pixels are in it: local workers read them in place
        self._output_rows = SparseRows((self.height, self.width)) if store is not None else None
        if self._output_rows is not None:
            self.output: U8Array = self._output_rows.array
        else:
            self.output = np.empty((self.height if encoding is None else 0, self.width), dtype=np.uint8)
        self.rows_ready_now = rows_ready
        self.rows_assigned = 0
        self.rows_written = 0
        self.strips: list[DaskStrip] = []
        self.encoded: dict[int, tuple[int, EncodedStrip]] = {}
        self.requeued: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.finished_at: float | None = None
        self._failure: str | None = None
        self._done = threading.Event()
        self.futures: dict[int, tuple[Future | None, Future]] = {}  # strip -> (its pixels, its task)

    @property
    def rows_done(self) -> int:
        return sum(s.row_stop - s.row_start for s in self.strips if s.state == "done")

    @property
    def failure(self) -> str | None:
        return self._failure

    @property
    def worker_ids(self) -> list[str]:
        return sorted({s.worker for s in self.strips if s.worker and s.state == "done"})

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def release(self) -> None:
        if self._done.is_set():
            self.pixels = self.output = np.empty((0, 0, 0), dtype=np.uint8)
            self.store = self.segment = self._output_rows = None
            self.encoded.clear()

    def frontier(self) -> int:
        """The first row not yet converted (strips are carved in row order)."""
        for s in self.strips:
            if s.state != "done":
                return s.row_start
        return self.rows_assigned

    def finish(self, failure: str | None = None) -> None:
        if self._done.is_set():
            return
        self._failure = failure
        self.finished_at = time.monotonic()
        self._done.set()

    def written(self, row: int) -> None:
        if row <= self.rows_written:
            return
        self.rows_written = row
        if self.store is not None:
            # a PNG strip from ``row`` sends the row above, and a chain's halo more
            self.store.release_below(max(0, row - 1 - self.support))
        if self._output_rows is not None:
            self._output_rows.release_below(row)


def per_worker(job: DaskJob) -> dict[str, dict[str, Any]]:
    per: dict[str, dict[str, Any]] = {}
    for s in job.strips:
        if s.state != "done" or s.worker is None:
            continue
        w = per.setdefault(
            s.worker,
            {"strips": 0, "rows": 0, "busy_s": 0.0, "discarded": 0, "bytes_in": 0, "bytes_out": 0},
        )
        w["strips"] += 1
        w["rows"] += s.row_stop - s.row_start
        w["busy_s"] += s.seconds
        w["bytes_in"] += s.bytes_in
        w["bytes_out"] += s.bytes_out
    for w in per.values():
        w["busy_s"] = round(w["busy_s"], 4)
        w["rows_per_s"] = round(w["rows"] / w["busy_s"], 1) if w["busy_s"] else None
        w.update(address="", state="live", shared_memory=False, speed_rows_per_s=None)
    return per


def describe_job(job: DaskJob) -> dict[str, Any]:
    now = time.monotonic()
    elapsed = max(0.0, (job.finished_at or now) - job.started)
    done = job.rows_done
    rate = done / elapsed if elapsed > 0 and done else None
    left = job.height - done
    return {
        "id": job.id,
        "name": job.name,
        "width": job.width,
        "height": job.height,
        "rows_done": done,
        "fraction_done": done / job.height,
        "strips_done": sum(1 for s in job.strips if s.state == "done"),
        "strips_running": sum(1 for s in job.strips if s.state == "running"),
        "strips_planned": len(job.strips),
        "rows_unassigned": job.height - job.rows_assigned,
        "elapsed_s": round(elapsed, 3),
        "mp_per_s": round(rate * job.width / 1e6, 2) if rate else None,
        "eta_s": 0.0 if left <= 0 else (round(left / rate, 1) if rate else None),
        "finished": job.finished_at is not None,
        "failure": job.failure,
        "requeued": list(job.requeued),
        "backups": 0,
        "strip_map": [
            {"start": s.row_start, "stop": s.row_stop, "state": s.state, "worker": s.worker, "retried": s.attempts > 1}
            for s in job.strips
        ],
    }


def describe_workers(workers: dict[str, dict[str, Any]], per: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The page's worker rows from the scheduler's view of its workers and the job's figures."""
    rows = []
    for addr, w in sorted(workers.items()):
        name = str(w.get("name") or addr)
        mine = per.get(name, {})
        rows.append(
            {
                "id": name,
                "address": addr,
                "state": "busy" if w.get("metrics", {}).get("task_counts", {}).get("executing") else "idle",
                "reason": None,
                "in_flight": 0,
                "strips": mine.get("strips", 0),
                "rows": mine.get("rows", 0),
                "bytes_in": mine.get("bytes_in", 0),
                "bytes_out": mine.get("bytes_out", 0),
                "failures": 0,
                "speed_rows_per_s": None,
                "speed_mp_per_s": None,
                "heartbeat_age_s": 0.0,
            }
        )
    return rows


def job_report(job: DaskJob) -> dict[str, Any]:
    """A job's figures, as the built-in engine's report has them (``--report``, the summary)."""
    wall = (job.finished_at or time.monotonic()) - job.started
    strips = [
        {
            "strip": s.index,
            "worker": s.worker,
            "row_start": s.row_start,
            "row_stop": s.row_stop,
            "bytes_in": s.bytes_in,
            "bytes_out": s.bytes_out,
            "sent_s": round(s.sent_s, 4),
            "done_s": round(s.done_s, 4),
            "compute_us": int(s.seconds * 1e6),
            "attempts": s.attempts,
        }
        for s in job.strips
    ]
    return {
        "engine": "dask",
        "job": job.id,
        "name": job.name,
        "width": job.width,
        "height": job.height,
        "channels": job.channels,
        "status": "failed" if job.failure else ("done" if job.wait(0) else "unfinished"),
        "failure": job.failure,
        "strips": len(strips),
        "encoded_strips": job.encoding.format if job.encoding else None,
        "input_ready_s": None,
        "wall_s": round(wall, 4),
        "megapixels_per_s": round(job.width * job.height / 1e6 / wall, 2) if wall > 0 else None,
        "workers": per_worker(job),
        "requeued": list(job.requeued),
        "backups": [],
        "strip_log": strips,
    }
