"""Every route of the status page, through Flask's test client, over a small fake JobBoard.

The page sees only the board (``distgray.web.board.JobBoard``): no master, engine or socket. What
the real board (the job service over the built-in cluster) puts on the page is tested in
``test_service.py``.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from distgray.web.app import PageSecurity, create_app


@dataclass
class FakeEntry:
    id: int
    name: str
    output: Path
    state: str = "queued"
    thumbnails: dict[str, bytes] = field(default_factory=dict)

    @property
    def downloadable(self) -> bool:
        return self.state == "done" and self.output.is_file()

    def describe(self, detail: bool = True) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "state": self.state, "download": self.downloadable}


@dataclass
class FakeBoard:
    root: Path
    serve: bool = True
    max_upload_bytes: int = 512 << 20
    max_pixels: int = 89_478_485
    entries: dict[int, FakeEntry] = field(default_factory=dict)
    shown: dict[str, Any] = field(default_factory=lambda: {"current": None, "jobs": [], "workers": []})
    uploads: list[tuple[Path, Path, str, str]] = field(default_factory=list)
    chains: list[str | None] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        return self.shown

    def entry(self, job_id: int) -> FakeEntry | None:
        return self.entries.get(job_id)

    def upload_paths(self, filename: str, fmt: str) -> tuple[Path, Path]:
        n = len(self.uploads) + 1
        upload = self.root / "uploads" / f"{n}-{filename}"
        upload.parent.mkdir(parents=True, exist_ok=True)
        return upload, self.root / "results" / f"{n}-{filename}"

    def enqueue_upload(self, source: Path, output: Path, fmt: str, name: str, ops: str | None = None) -> FakeEntry:
        self.uploads.append((source, output, fmt, name))
        self.chains.append(ops)
        entry = FakeEntry(len(self.entries) + 1, name, output)
        self.entries[entry.id] = entry
        return entry

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "workers": len(self.shown["workers"])}


def make_board(tmp_path: Path, **overrides: Any) -> FakeBoard:
    return FakeBoard(tmp_path, **overrides)


@pytest.fixture
def board(tmp_path: Path) -> FakeBoard:
    return make_board(tmp_path)


@pytest.fixture
def client(board: FakeBoard) -> FlaskClient:
    return create_app(board).test_client()


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


def test_status_and_metrics_are_the_boards(board: FakeBoard, client: FlaskClient) -> None:
    assert client.get("/api/status").get_json() == board.shown
    assert client.get("/api/status").headers["Cache-Control"] == "no-store"
    board.shown = {
        "current": {"id": 1, "state": "running", "progress": {"rows_done": 300, "fraction_done": 0.3}},
        "jobs": [{"id": 1, "state": "running"}, {"id": 2, "state": "failed"}],
        "workers": [
            {
                "id": "fast",
                "state": "idle",
                "strips": 2,
                "rows": 300,
                "bytes_in": 10,
                "bytes_out": 20,
                "failures": 0,
                "speed_rows_per_s": 250.0,
                "speed_mp_per_s": 0.02,
            },
            {
                "id": "slow",
                "state": "lost",
                "strips": 0,
                "rows": 0,
                "bytes_in": 5,
                "bytes_out": 0,
                "failures": 1,
                "speed_rows_per_s": None,
                "speed_mp_per_s": None,
            },
        ],
    }
    assert client.get("/api/status").get_json() == board.shown
    assert client.get("/healthz").get_json() == {"status": "ok", "workers": 2}
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("distgray_workers", (("state", "lost"),))] == 1
    assert samples[("distgray_workers", (("state", "idle"),))] == 1
    assert samples[("distgray_worker_strips_total", (("worker", "fast"),))] == 2
    assert samples[("distgray_worker_failures_total", (("worker", "slow"),))] == 1
    assert samples[("distgray_jobs", (("state", "running"),))] == 1
    assert samples[("distgray_jobs", (("state", "failed"),))] == 1
    assert samples[("distgray_worker_speed_rows_per_second", (("worker", "fast"),))] == 250.0
    assert ("distgray_worker_speed_rows_per_second", (("worker", "slow"),)) not in samples


def test_previews_and_download_of_a_finished_job(board: FakeBoard, client: FlaskClient, tmp_path: Path) -> None:
    output = tmp_path / "results" / "photo_gray.png"
    output.parent.mkdir(parents=True)
    output.write_bytes(png_bytes(mode="L"))
    thumbs = {"input": png_bytes(), "output": png_bytes(mode="L")}
    board.entries[7] = FakeEntry(7, "photo.png", output, "done", thumbs)
    assert client.get("/api/jobs/7").get_json() == {"id": 7, "name": "photo.png", "state": "done", "download": True}
    for which in ("input", "output"):
        thumb = client.get(f"/jobs/7/thumbnail/{which}.png")
        assert thumb.status_code == 200 and thumb.mimetype == "image/png" and thumb.data == thumbs[which]
    download = client.get("/jobs/7/download")
    assert download.status_code == 200 and download.data == output.read_bytes()
    assert (
        "attachment" in download.headers["Content-Disposition"]
        and "photo_gray.png" in download.headers["Content-Disposition"]
    )


def test_unknown_and_unfinished_jobs_are_404(board: FakeBoard, client: FlaskClient, tmp_path: Path) -> None:
    assert client.get("/api/jobs/99").status_code == 404
    assert client.get("/api/jobs/99").get_json() == {"error": "no job 99"}
    assert client.get("/jobs/99/download").status_code == 404
    entry = board.entries[1] = FakeEntry(1, "queued.png", tmp_path / "out.png")
    assert client.get(f"/jobs/{entry.id}/download").status_code == 404
    assert "queued" in client.get(f"/jobs/{entry.id}/download").get_json()["error"]
    entry.state = "done"  # done, but its output is gone: nothing to download
    assert client.get(f"/jobs/{entry.id}/download").status_code == 404
    assert client.get(f"/jobs/{entry.id}/thumbnail/input.png").status_code == 404
    assert client.get(f"/jobs/{entry.id}/thumbnail/secret.png").status_code == 404
    assert client.get("/jobs/..%2f..%2fetc%2fpasswd/download").status_code == 404


def test_upload_queues_a_job(board: FakeBoard, client: FlaskClient, tmp_path: Path) -> None:
    data = png_bytes()
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(data), "../../holiday photo.jpg")})
    assert resp.status_code == 201, resp.get_json()
    job = resp.get_json()
    assert job["state"] == "queued" and job["name"] == "../../holiday photo.jpg"
    ((source, output, fmt, name),) = board.uploads
    # The board is asked for paths under a safe name with the format's own extension (a PNG sent as .jpg).
    assert source.name == "1-holiday_photo.png" and fmt == "PNG" and name == "../../holiday photo.jpg"
    assert source.read_bytes() == data and output == tmp_path / "results" / "1-holiday_photo.png"


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
    client = create_app(make_board(tmp_path, **options)).test_client()
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(png_claiming(*size)), "bomb.png")})
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert "decompression-bomb limit" in error and "--max-pixels" in error
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").iterdir())


def test_upload_over_the_size_limit_is_413(tmp_path: Path) -> None:
    client = create_app(make_board(tmp_path, max_upload_bytes=1000)).test_client()
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(png_bytes((300, 300), "RGB") * 4), "big.png")})
    assert resp.status_code == 413 and "error" in resp.get_json()


def test_uploads_are_off_unless_serving(tmp_path: Path) -> None:
    client = create_app(make_board(tmp_path, serve=False)).test_client()
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(png_bytes()), "x.png")})
    assert resp.status_code == 403 and "serve" in resp.get_json()["error"]
    assert 'id="upload-form"' not in client.get("/").get_data(as_text=True)


# ---------------------------------------------------------------- a locked page
def secured(
    board: FakeBoard, token: str | None = None, bound: str = "127.0.0.1", peer: str = "10.0.0.9"
) -> FlaskClient:
    client = create_app(board, PageSecurity.for_address(bound, token, ("dash.example.org",))).test_client()
    client.environ_base["REMOTE_ADDR"] = peer  # requests from another machine (loopback needs no token)
    return client


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:5006", "127.0.0.1.evil.example.com"])
def test_a_foreign_host_header_is_refused_everywhere(board: FakeBoard, host: str) -> None:
    client = secured(board)
    for path in ("/", "/api/status", "/metrics", "/healthz"):
        resp = client.get(path, headers={"Host": host})
        assert resp.status_code == 400, (path, host)
    assert client.post("/api/jobs", headers={"Host": host}).status_code == 400


@pytest.mark.parametrize("host", ["127.0.0.1:5006", "localhost:5006", "[::1]:5006", "10.1.2.3", "dash.example.org"])
def test_addresses_localhost_and_given_names_are_answered(board: FakeBoard, host: str) -> None:
    assert secured(board).get("/api/status", headers={"Host": host}).status_code == 200


def test_a_cross_origin_post_is_refused(board: FakeBoard) -> None:
    client = secured(board)
    upload = {"image": (io.BytesIO(png_bytes()), "x.png")}
    resp = client.post("/api/jobs", data=upload, headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status_code == 403 and board.uploads == []
    upload = {"image": (io.BytesIO(png_bytes()), "x.png")}
    resp = client.post("/api/jobs", data=upload, headers={"Origin": "http://evil.example.com"})
    assert resp.status_code == 403 and board.uploads == []
    upload = {"image": (io.BytesIO(png_bytes()), "x.png")}
    resp = client.post(
        "/api/jobs", data=upload, headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    )
    assert resp.status_code == 201 and len(board.uploads) == 1


def test_a_page_with_a_token_refuses_anonymous_requests(board: FakeBoard) -> None:
    token = "page-secret-0123456789"
    client = secured(board, token, bound="0.0.0.0")
    for path in ("/", "/api/status", "/metrics", "/api/jobs/1"):
        assert client.get(path).status_code == 401, path
    assert client.post("/api/jobs", data={"image": (io.BytesIO(png_bytes()), "x.png")}).status_code == 401
    assert client.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/healthz").status_code == 200  # the container check needs no token
    assert client.get("/api/status", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # The printed address logs the browser in: a cookie, and the token leaves the address bar.
    resp = client.get(f"/?token={token}")
    assert resp.status_code == 303 and resp.headers["Location"] == "/"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/api/status").status_code == 200
    assert secured(board, token, bound="0.0.0.0").get("/?token=wrong").status_code == 401
    # From the machine itself no token is needed (the Host and origin checks still apply).
    local = secured(board, token, bound="0.0.0.0", peer="127.0.0.1")
    assert local.get("/api/status").status_code == 200
    assert local.get("/api/status", headers={"Host": "evil.example.com"}).status_code == 400


def test_the_page_and_the_api_never_carry_the_worker_token(tmp_path: Path) -> None:
    """What the real service puts on the page: the worker command, token left out."""
    from distgray.cli.run import TOKEN_PLACEHOLDER

    board = make_board(tmp_path)
    board.shown = {**board.shown, "worker_command": f"python -m distgray worker --token={TOKEN_PLACEHOLDER}"}
    client = create_app(board).test_client()
    assert TOKEN_PLACEHOLDER in client.get("/api/status").get_data(as_text=True)


def test_long_upload_names_are_shortened_or_refused_cleanly(board: FakeBoard, client: FlaskClient) -> None:
    name = "é" * 110 + ".jpg"  # 224 bytes: accepted under a shortened name
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(png_bytes()), name)})
    assert resp.status_code == 201
    source = board.uploads[0][0]
    assert source.suffix == ".png" and len(source.name.encode()) < 200
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(png_bytes()), "a" * 300 + ".png")})
    assert resp.status_code == 400 and "too long" in resp.get_json()["error"]
    name = "x" * 250 + ".png"
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(png_bytes()), name)})
    assert resp.status_code == 201 and len(board.uploads[-1][0].name) <= 130


def test_several_files_with_an_operation_make_a_batch(board: FakeBoard, client: FlaskClient) -> None:
    files = [
        (io.BytesIO(png_bytes()), "one.png"),
        (io.BytesIO(b"not a picture"), "bad.jpg"),
        (io.BytesIO(png_bytes()), "two.png"),
    ]
    resp = client.post("/api/jobs", data={"image": files, "op": "gaussian:4", "ops": "find_edges"})
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert [j["name"] for j in body["jobs"]] == ["one.png", "two.png"]
    assert body["ops"] == "gaussian:4;find_edges" and board.chains == ["gaussian:4;find_edges"] * 2
    ((name, why),) = [(r["name"], r["error"]) for r in body["rejected"]]
    assert name == "bad.jpg" and "not an image" in why  # one bad file, the rest queued


def test_an_upload_that_names_no_operation_gets_the_runs_chain(board: FakeBoard, client: FlaskClient) -> None:
    assert client.post("/api/jobs", data={"image": (io.BytesIO(png_bytes()), "a.png")}).status_code == 201
    assert client.post("/api/jobs", data={"image": (io.BytesIO(png_bytes()), "b.png"), "op": ""}).status_code == 201
    assert board.chains == [None, ""]  # no field: the run's --op; the form's empty choice: gray only


@pytest.mark.parametrize("chain", ["sepia", "gaussian:x", "resize:12"])
def test_an_unknown_operation_is_refused_naming_what_exists(client: FlaskClient, chain: str) -> None:
    resp = client.post("/api/jobs", data={"image": (io.BytesIO(png_bytes()), "a.png"), "ops": chain})
    assert resp.status_code == 400
    assert chain in resp.get_json()["error"] and "canny:LOW,HIGH" in resp.get_json()["error"]


def test_the_operations_offered(client: FlaskClient) -> None:
    body = client.get("/api/ops").get_json()
    assert "gaussian:4" in body["offered"] and "canny:50,150" in body["offered"] and "find_edges" in body["known"]


def test_a_batch_downloads_as_one_zip(board: FakeBoard, client: FlaskClient, tmp_path: Path) -> None:
    import zipfile

    for i, name in enumerate(("a_gray.png", "b_gray.jpg", "c_gray.png"), start=1):
        out = tmp_path / name
        out.write_bytes(name.encode() * 10)
        board.entries[i] = FakeEntry(i, name, out, state="done" if i < 3 else "running")
    resp = client.get("/jobs/download.zip?ids=1,2,3")
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(resp.data))
    assert sorted(archive.namelist()) == ["a_gray.png", "b_gray.jpg"]  # the unfinished one is not in it
    assert archive.read("a_gray.png") == b"a_gray.png" * 10
    assert client.get("/jobs/download.zip?ids=3").status_code == 404
    assert client.get("/jobs/download.zip?ids=9").status_code == 404
    assert client.get("/jobs/download.zip?ids=x").status_code == 400
