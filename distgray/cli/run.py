"""One master run, composed: bind the port and fork local workers early, then start the master,
its engine, the job service, the status page, and run the jobs.

Start-up order matters and lives here only: :func:`start_early` binds the workers' port and
forks the local workers *before* NumPy, Pillow or any thread exists in this process (a fork keeps
only the forking thread), so they are ready in milliseconds while the master loads the rest (a
tiny job: 0.55 s -> 0.25 s end to end). This module therefore imports nothing heavy at its top.

The CLI parses flags into :class:`RunOptions` and calls :func:`run_master`; everything here
takes its settings from those options (and the environment mapping inside them), never from
``sys.argv`` or ``os.environ``. Status lines for the person at the terminal go to stderr; the
summary table goes to stdout.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from distgray import config
from distgray.cli.local_workers import WorkerProcess, fork_local_workers, reap, spawn_local_workers
from distgray.errors import DistgrayError
from distgray.net.channel import listen

if TYPE_CHECKING:
    from distgray.jobs.batch import BatchOptions
    from distgray.jobs.entries import ServiceOptions
    from distgray.jobs.service import Service
    from distgray.web.server import Dashboard

log = logging.getLogger(__name__)


def _say(text: str) -> None:
    """A line for the person at the terminal: summaries go to stdout."""
    print(text, flush=True)


def start_early(
    host: str, port: int, local_workers: int, token: str | None, log_level: str, env: Mapping[str, str]
) -> tuple[socket.socket, list[WorkerProcess]]:
    """Bind the workers' port and fork ``local_workers`` workers, before anything heavy loads.

    Forks of this process once NumPy, Pillow and the worker code are loaded (no thread runs yet):
    ready in milliseconds, instead of several interpreters importing on shared cores."""
    try:
        listener = listen(host, port)
    except OSError as exc:
        raise DistgrayError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    procs: list[WorkerProcess] = []
    if local_workers:
        bound = listener.getsockname()[1]
        procs = fork_local_workers(local_workers, bound, token, log_level, env, close=[listener])
    return listener, procs


@dataclass(frozen=True)
class RunOptions:
    """Everything one ``distgray-master`` run needs (see ``--help`` for each)."""

    image: Path | None = None
    output: Path | None = None
    format: str | None = None
    serve: bool = False
    output_dir: Path = Path(config.DEFAULT_OUTPUT_DIR)
    upload_dir: Path | None = None  # default: <output_dir>/uploads
    max_upload_mb: int = config.MAX_UPLOAD_MB
    quality: int | None = None
    png_level: int = config.DEFAULT_PNG_LEVEL
    max_pixels: int = config.DEFAULT_MAX_PIXELS
    report: Path | None = None
    host: str = config.DEFAULT_HOST
    port: int = config.DEFAULT_PORT
    dashboard: bool = True
    dashboard_host: str = config.DEFAULT_DASHBOARD_HOST
    dashboard_port: int = config.DEFAULT_DASHBOARD_PORT
    local_workers: int = 0
    min_workers: int = 1
    token: str | None = None
    no_auth: bool = False
    strip_rows: int | None = None
    shared_memory: bool = True
    encode_on_master: bool = False
    heartbeat: float = config.HEARTBEAT_INTERVAL_S
    heartbeat_timeout: float = config.HEARTBEAT_TIMEOUT_S
    timeout: float | None = None
    log_level: str = "info"
    env: Mapping[str, str] = field(default_factory=dict)  # passed on to local worker processes
    batch: BatchOptions | None = None  # several images: see distgray.batch


def run_master(
    opts: RunOptions, listener: socket.socket | None = None, procs: list[WorkerProcess] | None = None
) -> int:
    """Convert ``opts.image`` and exit, or serve: run queued and uploaded jobs until stopped.

    Returns the exit code: 0 when every job finished, 1 when some failed (serve mode; a single
    image that fails raises instead). ``listener`` and ``procs``: a socket already listening and
    local workers already started for it (the command line starts them early); they are closed
    and reaped here.
    """
    from distgray.engines.cluster import ClusterEngine
    from distgray.jobs.service import Service
    from distgray.master.server import Master, MasterConfig

    token = None if opts.no_auth else (opts.token or config.new_token())
    master_config = MasterConfig(
        host=opts.host,
        port=opts.port,
        token=token.encode() if token else None,
        heartbeat_interval_s=opts.heartbeat,
        heartbeat_timeout_s=opts.heartbeat_timeout,
        strip_rows=opts.strip_rows,
        shared_memory=opts.shared_memory,
    )
    master = Master(master_config)
    early = procs is not None  # the command line already started the local workers
    procs = [] if procs is None else procs
    try:
        host, port = master.start(listener)
    except OSError as exc:
        reap(procs)
        raise DistgrayError(f"cannot listen on {opts.host}:{opts.port}: {exc.strerror or exc}") from exc
    dashboard: Dashboard | None = None
    bye = "master stopping"
    try:
        worker_cmd = _announce(host, port, token)
        engine = ClusterEngine(master, procs, opts.min_workers)
        service = Service(engine, _service_options(opts, worker_cmd), _say)
        # Local workers start (importing NumPy and Pillow) while the page starts and the image decodes.
        if not early:
            procs += spawn_local_workers(opts.local_workers, port, token, opts.log_level, opts.env)
        dashboard = _start_dashboard(service, opts)
        if opts.batch is not None:
            from distgray.jobs.batch import Batch, discover, plan

            items = discover(opts.batch)
            plan(items, opts.batch)
            code = Batch(service, items, opts.batch, _say).run(worker_cmd)
            bye = "batch finished"
            return code
        if opts.image is not None:
            assert opts.output is not None and opts.format is not None
            entry = service.enqueue(opts.image, opts.output, opts.format)
            if not opts.serve:
                service.process(entry)
                bye = "job finished"
                return 0
        print("distgray-master: serving; Ctrl+C (or SIGTERM) stops", file=sys.stderr, flush=True)
        try:
            service.serve_forever(threading.Event())
        except KeyboardInterrupt:
            print("distgray-master: stopping", file=sys.stderr)
        return 1 if service.any_failed else 0
    finally:
        if dashboard is not None:
            dashboard.close()
        master.close(bye)
        # Those that joined heard BYE and are leaving; one still trying to connect would keep
        # trying (--retry-for) while we wait: tell it to stop now.
        joined = set(master.workers)
        reap(procs, stop=[p for i, p in enumerate(procs) if f"local-{i + 1}" not in joined])


def _service_options(opts: RunOptions, worker_cmd: str) -> ServiceOptions:
    from distgray.jobs.entries import ServiceOptions

    return ServiceOptions(
        quality=opts.quality,
        png_level=opts.png_level,
        max_pixels=opts.max_pixels,
        min_workers=opts.min_workers,
        timeout=opts.timeout,
        report=opts.report,
        output_dir=opts.output_dir,
        upload_dir=opts.upload_dir or opts.output_dir / "uploads",
        max_upload_bytes=opts.max_upload_mb << 20,
        serve=opts.serve,
        worker_command=worker_cmd,
        previews=opts.dashboard,
        strip_encoding=not opts.encode_on_master,
    )


def _start_dashboard(service: Service, opts: RunOptions) -> Dashboard | None:
    if not opts.dashboard:
        return None
    from distgray.web.server import Dashboard  # Flask only where the page is served

    try:
        dashboard = Dashboard(service, opts.dashboard_host, opts.dashboard_port)
    except OSError as exc:
        where = f"{opts.dashboard_host}:{opts.dashboard_port}"
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        if opts.serve:  # the page is how a serving master is used: without it, stop
            raise DistgrayError(f"status page: cannot listen on {where}: {why}") from exc
        print(
            f"distgray-master: WARNING: status page not started: cannot listen on {where}"
            f" ({why}); pick another with --dashboard-port",
            file=sys.stderr,
        )
        return None
    print(f"distgray-master: status page at {dashboard.url}", file=sys.stderr, flush=True)
    return dashboard


def _reachable_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses, as its own name resolves (no traffic sent)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos if not str(info[4][0]).startswith("127.")})


def _announce(host: str, port: int, token: str | None) -> str:
    """Print where the master listens and how to start a worker; returns that command."""
    print(f"distgray-master: listening on {host}:{port}", file=sys.stderr)
    if host in ("0.0.0.0", "::"):
        others = _reachable_addresses()
        if others:
            shown = others[0]
            where = f"(on this machine: --host 127.0.0.1; this machine's addresses: {', '.join(others)})"
        else:
            shown = "127.0.0.1"
            where = "(from other machines, use this machine's IP address instead of 127.0.0.1)"
    else:
        shown, where = host, ""
    if token is None:
        print(
            "distgray-master: WARNING: authentication is OFF (--no-auth): any program that can reach "
            f"port {port} can join. Use this only on a closed network.",
            file=sys.stderr,
        )
    auth = f" --token {token}" if token is not None else ""
    command = f"python worker_client.py --host {shown} --port {port}{auth}"
    print(f"distgray-master: start workers with:\n    {command}", file=sys.stderr)
    if where:
        print(f"    {where}", file=sys.stderr)
    return command
