"""``/metrics``: the status snapshot in Prometheus' text format (prometheus-client).

A fresh registry per scrape over one status snapshot, so every figure in a scrape is from the
same moment and nothing registers in prometheus-client's global registry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

JOB_STATES = ("queued", "loading", "waiting for workers", "running", "saving", "done", "failed")
WORKER_STATES = ("idle", "busy", "lost", "gone")


class _Snapshot(Collector):
    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status
        jobs = GaugeMetricFamily("distgray_jobs", "Jobs of this master run, by state", labels=["state"])
        by_state = Counter(j["state"] for j in status["jobs"])
        for state in JOB_STATES:
            jobs.add_metric([state], by_state[state])
        yield jobs

        workers = status["workers"]
        count = GaugeMetricFamily("distgray_workers", "Workers seen by this master run, by state", labels=["state"])
        by_state = Counter(w["state"] for w in workers)
        for state in WORKER_STATES:
            count.add_metric([state], by_state[state])
        yield count

        progress = (status["current"] or {}).get("progress") or {}
        rows_done = GaugeMetricFamily("distgray_job_rows_done", "Rows converted in the current job")
        rows_total = GaugeMetricFamily("distgray_job_rows", "Rows of the current job's image")
        rows_done.add_metric([], progress.get("rows_done", 0))
        rows_total.add_metric([], progress.get("height", 0))
        yield rows_done
        yield rows_total

        strips = CounterMetricFamily("distgray_strips", "Strip results received, all workers")
        strips.add_metric([], sum(w["strips"] for w in workers))
        yield strips
        moved = CounterMetricFamily(
            "distgray_bytes", "Bytes sent to (in) and received from (out) workers", labels=["direction"]
        )
        moved.add_metric(["in"], sum(w["bytes_in"] for w in workers))
        moved.add_metric(["out"], sum(w["bytes_out"] for w in workers))
        yield moved

        w_strips = CounterMetricFamily("distgray_worker_strips", "Strip results received", labels=["worker"])
        w_fail = CounterMetricFamily("distgray_worker_failures", "Strips requeued from the worker", labels=["worker"])
        w_rows = GaugeMetricFamily("distgray_worker_speed_rows_per_second", "Estimated speed", labels=["worker"])
        w_mp = GaugeMetricFamily("distgray_worker_speed_megapixels_per_second", "Estimated speed", labels=["worker"])
        for w in workers:
            w_strips.add_metric([w["id"]], w["strips"])
            w_fail.add_metric([w["id"]], w["failures"])
            if w["speed_rows_per_s"] is not None:
                w_rows.add_metric([w["id"]], w["speed_rows_per_s"])
                w_mp.add_metric([w["id"]], w["speed_mp_per_s"])
        yield from (w_strips, w_fail, w_rows, w_mp)


def metrics_text(status: dict[str, Any]) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(status))
    return generate_latest(registry), CONTENT_TYPE_LATEST
