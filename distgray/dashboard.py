"""The status page: a small Flask app over a :class:`~distgray.service.Service`, and its server thread.

Routes (all read-only unless the master runs in serve mode):

- ``GET /``: the page (static HTML + JS that polls ``/api/status``; no build step).
- ``GET /api/status``: workers, the current job's progress and ETA, the run's job history.
- ``GET /api/jobs/<id>``: one job; ``GET /jobs/<id>/thumbnail/<input|output>.png``: its previews;
  ``GET /jobs/<id>/download``: its output file.
- ``POST /api/jobs``: upload an image as a new job (serve mode only).
- ``GET /healthz``: liveness; ``GET /metrics``: Prometheus text format.

No route takes a file path from the request: files are found through job records only, and
uploads are written under the service's upload folder with names the service chooses.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from flask import Flask, Response, abort, jsonify, render_template, request, send_file
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.utils import secure_filename

from distgray import fileio, imaging
from distgray.errors import ImageError
from distgray.metrics import metrics_text
from distgray.service import JobEntry, Service

log = logging.getLogger("distgray")

THUMBNAILS = ("input", "output")


def create_app(service: Service) -> Flask:
    app = Flask(__name__)
    # Flask refuses bigger request bodies with 413 before reading them.
    app.config["MAX_CONTENT_LENGTH"] = service.options.max_upload_bytes

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
        return render_template("index.html", serve=service.options.serve)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok", workers=len(service.master.live_workers()))

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = metrics_text(service.status())
        return Response(body, content_type=content_type)

    @app.get("/api/status")
    def status() -> Any:
        return jsonify(service.status())

    @app.get("/api/jobs/<int:job_id>")
    def job(job_id: int) -> Any:
        return jsonify(_entry(service, job_id).describe())

    @app.get("/jobs/<int:job_id>/thumbnail/<which>.png")
    def thumbnail(job_id: int, which: str) -> Response:
        data = _entry(service, job_id).thumbnails.get(which) if which in THUMBNAILS else None
        if data is None:
            abort(404, description=f"job {job_id} has no {which} preview (yet)")
        return Response(data, content_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/jobs/<int:job_id>/download")
    def download(job_id: int) -> Response:
        entry = _entry(service, job_id)
        if entry.state.value != "done" or not entry.output.is_file():
            abort(404, description=f"job {job_id} has no output to download ({entry.state.value})")
        return send_file(entry.output.resolve(), as_attachment=True, download_name=entry.output.name)

    @app.post("/api/jobs")
    def upload() -> Any:
        if not service.options.serve:
            abort(403, description="uploads are off: start the master without --image (or with --serve)")
        file = request.files.get("image")
        if file is None or not file.filename:
            abort(400, description="no file: send the image as the form field 'image'")
        try:
            fmt, width, height = fileio.probe_upload(file.stream, service.options.max_pixels)
        except ImageError as exc:
            abort(400, description=f"{file.filename}: {exc}")
        file.stream.seek(0)
        name = secure_filename(file.filename) or "upload"
        stem = name.rsplit(".", 1)[0] if "." in name else name
        source, output = service.upload_paths(stem + imaging.EXTENSIONS.get(fmt, ".png"), fmt)
        try:
            file.save(source)
        except OSError as exc:
            source.unlink(missing_ok=True)
            abort(507, description=f"cannot store the upload: {exc.strerror or exc}")
        entry = service.enqueue(source, output, fmt, name=file.filename, uploaded=True)
        log.info("job %d: %s uploaded (%dx%d %s), queued", entry.id, file.filename, width, height, fmt)
        return jsonify(entry.describe()), 201

    return app


def _entry(service: Service, job_id: int) -> JobEntry:
    entry = service.entry(job_id)
    if entry is None:
        abort(404, description=f"no job {job_id}")
    return entry


class Dashboard:
    """The status page's HTTP server, on its own thread; ``close()`` stops it."""

    def __init__(self, service: Service, host: str, port: int) -> None:
        if not log.isEnabledFor(logging.DEBUG):  # one line per request only when debugging
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # We bind the socket ourselves: werkzeug answers a busy port with sys.exit, and the caller
        # decides whether a missing page is fatal. OSError here means "cannot listen".
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_server((host, port), family=family, backlog=64) as sock:
            self._server: BaseWSGIServer = make_server(host, port, create_app(service), threaded=True, fd=sock.fileno())
        self.host, self.port = host, int(self._server.socket.getsockname()[1])
        # serve_forever checks for shutdown every poll_interval: 0.5 s by default, which every
        # master run would wait at exit.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="distgray-dashboard", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
