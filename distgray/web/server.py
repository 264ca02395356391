"""The status page's HTTP server on its own thread: waitress, a production WSGI server.

Why waitress and not the development server: it caps connections (``connection_limit``; the
rest wait in the backlog instead of costing a thread and a descriptor each), closes idle ones
(``channel_timeout``), and reads each request fully before a worker thread sees it, so slow or
idle clients cannot exhaust the master's descriptors (the worker port shares that budget).
Pure Python, no C build; a well-kept Pylons project.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

from waitress.server import BaseWSGIServer, create_server

from distgray.config import PAGE_CHANNEL_TIMEOUT_S, PAGE_CONNECTION_LIMIT
from distgray.web.app import PageSecurity, create_app
from distgray.web.board import JobBoard

log = logging.getLogger(__name__)

#: Threads answering requests: polls, previews and a download or two at once.
PAGE_THREADS = 6


class Dashboard:
    """The status page's HTTP server, on its own thread; ``close()`` stops it."""

    def __init__(self, board: JobBoard, host: str, port: int, security: PageSecurity | None = None) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("waitress").setLevel(logging.ERROR)
        # We bind the socket ourselves, so that OSError here means "cannot listen" (busy port).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=64)
        security = security if security is not None else PageSecurity.for_address(host)
        server = create_server(
            create_app(board, security),
            sockets=[sock],
            threads=PAGE_THREADS,
            connection_limit=PAGE_CONNECTION_LIMIT,
            channel_timeout=PAGE_CHANNEL_TIMEOUT_S,
            cleanup_interval=max(1, PAGE_CHANNEL_TIMEOUT_S // 3),
            ident="distgray",
            clear_untrusted_proxy_headers=True,
        )
        assert isinstance(server, BaseWSGIServer)
        self._server = server
        self.host, self.port = host, int(sock.getsockname()[1])
        self.security = security
        self._thread = threading.Thread(target=self._server.run, name="distgray-dashboard", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        server = self._server
        owners: list[object] = []
        sockets = server._map  # type: ignore[attr-defined]  # waitress's socket map: its loop runs while the map holds any

        def empty_the_map() -> None:  # on the loop's own thread, so no poll sees a closed socket
            owners.extend(sockets.values())
            sockets.clear()

        server.trigger.pull_trigger(empty_the_map)  # type: ignore[attr-defined]  # wakes the loop at once, not at its next poll
        self._thread.join(timeout=5.0)
        server.task_dispatcher.shutdown(timeout=1)
        for owner in owners:
            with contextlib.suppress(Exception):
                owner.close()  # type: ignore[attr-defined]
