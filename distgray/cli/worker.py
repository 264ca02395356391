"""Command line of ``distgray-worker``, and ``python -m distgray health`` (the container check)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from types import FrameType

from distgray import config as D
from distgray.cli.common import (
    DEFAULT_PORT,
    LOG_LEVELS,
    env_default,
    env_value,
    port_number,
    positive,
    setup_logging,
    throttle,
)

log = logging.getLogger(__name__)


# ====================================================================== worker
WORKER_EPILOG = """\
examples:
  python worker_client.py --host 192.168.1.10 --port 5003 --token <token printed by the master>
  DISTGRAY_TOKEN=<token> MASTER_HOST=192.168.1.10 python worker_client.py

The worker converts strips until the master says goodbye. If the master is unreachable or goes
away, it retries with exponential backoff for --retry-for seconds. Ctrl+C once: finish the strip in
hand and leave; twice: leave at once.
environment: MASTER_HOST, MASTER_PORT, DISTGRAY_TOKEN, DISTGRAY_WORKER_ID, DISTGRAY_LOG_LEVEL.
exit codes: 0 left cleanly, 1 could not connect or was refused, 2 usage error.
"""


def build_worker_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distgray-worker",
        description="A distgray worker: converts strips of images to grayscale for a distgray master.",
        epilog=WORKER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--host",
        default=env_value(env, "MASTER_HOST") or D.DEFAULT_WORKER_HOST,
        help="the master's address (env MASTER_HOST; default %(default)s)",
    )
    p.add_argument(
        "--port",
        type=port_number,
        default=env_default(p, env, ("MASTER_PORT",), port_number, DEFAULT_PORT),
        help="the master's port (env MASTER_PORT; default %(default)s)",
    )
    p.add_argument(
        "--token",
        default=env_value(env, "DISTGRAY_TOKEN"),
        help="the shared secret the master printed (env DISTGRAY_TOKEN)",
    )
    p.add_argument(
        "--id",
        default=env_value(env, "DISTGRAY_WORKER_ID") or "",
        help="a name for this worker (env DISTGRAY_WORKER_ID; default <hostname>-<pid>)",
    )
    p.add_argument(
        "--retry-for",
        type=float,
        default=D.WORKER_RETRY_FOR_S,
        metavar="SECONDS",
        help="keep trying to reach the master this long before giving up (default %(default)s)",
    )
    p.add_argument(
        "--throttle",
        type=throttle,
        default=1.0,
        metavar="FACTOR",
        help="testing and demo aid: make this worker FACTOR times slower per strip (sleeps), to show"
        " heterogeneous clusters on one machine (default 1 = full speed)",
    )
    p.add_argument("--max-tasks", type=positive, metavar="N", help="leave after N strips (for tests and demos)")
    p.add_argument(
        "--no-shared-memory",
        dest="shared_memory",
        action="store_false",
        help="always take pixels over TCP; by default, on the master's own machine, the worker reads"
        " them from the master's shared memory once it has proved it can",
    )
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=(env_value(env, "DISTGRAY_LOG_LEVEL") or "info").lower(),
        help="default %(default)s",
    )
    return p


def worker_main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = build_worker_parser(env).parse_args(argv)
    setup_logging(args.log_level)
    from distgray.worker.session import Worker, WorkerConfig

    worker = Worker(
        WorkerConfig(
            host=args.host,
            port=args.port,
            token=args.token.encode() if args.token else None,
            worker_id=args.id,
            retry_for_s=args.retry_for,
            max_tasks=args.max_tasks,
            throttle=args.throttle,
            shared_memory=args.shared_memory,
        )
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if worker.stopping:
            raise KeyboardInterrupt
        print("distgray-worker: finishing the current strip, then leaving (Ctrl+C again to quit now)", file=sys.stderr)
        worker.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return worker.run()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # last resort: one line, traceback only in debug
        if args.log_level == "debug":
            log.exception("failed")
        print(f"distgray-worker: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


# ====================================================================== health
def health_main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """``python -m distgray health``: the container health check (Dockerfile HEALTHCHECK).

    In a container whose main process is a master, healthy means its status page answers
    ``/healthz`` on FLASK_PORT; a worker container is healthy while its process runs.
    Exit 0 healthy, 1 not.
    """
    import urllib.request

    env = os.environ if env is None else env
    try:
        with open("/proc/1/cmdline", "rb") as fh:
            main_process = fh.read().split(b"\0")
    except OSError:
        main_process = []
    if b"master" not in main_process:
        return 0
    port = env_value(env, "FLASK_PORT") or str(D.DEFAULT_DASHBOARD_PORT)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:
        print(f"distgray health: status page on port {port} does not answer: {exc}", file=sys.stderr)
        return 1
