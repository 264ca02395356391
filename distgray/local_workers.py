"""Local worker processes: started by the master on its own machine, reaped after its BYE.

Light on imports on purpose: the command line starts these before loading NumPy and Pillow.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

log = logging.getLogger("distgray")


def spawn_local_workers(
    n: int, port: int, token: str | None, log_level: str, base_env: Mapping[str, str]
) -> list[subprocess.Popen[bytes]]:
    """Start ``n`` worker processes on loopback; the token goes by environment, not argv (ps shows argv)."""
    env = dict(base_env)
    env.pop("DISTGRAY_TOKEN", None)
    if token is not None:
        env["DISTGRAY_TOKEN"] = token
    level = "debug" if log_level == "debug" else "warning"
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distgray",
                "worker",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--id",
                f"local-{i + 1}",
                "--retry-for",
                "10",
                "--log-level",
                level,
            ],
            env=env,
        )
        for i in range(n)
    ]


def reap(
    procs: list[subprocess.Popen[bytes]], timeout: float = 10.0, stop: Sequence[subprocess.Popen[bytes]] = ()
) -> None:
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
