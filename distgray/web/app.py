"""The status page: a small Flask app over a :class:`~distgray.web.board.JobBoard`.

Routes (all read-only unless the master runs in serve mode):

- ``GET /``: the page (static HTML + JS that polls ``/api/status``; no build step).
- ``GET /api/status``: workers, the current job's progress and ETA, the run's job history.
- ``GET /api/jobs/<id>``: one job; ``GET /jobs/<id>/thumbnail/<input|output>.png``: its previews;
  ``GET /jobs/<id>/download``: its output file.
- ``POST /api/jobs``: upload an image as a new job (serve mode only).
- ``GET /healthz``: liveness; ``GET /metrics``: Prometheus text format.

No route takes a file path from the request: files are found through job records only, and
uploads are written under the board's upload folder with names the board chooses.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, abort, jsonify, render_template, request, send_file
from werkzeug.exceptions import HTTPException
from werkzeug.utils import secure_filename

from distgray import formats
from distgray.errors import ImageError
from distgray.imaging import files
from distgray.web.board import BoardEntry, JobBoard
from distgray.web.metrics import metrics_text

log = logging.getLogger(__name__)

THUMBNAILS = ("input", "output")


def create_app(board: JobBoard) -> Flask:
    """The page's Flask app over ``board`` (Flask's tutorial ``create_app``; no server here)."""
    app = Flask(__name__)
    # Flask refuses bigger request bodies with 413 before reading them.
    app.config["MAX_CONTENT_LENGTH"] = board.max_upload_bytes

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self'; frame-ancestors 'none'"
        if request.path.startswith("/api/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/api/") or request.path.startswith("/jobs/"):
            return jsonify(error=exc.description or exc.name), exc.code
        return exc

    @app.get("/")
    def index() -> str:
        return render_template("index.html", serve=board.serve)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(board.health())

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = metrics_text(board.status())
        return Response(body, content_type=content_type)

    @app.get("/api/status")
    def status() -> Any:
        return jsonify(board.status())

    @app.get("/api/jobs/<int:job_id>")
    def job(job_id: int) -> Any:
        return jsonify(_entry(board, job_id).describe())

    @app.get("/jobs/<int:job_id>/thumbnail/<which>.png")
    def thumbnail(job_id: int, which: str) -> Response:
        data = _entry(board, job_id).thumbnails.get(which) if which in THUMBNAILS else None
        if data is None:
            abort(404, description=f"job {job_id} has no {which} preview (yet)")
        return Response(data, content_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/jobs/<int:job_id>/download")
    def download(job_id: int) -> Response:
        entry = _entry(board, job_id)
        if not entry.downloadable:
            abort(404, description=f"job {job_id} has no output to download ({entry.describe(detail=False)['state']})")
        return send_file(entry.output.resolve(), as_attachment=True, download_name=entry.output.name)

    @app.post("/api/jobs")
    def upload() -> Any:
        if not board.serve:
            abort(403, description="uploads are off: start the master without --image (or with --serve)")
        file = request.files.get("image")
        if file is None or not file.filename:
            abort(400, description="no file: send the image as the form field 'image'")
        try:
            fmt, width, height = files.probe_upload(file.stream, board.max_pixels)
        except ImageError as exc:
            abort(400, description=f"{file.filename}: {exc}")
        file.stream.seek(0)
        name = secure_filename(file.filename) or "upload"
        stem = name.rsplit(".", 1)[0] if "." in name else name
        source, output = board.upload_paths(stem + formats.EXTENSIONS.get(fmt, ".png"), fmt)
        try:
            file.save(source)
        except OSError as exc:
            source.unlink(missing_ok=True)
            abort(507, description=f"cannot store the upload: {exc.strerror or exc}")
        entry = board.enqueue_upload(source, output, fmt, file.filename)
        described = entry.describe()
        log.info("job %d: %s uploaded (%dx%d %s), queued", described["id"], file.filename, width, height, fmt)
        return jsonify(described), 201

    return app


def _entry(board: JobBoard, job_id: int) -> BoardEntry:
    entry = board.entry(job_id)
    if entry is None:
        abort(404, description=f"no job {job_id}")
    return entry
