"""The status page's HTTP server on its own thread (werkzeug's threaded WSGI server)."""

from __future__ import annotations

import logging
import socket
import threading

from werkzeug.serving import BaseWSGIServer, make_server

from distgray.web.app import create_app
from distgray.web.board import JobBoard

log = logging.getLogger(__name__)


class Dashboard:
    """The status page's HTTP server, on its own thread; ``close()`` stops it."""

    def __init__(self, board: JobBoard, host: str, port: int) -> None:
        if not log.isEnabledFor(logging.DEBUG):  # one line per request only when debugging
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # We bind the socket ourselves: werkzeug answers a busy port with sys.exit, and the caller
        # decides whether a missing page is fatal. OSError here means "cannot listen".
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_server((host, port), family=family, backlog=64) as sock:
            self._server: BaseWSGIServer = make_server(host, port, create_app(board), threaded=True, fd=sock.fileno())
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
