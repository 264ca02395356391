"""Command line of ``distgray-worker``, and ``python -m distgray health`` (the container check)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from distgray import config as D
from distgray.cli.common import (
    DEFAULT_PORT,
    LOG_LEVELS,
    env_default,
    env_value,
    port_number,
    positive,
    read_token,
    setup_logging,
    throttle,
)

log = logging.getLogger(__name__)


# ====================================================================== worker
WORKER_EPILOG = """\
examples:
  the command the master prints (another machine: over TLS, pinned to the master's certificate):
    distgray-worker --host 192.168.1.10 --port 5003 --token=<token> --tls-fingerprint=<sha256>
  the token from a file or the environment keeps it out of `ps`:
    DISTGRAY_TOKEN_FILE=/run/secrets/distgray MASTER_HOST=192.168.1.10 distgray-worker ...

A worker talks to a master on another machine over TLS 1.3 and checks it is the master it was
told about: by the SHA-256 fingerprint the master printed (--tls-fingerprint), or by your own
CA (--tls-ca). To a master on this machine (127.0.0.1) it talks plaintext. --no-tls sends your
images and the results in the clear, and lets anyone in between change them.
The worker converts strips until the master says goodbye. If the master is unreachable, it retries
with exponential backoff for --retry-for seconds in all, then exits 1. Ctrl+C once: finish the
strip in hand and leave; twice: leave at once.
environment: MASTER_HOST, MASTER_PORT, DISTGRAY_TOKEN, DISTGRAY_TOKEN_FILE, DISTGRAY_TLS_FINGERPRINT,
DISTGRAY_TLS_CA, DISTGRAY_WORKER_ID, DISTGRAY_LOG_LEVEL.
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
        help="the shared secret the master printed; write --token=VALUE (env DISTGRAY_TOKEN)",
    )
    p.add_argument("--token-file", metavar="FILE", help="read the token from FILE instead (env DISTGRAY_TOKEN_FILE)")
    tls = p.add_argument_group("TLS (to a master on another machine)")
    tls.add_argument(
        "--tls-fingerprint",
        default=env_value(env, "DISTGRAY_TLS_FINGERPRINT"),
        metavar="SHA256",
        help="the master's certificate fingerprint, as the master printed it: only that master is"
        " accepted (env DISTGRAY_TLS_FINGERPRINT)",
    )
    tls.add_argument(
        "--tls-ca",
        type=Path,
        default=env_value(env, "DISTGRAY_TLS_CA"),
        metavar="PEM",
        help="verify the master's certificate (and --host as its name) with this CA (env DISTGRAY_TLS_CA)",
    )
    tls.add_argument("--tls-cert", type=Path, metavar="PEM", help="this worker's certificate, for a master that asks")
    tls.add_argument("--tls-key", type=Path, metavar="PEM", help="the key of --tls-cert")
    tls.add_argument(
        "--no-tls",
        action="store_true",
        help="talk plaintext to a master on another machine: anyone on the path can read and change"
        " the images (a master accepts it only if it runs with --no-tls too)",
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
    parser = build_worker_parser(env)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    from distgray.net.tls import ClientTLS, normalize_fingerprint
    from distgray.worker.session import Worker, WorkerConfig

    try:
        token = read_token(args.token, args.token_file, env)
        pin = normalize_fingerprint(args.tls_fingerprint) if args.tls_fingerprint else None
    except ValueError as exc:
        parser.error(str(exc))
    if args.tls_key is not None and args.tls_cert is None:
        parser.error("--tls-key needs --tls-cert")
    tls = ClientTLS(pin, args.tls_ca, args.tls_cert, args.tls_key) if pin or args.tls_ca else None
    config = WorkerConfig(
        host=args.host,
        port=args.port,
        token=token.encode() if token else None,
        worker_id=args.id,
        retry_for_s=args.retry_for,
        max_tasks=args.max_tasks,
        throttle=args.throttle,
        shared_memory=args.shared_memory,
        tls=tls,
        require_tls=not args.no_tls,
    )
    try:
        config.tls_for()
    except ValueError as exc:
        parser.error(str(exc))
    if args.no_tls and tls is None:
        log.warning(
            "worker: --no-tls: images and results cross the network in the clear; anyone on the path can"
            " read and change them"
        )
    worker = Worker(config)

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
