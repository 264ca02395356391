"""The job service as the page's board, over the built-in cluster's real books. No sockets.

The master is never started: workers join and strips complete through the cluster's own
transitions (``join``, ``next_step``, ``result_sink``, ``strip_done``, ``drop``), exactly the
calls its reader and writer threads make.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image

from distgray.engines.cluster import ClusterEngine
from distgray.errors import ImageError
from distgray.jobs.service import JobState, Service, ServiceOptions
from distgray.master.books import WorkerState
from distgray.master.cluster import Cluster, SendStrip
from distgray.master.server import Master, MasterConfig
from distgray.web.app import create_app
from distgray.wire import protocol as P
from tests.conftest import pillow_reference


def make_service(tmp_path: Path, *, serve: bool = True, **overrides: Any) -> Service:
    options = ServiceOptions(
        output_dir=tmp_path / "results",
        upload_dir=tmp_path / "uploads",
        serve=serve,
        worker_command="python worker_client.py --host 127.0.0.1 --port 5003",
        **overrides,
    )
    return Service(ClusterEngine(Master(MasterConfig(port=0, strip_rows=100))), options)


def cluster_of(service: Service) -> Cluster:
    engine = service.engine
    assert isinstance(engine, ClusterEngine)
    return engine.master.cluster


def finish_strip(cluster: Cluster, wid: str, now: float) -> None:
    """``wid``'s writer takes the next strip; its reader hands the result back."""
    step = cluster.next_step(wid, now, 0.0, 2.0)
    assert isinstance(step, SendStrip)
    t = step.task
    result = P.Result(t.job_id, t.strip_id, t.row_start, t.row_stop, t.width, 2000, 3000)
    assert cluster.result_sink(wid, result, now) is step.job
    cluster.strip_done(wid, result, None, now + 0.01)


def png_bytes(size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (200, 100, 50) if mode == "RGB" else 128).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def service(tmp_path: Path) -> Service:
    return make_service(tmp_path)


@pytest.fixture
def client(service: Service) -> FlaskClient:
    return create_app(service).test_client()


def test_status_before_any_job_or_worker(client: FlaskClient) -> None:
    status = client.get("/api/status").get_json()
    assert status["current"] is None and status["jobs"] == [] and status["workers"] == []
    assert status["serve"] is True and "worker_client.py" in status["worker_command"]
    assert client.get("/healthz").get_json() == {"status": "ok", "workers": 0}


def test_status_of_a_running_job(service: Service, client: FlaskClient) -> None:
    cluster = cluster_of(service)
    entry = service.enqueue(Path("big.png"), Path("out.png"), "PNG")
    entry.state, entry.width, entry.height = JobState.RUNNING, 64, 1000
    now = time.monotonic()
    entry.job = service.engine.submit(np.zeros((1000, 64, 3), np.uint8), "big.png")
    cluster.join("fast", "10.0.0.7:40000", ())
    cluster.join("slow", "10.0.0.8:40000", ())
    finish_strip(cluster, "fast", now)
    finish_strip(cluster, "fast", now + 0.02)
    held = cluster.next_step("slow", now + 0.03, 0.0, 2.0)
    assert isinstance(held, SendStrip)
    assert client.get("/healthz").get_json() == {"status": "ok", "workers": 2}
    cluster.drop("slow", WorkerState.LOST, "worker slow: silent for 3.0 s", now + 0.04)

    status = client.get("/api/status").get_json()
    progress = status["current"]["progress"]
    assert status["current"]["state"] == "running"
    assert 0 < progress["rows_done"] < 1000 and progress["fraction_done"] == progress["rows_done"] / 1000
    assert progress["strips_done"] == 2 and progress["eta_s"] is not None and progress["mp_per_s"] > 0
    assert [s["worker"] for s in progress["strip_map"] if s["state"] == "done"] == ["fast", "fast"]
    assert any(s["retried"] and s["state"] == "pending" for s in progress["strip_map"])
    strip = held.task.strip_id
    assert progress["requeued"] == [{"strip": strip, "worker": "slow", "reason": "worker slow: silent for 3.0 s"}]
    workers = {w["id"]: w for w in status["workers"]}
    assert workers["fast"]["state"] == "idle" and workers["fast"]["strips"] == 2
    assert workers["fast"]["speed_rows_per_s"] > 0 and workers["fast"]["bytes_out"] > 0
    assert workers["slow"]["state"] == "lost" and workers["slow"]["failures"] == 1
    assert "silent" in workers["slow"]["reason"]
    assert client.get("/healthz").get_json() == {"status": "ok", "workers": 1}


def test_finished_job_previews_and_download(service: Service, client: FlaskClient, tmp_path: Path) -> None:
    source = tmp_path / "gray.png"  # already gray: no workers needed, the whole path still runs
    source.write_bytes(png_bytes(mode="L"))
    entry = service.enqueue(source, tmp_path / "results" / "gray_gray.png", "PNG")
    service.process(entry)
    job = client.get(f"/api/jobs/{entry.id}").get_json()
    assert job["state"] == "done" and job["download"] and job["thumbnails"] == ["input", "output"]
    for which in ("input", "output"):
        thumb = client.get(f"/jobs/{entry.id}/thumbnail/{which}.png")
        assert thumb.status_code == 200 and thumb.mimetype == "image/png"
        assert Image.open(io.BytesIO(thumb.data)).size == (40, 30)
    download = client.get(f"/jobs/{entry.id}/download")
    assert download.status_code == 200
    assert "attachment" in download.headers["Content-Disposition"]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(download.data))), pillow_reference(source))


def test_failed_job_shows_the_reason(service: Service, client: FlaskClient, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(png_bytes()[:60])
    entry = service.enqueue(bad, tmp_path / "out.png", "PNG")
    with pytest.raises(ImageError, match=r"broken\.png"):
        service.process(entry)
    job = client.get(f"/api/jobs/{entry.id}").get_json()
    assert job["state"] == "failed" and "broken.png" in job["error"] and not job["download"]
    assert not (tmp_path / "out.png").exists()
    assert service.any_failed


def test_upload_queues_a_job_under_a_fresh_name(service: Service, client: FlaskClient, tmp_path: Path) -> None:
    data = png_bytes()
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(data), "../../holiday photo.png")})
    assert resp.status_code == 201, resp.get_json()
    job = resp.get_json()
    assert job["state"] == "queued" and job["name"] == "../../holiday photo.png"
    entry = service.entry(job["id"])
    assert entry is not None and entry.uploaded
    assert entry.source.parent == tmp_path / "uploads" and entry.source.read_bytes() == data
    assert entry.output == tmp_path / "results" / "holiday_photo_gray.png"
    again = client.post("/api/jobs", data={"image": (io.BytesIO(data), "holiday photo.png")}).get_json()
    second = service.entry(again["id"])
    assert second is not None and second.source != entry.source  # never overwritten
    assert second.output == tmp_path / "results" / "holiday_photo-2_gray.png"


def test_queued_jobs_run_in_order_and_a_bad_one_does_not_stop_the_rest(service: Service, tmp_path: Path) -> None:
    names = ["first.png", "broken.png", "third.png"]
    for name in names:
        path = tmp_path / name
        path.write_bytes(png_bytes(mode="L")[: 60 if name == "broken.png" else None])
        service.enqueue(path, tmp_path / "results" / f"{path.stem}_gray.png", "PNG")
    stop = threading.Event()
    runner = threading.Thread(target=service.serve_forever, args=(stop,), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while not all(e["state"] in ("done", "failed") for e in service.status()["jobs"]):
            assert time.monotonic() < deadline, service.status()["jobs"]
            time.sleep(0.01)
    finally:
        stop.set()
        runner.join(timeout=60)
    jobs = sorted(service.status()["jobs"], key=lambda j: j["id"])
    assert [(j["name"], j["state"]) for j in jobs] == [
        ("first.png", "done"),
        ("broken.png", "failed"),
        ("third.png", "done"),
    ]
    assert jobs[0]["finished_at"] <= jobs[1]["started_at"] and jobs[1]["finished_at"] <= jobs[2]["started_at"]


def test_uploads_are_kept_within_their_budget(tmp_path: Path) -> None:
    """Old and surplus uploads (with their outputs) go, oldest finished first; queued ones stay."""
    from distgray.jobs.entries import JobState, ServiceOptions
    from distgray.jobs.service import Service

    options = ServiceOptions(upload_dir=tmp_path / "up", output_dir=tmp_path / "out", keep_upload_bytes=2500)
    service = Service(None, options)  # type: ignore[arg-type]  # pruning never asks the engine
    entries = []
    for n in range(4):
        source, output = service.upload_paths(f"p{n}.png", "PNG")
        source.write_bytes(b"x" * 600)
        entry = service.enqueue(source, output, "PNG", name=source.name, uploaded=True)
        output.parent.mkdir(exist_ok=True)
        output.write_bytes(b"y" * 400)
        entry.state, entry.finished_at = JobState.DONE, 1000.0 + n
        entries.append(entry)
    entries[3].state, entries[3].finished_at = JobState.QUEUED, None
    assert service.prune_uploads(now=1010.0) == [1, 2]  # 4000 bytes: the two oldest finished go
    assert not entries[0].source.exists() and not entries[0].output.exists() and not entries[0].downloadable
    assert entries[2].downloadable and entries[3].source.exists()
    assert service.prune_uploads(now=1010.0 + options.keep_upload_s) == [3]  # too old now
    assert entries[3].source.exists()  # still queued: never removed under it
