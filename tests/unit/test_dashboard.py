"""Every route of the status page, through Flask's test client, against real master state.

No sockets: the master is never started; a job is submitted and strips are completed through the
master's own result path (``_complete``) for a worker whose connection is a stand-in object.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from distgray import protocol as P
from distgray.dashboard import create_app
from distgray.errors import ImageError
from distgray.master import Master, MasterConfig
from distgray.service import JobState, Service, ServiceOptions
from distgray.state import Assignment, WorkerConn, WorkerState
from distgray.transport import Channel
from tests.conftest import pillow_reference


class StandInChannel:
    """What the status code reads of a connection: when it last heard from the peer."""

    def __init__(self) -> None:
        self.last_recv = time.monotonic()

    def close(self) -> None:
        pass


def make_service(tmp_path: Path, *, serve: bool = True, **overrides: Any) -> Service:
    options = ServiceOptions(
        output_dir=tmp_path / "results",
        upload_dir=tmp_path / "uploads",
        serve=serve,
        worker_command="python worker_client.py --host 127.0.0.1 --port 5003",
        **overrides,
    )
    return Service(Master(MasterConfig(port=0, strip_rows=100)), options, [])


def add_worker(master: Master, wid: str) -> WorkerConn:
    w = WorkerConn(wid, "10.0.0.7:40000", cast(Channel, StandInChannel()), ())
    master.workers[wid] = w
    return w


def finish_strip(master: Master, w: WorkerConn, now: float) -> None:
    """Give ``w`` the next strip and hand its result to the master, as its reader would."""
    job = master.job
    assert job is not None
    strip = job.scheduler.next_strip(w.id, now, [w.id])
    assert strip is not None
    w.in_flight[(job.id, strip.id)] = Assignment(now, strip.row_start, strip.row_stop, job.width)
    w.result_started = now
    master._complete(w, P.Result(job.id, strip.id, strip.row_start, strip.row_stop, job.width, 2000, 3000))


@pytest.fixture
def service(tmp_path: Path) -> Service:
    return make_service(tmp_path)


@pytest.fixture
def client(service: Service) -> FlaskClient:
    return create_app(service).test_client()


def png_bytes(size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (200, 100, 50) if mode == "RGB" else 128).save(buf, format="PNG")
    return buf.getvalue()


def test_page_and_health(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for element in ('id="progress-pct"', 'id="strip-map"', 'id="workers"', 'id="upload-form"', "app.js"):
        assert element in html
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/healthz").get_json() == {"status": "ok", "workers": 0}


def test_status_before_any_job_or_worker(client: FlaskClient) -> None:
    status = client.get("/api/status").get_json()
    assert status["current"] is None and status["jobs"] == [] and status["workers"] == []
    assert status["serve"] is True and "worker_client.py" in status["worker_command"]


def test_status_of_a_running_job(service: Service, client: FlaskClient) -> None:
    master = service.master
    pixels = np.zeros((1000, 64, 3), np.uint8)
    entry = service.enqueue(Path("big.png"), Path("out.png"), "PNG")
    entry.state, entry.width, entry.height = JobState.RUNNING, 64, 1000
    entry.job = master.submit(pixels, "big.png")
    fast, slow = add_worker(master, "fast"), add_worker(master, "slow")
    now = time.monotonic()
    finish_strip(master, fast, now)
    finish_strip(master, fast, now)
    held = master.job.scheduler.next_strip("slow", now, ["fast", "slow"])  # type: ignore[union-attr]
    assert held is not None
    slow.in_flight[(entry.job.id, held.id)] = Assignment(now, held.row_start, held.row_stop, 64)
    master._drop(slow, WorkerState.LOST, "worker slow: silent for 3.0 s")

    status = client.get("/api/status").get_json()
    progress = status["current"]["progress"]
    assert status["current"]["state"] == "running"
    assert 0 < progress["rows_done"] < 1000 and progress["fraction_done"] == progress["rows_done"] / 1000
    assert progress["strips_done"] == 2 and progress["eta_s"] is not None and progress["mp_per_s"] > 0
    assert [s["worker"] for s in progress["strip_map"] if s["state"] == "done"] == ["fast", "fast"]
    assert any(s["retried"] and s["state"] == "pending" for s in progress["strip_map"])
    assert progress["requeued"] == [{"strip": held.id, "worker": "slow", "reason": "worker slow: silent for 3.0 s"}]
    workers = {w["id"]: w for w in status["workers"]}
    assert workers["fast"]["state"] == "idle" and workers["fast"]["strips"] == 2
    assert workers["fast"]["speed_rows_per_s"] > 0 and workers["fast"]["bytes_out"] > 0
    assert workers["slow"]["state"] == "lost" and workers["slow"]["failures"] == 1
    assert "silent" in workers["slow"]["reason"]

    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("distgray_workers", (("state", "lost"),))] == 1
    assert samples[("distgray_workers", (("state", "idle"),))] == 1
    assert samples[("distgray_job_rows_done", ())] == progress["rows_done"]
    assert samples[("distgray_worker_strips_total", (("worker", "fast"),))] == 2
    assert samples[("distgray_worker_failures_total", (("worker", "slow"),))] == 1
    assert samples[("distgray_jobs", (("state", "running"),))] == 1


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


def test_unknown_and_unfinished_jobs_are_404(service: Service, client: FlaskClient, tmp_path: Path) -> None:
    assert client.get("/api/jobs/99").status_code == 404
    assert client.get("/api/jobs/99").get_json() == {"error": "no job 99"}
    assert client.get("/jobs/99/download").status_code == 404
    entry = service.enqueue(tmp_path / "queued.png", tmp_path / "out.png", "PNG")
    assert client.get(f"/jobs/{entry.id}/download").status_code == 404
    assert client.get(f"/jobs/{entry.id}/thumbnail/input.png").status_code == 404
    assert client.get(f"/jobs/{entry.id}/thumbnail/secret.png").status_code == 404
    assert client.get("/jobs/..%2f..%2fetc%2fpasswd/download").status_code == 404


def test_failed_job_shows_the_reason(service: Service, client: FlaskClient, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(png_bytes()[:60])
    entry = service.enqueue(bad, tmp_path / "out.png", "PNG")
    with pytest.raises(ImageError, match=r"broken\.png"):
        service.process(entry)
    job = client.get(f"/api/jobs/{entry.id}").get_json()
    assert job["state"] == "failed" and "broken.png" in job["error"] and not job["download"]
    assert not (tmp_path / "out.png").exists()


def test_upload_queues_a_job(service: Service, client: FlaskClient, tmp_path: Path) -> None:
    data = png_bytes()
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(data), "../../holiday photo.png")})
    assert resp.status_code == 201, resp.get_json()
    job = resp.get_json()
    assert job["state"] == "queued" and job["name"] == "../../holiday photo.png"
    entry = service.entry(job["id"])
    assert entry is not None and entry.uploaded
    assert entry.source.parent == tmp_path / "uploads" and entry.source.read_bytes() == data
    assert entry.output.parent == tmp_path / "results"
    again = client.post("/api/jobs", data={"image": (io.BytesIO(data), "holiday photo.png")}).get_json()
    assert service.entry(again["id"]).source != entry.source  # type: ignore[union-attr]  # never overwritten


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({}, 400, "no file"),
        ({"image": (io.BytesIO(b"hello, not a picture"), "notes.jpg")}, 400, "not an image"),
        ({"image": (io.BytesIO(b""), "empty.png")}, 400, "not an image"),
    ],
)
def test_bad_uploads_are_refused(client: FlaskClient, payload: dict[str, Any], status: int, message: str) -> None:
    resp = client.post("/api/jobs", data=payload)
    assert resp.status_code == status and message in resp.get_json()["error"]


def test_upload_of_a_format_we_do_not_take(client: FlaskClient) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PPM")
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(buf.getvalue()), "x.ppm")})
    assert resp.status_code == 400 and "PPM files are not accepted" in resp.get_json()["error"]


def png_claiming(width: int, height: int) -> bytes:
    """A 57-byte PNG whose header claims ``width`` x ``height`` RGB pixels (no pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


@pytest.mark.parametrize(("size", "max_pixels"), [((100_000, 100_000), None), ((100, 100), 1000), ((50, 50), 2000)])
def test_decompression_bomb_upload_is_refused_before_decoding(
    tmp_path: Path, size: tuple[int, int], max_pixels: int | None
) -> None:
    options = {} if max_pixels is None else {"max_pixels": max_pixels}
    client = create_app(make_service(tmp_path, **options)).test_client()
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(png_claiming(*size)), "bomb.png")})
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert "decompression-bomb limit" in error and "--max-pixels" in error
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").iterdir())


def test_upload_over_the_size_limit_is_413(tmp_path: Path) -> None:
    client = create_app(make_service(tmp_path, max_upload_bytes=1000)).test_client()
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(png_bytes((300, 300), "RGB") * 4), "big.png")})
    assert resp.status_code == 413 and "error" in resp.get_json()


def test_uploads_are_off_unless_serving(tmp_path: Path) -> None:
    client = create_app(make_service(tmp_path, serve=False)).test_client()
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(png_bytes()), "x.png")})
    assert resp.status_code == 403 and "serve" in resp.get_json()["error"]
    assert 'id="upload-form"' not in client.get("/").get_data(as_text=True)


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
