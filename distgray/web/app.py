"""The status page: a small Flask app over a :class:`~distgray.web.board.JobBoard`.

Routes (all read-only unless the master runs in serve mode):

- ``GET /``: the page (static HTML + JS that polls ``/api/status``; no build step).
- ``GET /api/status``: workers, the current job's progress and ETA, the run's job history.
- ``GET /api/jobs/<id>``: one job; ``GET /jobs/<id>/thumbnail/<input|output>.png``: its previews;
  ``GET /jobs/<id>/download``: its output file.
- ``POST /api/jobs``: upload one image or several (a batch: the form field ``image`` repeated) as
  new jobs, with an operation chain (fields ``op`` and ``ops``; serve mode only).
- ``GET /jobs/download.zip?ids=1,2``: the outputs of those jobs in one ZIP.
- ``GET /api/ops``: the operations the chain may name.
- ``GET /healthz``: liveness; ``GET /metrics``: Prometheus text format.

No route takes a file path from the request: files are found through job records only, and
uploads are written under the board's upload folder with names the board chooses.

Every request passes :class:`PageSecurity` first: a ``Host`` allow-list (IP literals, localhost,
this machine's names and those given: a DNS-rebinding site's name is refused), a same-origin
check on every state-changing request (``Sec-Fetch-Site``, else ``Origin``), and, when the page
is bound beyond loopback, its access token for requests from other machines (a cookie set from
``/?token=...``, or ``Authorization: Bearer ...``). ``/healthz`` answers without the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, send_file
from werkzeug.exceptions import HTTPException
from werkzeug.utils import secure_filename

from distgray import formats
from distgray.errors import ImageError
from distgray.imaging import files, ops
from distgray.web.board import BoardEntry, JobBoard
from distgray.web.metrics import metrics_text

log = logging.getLogger(__name__)

THUMBNAILS = ("input", "output")
COOKIE = "distgray_page"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Longest upload file name accepted (most filesystems' limit); longer ones are a 400.
MAX_NAME_BYTES = 255
#: Stored names keep at most this many bytes of the stem (room for "-NN_gray" and the extension).
STEM_BYTES = 120
#: Files in one upload (a batch), and jobs in one ZIP, at most.
MAX_UPLOAD_FILES = 100
#: The operations the upload form offers (any chain can be typed as well).
OFFERED_OPS = (
    *ops.KERNELS,
    "gaussian:2",
    "gaussian:4",
    "box:2",
    "unsharp:2,150,3",
    "median:3",
    "canny:50,150",
    "thumbnail:512x512",
    "resize:640x480",
    "reduce:2",
)


@dataclass(frozen=True)
class PageSecurity:
    """Who may use the page: the ``Host`` names it answers to, and its access token (if any)."""

    token: str | None = None
    hosts: frozenset[str] = field(default_factory=frozenset)  # besides IP literals and localhost

    @classmethod
    def for_address(cls, bound: str, token: str | None = None, extra: tuple[str, ...] = ()) -> PageSecurity:
        names = {bound, socket.gethostname(), *extra}
        if bound in ("0.0.0.0", "::", ""):
            names.add(socket.getfqdn())
        return cls(token, frozenset(n.lower() for n in names if n))

    def host_allowed(self, host_header: str) -> bool:
        name = _host_name(host_header)
        if not name:
            return False
        if name == "localhost" or name.endswith(".localhost") or name in self.hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True  # an address typed by the user: a rebinding site can only send its own name

    def authorized(self, cookie: str | None, authorization: str | None) -> bool:
        if self.token is None:
            return True
        offered = cookie or ""
        if authorization and authorization.startswith("Bearer "):
            offered = authorization[len("Bearer ") :]
        return hmac.compare_digest(offered.encode(), self.token.encode())


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):  # [v6]:port
        return host[1 : host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _from_this_machine() -> bool:
    """A request from loopback needs no token: it could read the page were it bound to loopback
    only, and the Host and origin checks above keep other sites' pages in a local browser out."""
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def _same_origin() -> bool:
    """Whether a state-changing request comes from the page itself (or from no browser at all)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (curl, scripts): CSRF is an attack through a browser
    return urlsplit(origin).netloc.lower() == request.host.lower()


def safe_upload_name(filename: str, fmt: str) -> str:
    """A name to store an upload under: safe characters only, the stem shortened so the stored
    name stays well within the filesystem's limit, the extension of its real format."""
    name = secure_filename(filename) or "upload"
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = stem.encode()[:STEM_BYTES].decode("utf-8", "ignore") or "upload"
    return stem + formats.EXTENSIONS.get(fmt, ".png")


def create_app(board: JobBoard, security: PageSecurity | None = None) -> Flask:
    """The page's Flask app over ``board`` (Flask's tutorial ``create_app``; no server here)."""
    app = Flask(__name__)
    # Flask refuses bigger request bodies with 413 before reading them.
    app.config["MAX_CONTENT_LENGTH"] = board.max_upload_bytes
    guard = security if security is not None else PageSecurity.for_address("127.0.0.1")

    @app.before_request
    def check() -> Any:
        if not guard.host_allowed(request.host):
            abort(
                400,
                description="unknown Host header: this page answers to its address, localhost, or"
                " the names given with --dashboard-allow-host",
            )
        if request.method not in SAFE_METHODS and not _same_origin():
            abort(403, description="cross-origin request refused")
        if request.path == "/healthz" or guard.token is None or _from_this_machine():
            return None
        offered = request.args.get("token")
        if offered is not None and request.method == "GET" and guard.authorized(offered, None):
            resp = redirect(request.path, code=303)  # the token leaves the address bar and history
            resp.set_cookie(COOKIE, offered, httponly=True, samesite="Strict")
            return resp
        if not guard.authorized(request.cookies.get(COOKIE), request.headers.get("Authorization")):
            abort(
                401,
                description="this page needs its access token: open the address the master printed"
                " (ending in ?token=...), or send Authorization: Bearer <token>",
            )
        return None

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

    @app.get("/api/ops")
    def operations() -> Any:
        return jsonify({"offered": list(OFFERED_OPS), "known": ops.known()})

    @app.get("/jobs/download.zip")
    def download_zip() -> Response:
        try:
            ids = [int(i) for i in request.args.get("ids", "").split(",") if i.strip()]
        except ValueError:
            abort(400, description="ids: job numbers, comma-separated")
        if not ids or len(ids) > MAX_UPLOAD_FILES:
            abort(400, description=f"ids: 1 to {MAX_UPLOAD_FILES} job numbers")
        entries = [_entry(board, i) for i in dict.fromkeys(ids)]
        ready = [e for e in entries if e.downloadable]
        if not ready:
            abort(404, description="none of these jobs has an output to download (yet)")
        spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 (send_file closes it)
        with zipfile.ZipFile(spool, "w", zipfile.ZIP_STORED) as archive:  # images are compressed already
            for entry in ready:
                archive.write(entry.output, arcname=entry.output.name)
        spool.seek(0)
        name = f"distgray-jobs-{ids[0]}-{ids[-1]}.zip" if len(ids) > 1 else f"distgray-job-{ids[0]}.zip"
        return send_file(spool, mimetype="application/zip", as_attachment=True, download_name=name)

    @app.post("/api/jobs")
    def upload() -> Any:
        if not board.serve:
            abort(403, description="uploads are off: start the master without --image (or with --serve)")
        given = [f for f in request.files.getlist("image") if f.filename]
        if not given:
            abort(400, description="no file: send the image as the form field 'image' (repeat it for several)")
        if len(given) > MAX_UPLOAD_FILES:
            abort(400, description=f"{len(given)} files: {MAX_UPLOAD_FILES} at most in one upload")
        # The form's operation (either field, even empty: gray only); neither field: the run's --op.
        chain: str | None = None
        if "op" in request.form or "ops" in request.form:
            try:
                chain = ops.spell(ops.parse_chain([request.form.get("op", ""), request.form.get("ops", "")]))
            except ValueError as exc:
                abort(400, description=f"operations: {exc}")
        accepted, rejected = [], []
        for file in given:
            try:
                accepted.append(_store_upload(board, file, chain))
            except HTTPException as exc:  # one file refused: the request's answer, or one line of a batch's
                if len(given) == 1:
                    raise
                rejected.append({"name": file.filename, "error": exc.description})
        if len(given) == 1:
            return jsonify(accepted[0]), 201
        body = {"jobs": accepted, "rejected": rejected, "ops": accepted[0].get("ops", chain) if accepted else chain}
        return jsonify(body), 201 if accepted else 400

    return app


def _store_upload(board: JobBoard, file: Any, chain: str | None) -> dict[str, Any]:
    """One uploaded file stored and queued with ``chain``; its job described. Aborts (HTTP 400 or
    507, a one-line reason) for a file that is not an image this run takes."""
    if len(file.filename.encode()) > MAX_NAME_BYTES:
        abort(400, description=f"file name too long: {MAX_NAME_BYTES} bytes at most")
    try:
        fmt, width, height = files.probe_upload(file.stream, board.max_pixels)
    except ImageError as exc:
        abort(400, description=f"{file.filename}: {exc}")
    file.stream.seek(0)
    source, output = board.upload_paths(safe_upload_name(file.filename, fmt), fmt)
    try:
        file.save(source)
    except OSError as exc:
        source.unlink(missing_ok=True)
        abort(507, description=f"cannot store the upload: {exc.strerror or exc}")
    entry = board.enqueue_upload(source, output, fmt, file.filename, ops=chain)
    described = entry.describe()
    log.info("job %d: %s uploaded (%dx%d %s), queued", described["id"], file.filename, width, height, fmt)
    return described


def _entry(board: JobBoard, job_id: int) -> BoardEntry:
    entry = board.entry(job_id)
    if entry is None:
        abort(404, description=f"no job {job_id}")
    return entry
