"""Local worker processes: started by the master on its own machine, reaped after its BYE.

Two ways to start them. :func:`fork_local_workers` (Linux, what the command line uses): forks of
the master made after it has loaded NumPy, Pillow and the worker code, and before it starts any
thread, so a worker is ready in milliseconds and shares those pages with the master instead of
importing everything again on a contended core. :func:`spawn_local_workers`: fresh
``python -m distgray worker`` processes (elsewhere, and for callers that have threads running).
Both give objects with the ``subprocess.Popen`` methods used here (``pid``, ``poll``, ``wait``,
``terminate``, ``kill``, ``returncode``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from distgray.config import DEFAULT_WORKER_HOST, LOCAL_WORKER_RETRY_FOR_S

log = logging.getLogger(__name__)


class WorkerProcess(Protocol):
    pid: int

    @property
    def returncode(self) -> int | Any: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


def worker_argv(i: int, port: int, log_level: str) -> list[str]:
    level = "debug" if log_level == "debug" else "warning"
    return [
        "--host",
        DEFAULT_WORKER_HOST,
        "--port",
        str(port),
        "--id",
        f"local-{i + 1}",
        "--retry-for",
        f"{LOCAL_WORKER_RETRY_FOR_S:g}",
        "--log-level",
        level,
    ]


def _worker_env(base_env: Mapping[str, str], token: str | None) -> dict[str, str]:
    env = dict(base_env)
    env.pop("DISTGRAY_TOKEN", None)
    if token is not None:
        env["DISTGRAY_TOKEN"] = token
    return env


class ForkedWorker:
    """A worker running in a fork of this process (see the module's docstring)."""

    def __init__(self, argv: list[str], env: Mapping[str, str], close: Sequence[socket.socket] = ()) -> None:
        pid = os.fork()
        if pid == 0:  # the child: never returns into the master's code
            code = 1
            try:
                for sock in close:  # the master's listening socket is not the worker's to hold
                    sock.close()
                logging.getLogger().handlers.clear()  # the worker sets up its own logging
                from distgray.cli.worker import worker_main

                code = worker_main(argv, env)
            except KeyboardInterrupt:
                code = 130
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
            time.sleep(0.005)
        return code

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


def fork_local_workers(
    n: int,
    port: int,
    token: str | None,
    log_level: str,
    base_env: Mapping[str, str],
    close: Sequence[socket.socket] = (),
) -> list[WorkerProcess]:
    """``n`` workers forked from this process, which must not have started any thread yet (a fork
    keeps only the forking thread). Falls back to :func:`spawn_local_workers` without ``os.fork``."""
    if not hasattr(os, "fork"):
        return spawn_local_workers(n, port, token, log_level, base_env)
    import numpy  # noqa: F401  loaded once here, shared with the forks
    from PIL import Image  # noqa: F401

    import distgray.worker.session  # noqa: F401

    env = _worker_env(base_env, token)
    return [ForkedWorker(worker_argv(i, port, log_level), env, close) for i in range(n)]


def spawn_local_workers(
    n: int, port: int, token: str | None, log_level: str, base_env: Mapping[str, str]
) -> list[WorkerProcess]:
    """Start ``n`` worker processes on loopback; the token goes by environment, not argv (ps shows argv)."""
    env = _worker_env(base_env, token)
    command = [sys.executable, "-m", "distgray", "worker"]
    return [subprocess.Popen([*command, *worker_argv(i, port, log_level)], env=env) for i in range(n)]


def reap(procs: Sequence[WorkerProcess], timeout: float = 10.0, stop: Sequence[WorkerProcess] = ()) -> None:
    """Wait for local workers to leave after BYE; kill any that do not. ``stop``: those to send
    SIGTERM first (it makes a worker leave at once, even while it is still trying to connect)."""
    for p in stop:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("local worker (pid %d) did not leave after BYE: killing it", p.pid)
            p.kill()
            p.wait()
