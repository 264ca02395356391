"""The status page's figures: ETA from measured throughput, the strip map. Pure, fake clock."""

from __future__ import annotations

import numpy as np

from distgray.master import snapshot as status
from distgray.master.books import Job, StripRecord
from distgray.scheduling.strips import Policy


def record(strip: int, rows: tuple[int, int], done_s: float, counted: bool = True) -> StripRecord:
    return StripRecord(strip, "w", rows[0], rows[1], 0, 0, 0.0, done_s, 0, 0, 0, counted)


def job_with(done: list[tuple[int, int, float]], height: int = 1000) -> Job:
    """A job whose strips (start, stop) finished at the given seconds after it started."""
    job = Job(1, "x", np.zeros((height, 8, 3), np.uint8), Policy(), strip_rows=100)
    job.started = 0.0
    for i, (a, b, t) in enumerate(done):
        job.scheduler.next_strip("w", t, ["w"])
        job.scheduler.complete(i, "w", t)
        job.records.append(record(i, (a, b), t))
    return job


def test_eta_needs_a_measured_rate_and_is_zero_when_done() -> None:
    assert status.eta_s(500, None) is None
    assert status.eta_s(500, 100.0) == 5.0
    assert status.eta_s(0, None) == 0.0


def test_throughput_follows_the_recent_window() -> None:
    # Two strips early on, four in the last second: the rate over the last 10 s counts only those four.
    done = [(i * 100, i * 100 + 100, t) for i, t in enumerate([1.0, 2.0, 20.0, 20.25, 20.5, 20.75])]
    job = job_with(done)
    assert status.throughput_rows_per_s(job, elapsed=21.0) == 400 / 10  # 4 strips in the window
    assert status.throughput_rows_per_s(job, elapsed=21.0, window=100.0) == 600 / 21
    assert status.throughput_rows_per_s(job_with([]), elapsed=5.0) is None


def test_describe_job_progress_eta_and_map() -> None:
    job = job_with([(0, 100, 1.0), (100, 200, 2.0)])
    job.scheduler.next_strip("v", 2.0, ["w", "v"])  # strip 2 running on v
    d = status.describe_job(job, now=2.0)
    assert (d["rows_done"], d["fraction_done"], d["strips_done"], d["strips_running"]) == (200, 0.2, 2, 1)
    assert d["eta_s"] == 8.0  # 800 rows left at 100 rows/s
    assert [(s["state"], s["worker"]) for s in d["strip_map"][:3]] == [("done", "w"), ("done", "w"), ("running", "v")]
    assert not d["finished"]


def test_a_finished_job_reports_its_average_rate() -> None:
    job = job_with([(i * 100, i * 100 + 100, 1.0 + i) for i in range(10)])
    job.finish(20.0)
    d = status.describe_job(job, now=99.0)
    assert d["finished"] and d["eta_s"] == 0.0 and d["elapsed_s"] == 20.0
    assert d["mp_per_s"] == round(1000 / 20 * 8 / 1e6, 2)
