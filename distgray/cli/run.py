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

import errno
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
from distgray.net.tls import is_loopback
from distgray.storage.places import Place

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
        raise DistgrayError(f"cannot listen on {host}:{port}: {busy_hint(exc, '--port')}") from exc
    procs: list[WorkerProcess] = []
    if local_workers:
        bound = listener.getsockname()[1]
        procs = fork_local_workers(local_workers, bound, token, log_level, env, close=[listener])
    return listener, procs


def busy_hint(exc: OSError, flag: str) -> str:
    """Why a port cannot be bound, and for a busy one what to do (another master may hold it)."""
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.EADDRINUSE:
        why += f" (another distgray master? pick a free port with {flag} 0, or stop the other one)"
    return why


@dataclass(frozen=True)
class RunOptions:
    """Everything one ``distgray-master`` run needs (see ``--help`` for each)."""

    image: Place | None = None  # a local path, or a place behind an fsspec URL
    output: Place | None = None
    format: str | None = None
    serve: bool = False
    output_dir: Path = Path(config.DEFAULT_OUTPUT_DIR)
    upload_dir: Path | None = None  # default: <output_dir>/uploads
    max_upload_mb: int = config.MAX_UPLOAD_MB
    quality: int | None = None
    png_level: int = config.DEFAULT_PNG_LEVEL
    max_pixels: int = config.DEFAULT_MAX_PIXELS
    window_mb: int = config.DEFAULT_WINDOW_MB
    report: Path | None = None
    host: str = config.DEFAULT_HOST
    port: int = config.DEFAULT_PORT
    dashboard: bool = True
    dashboard_host: str = config.DEFAULT_DASHBOARD_HOST
    dashboard_port: int = config.DEFAULT_DASHBOARD_PORT
    local_workers: int = 0
    min_workers: int = 1
    overwrite: bool = False
    token: str | None = None
    token_generated: bool = False  # made here: printed once on the terminal (never logged)
    no_auth: bool = False
    advertise_host: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_save_cert: Path | None = None
    no_tls: bool = False
    handshake_timeout: float = config.HANDSHAKE_TIMEOUT_S
    verify_rows: int = config.VERIFY_ROWS
    dashboard_token: str | None = None
    dashboard_open: bool = False
    dashboard_allow_host: tuple[str, ...] = ()
    keep_uploads: int = config.KEEP_UPLOADS_MB
    strip_rows: int | None = None
    shared_memory: bool = True
    encode_on_master: bool = False
    heartbeat: float = config.HEARTBEAT_INTERVAL_S
    heartbeat_timeout: float = config.HEARTBEAT_TIMEOUT_S
    timeout: float | None = None
    log_level: str = "info"
    ops: str = ""  # the operation chain after gray (--op), spelled
    env: Mapping[str, str] = field(default_factory=dict)  # passed on to local worker processes
    batch: BatchOptions | None = None  # several images: see distgray.batch
    engine: str = "builtin"  # or "dask"
    scheduler_address: str | None = None  # --engine dask: an existing cluster's scheduler
    watch: bool = False  # --watch: keep converting what arrives in the batch's --input-dir
    watch_interval: float = 5.0
    watch_settle: float = 2.0


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
    from distgray.net.tls import server_context

    token = None if opts.no_auth else (opts.token or config.new_token())
    try:
        names = tuple(n for n in (opts.advertise_host, socket.gethostname()) if n)
        tls = None if opts.no_tls else server_context(opts.tls_cert, opts.tls_key, opts.tls_ca, names)
        if tls is not None and opts.tls_save_cert is not None:  # the certificate only: no secret
            from distgray.imaging.save import atomic_write

            atomic_write(opts.tls_save_cert, lambda fh: fh.write(tls.cert_pem), " certificate")
    except (OSError, ValueError, DistgrayError) as exc:
        reap(procs or [])
        raise DistgrayError(f"TLS: {getattr(exc, 'strerror', None) or exc}") from exc
    master_config = MasterConfig(
        host=opts.host,
        port=opts.port,
        token=token.encode() if token else None,
        heartbeat_interval_s=opts.heartbeat,
        heartbeat_timeout_s=opts.heartbeat_timeout,
        strip_rows=opts.strip_rows,
        shared_memory=opts.shared_memory,
        tls=tls,
        handshake_timeout_s=opts.handshake_timeout,
        verify_rows=opts.verify_rows,
    )
    master = Master(master_config)
    early = procs is not None  # the command line already started the local workers
    procs = [] if procs is None else procs
    try:
        host, port = master.start(listener)
    except OSError as exc:
        reap(procs)
        raise DistgrayError(f"cannot listen on {opts.host}:{opts.port}: {busy_hint(exc, '--port')}") from exc
    dashboard: Dashboard | None = None
    bye = "master stopping"
    try:
        worker_cmd = _announce(host, port, token, opts, None if tls is None else tls.fingerprint)
        engine = ClusterEngine(master, procs, opts.min_workers)
        service = Service(engine, _service_options(opts, worker_cmd), _say)
        # Local workers start (importing NumPy and Pillow) while the page starts and the image decodes.
        if not early:
            procs += spawn_local_workers(opts.local_workers, port, token, opts.log_level, opts.env)
        dashboard = _start_dashboard(service, opts)
        if opts.image is not None and opts.batch is None and not opts.serve:
            bye = "job finished"  # said even if the job fails
        code, bye = _run_jobs(service, opts, worker_cmd)
        return code
    finally:
        if dashboard is not None:
            dashboard.close()
        master.close(bye)
        # Those that joined heard BYE and are leaving; one still trying to connect would keep
        # trying (--retry-for) while we wait: tell it to stop now.
        joined = set(master.workers)
        reap(procs, stop=[p for i, p in enumerate(procs) if f"local-{i + 1}" not in joined])


def _run_jobs(service: Service, opts: RunOptions, worker_cmd: str) -> tuple[int, str]:
    """Run what was asked on a started service: a batch, one image, or serve. Returns the exit
    code and what to tell the workers as they go."""
    if opts.batch is not None and opts.watch:
        from distgray.jobs.watch import Watch, WatchOptions

        watch = Watch(service, opts.batch, WatchOptions(opts.watch_interval, opts.watch_settle), _say)
        try:
            code = watch.run(threading.Event())
        except KeyboardInterrupt:
            code = 1 if watch.failed_any else 0
            _say(f"stopped    watching; {watch.converted} converted in this run")
        return code, "master stopping"
    if opts.batch is not None:
        from distgray.jobs.batch import Batch, discover, plan

        items = discover(opts.batch)
        if not items:
            where = opts.batch.input_dir
            matching = f" matching {opts.batch.pattern!r}" if opts.batch.pattern else ""
            raise DistgrayError(f"no images{matching} in {where}: nothing to convert")
        plan(items, opts.batch)
        return Batch(service, items, opts.batch, _say).run(worker_cmd), "batch finished"
    if opts.image is not None:
        assert opts.output is not None and opts.format is not None
        if not opts.serve:
            return _one_image(service, opts.image, opts.output, opts.format, opts), "job finished"
        if not isinstance(opts.image, Path) or not isinstance(opts.output, Path):
            raise DistgrayError("--serve keeps its first image local: give a path, or drop --serve for a URL")
        service.enqueue(opts.image, opts.output, opts.format)
    print("distgray-master: serving; Ctrl+C (or SIGTERM) stops", file=sys.stderr, flush=True)
    try:
        service.serve_forever(threading.Event())
    except KeyboardInterrupt:
        print("distgray-master: stopping", file=sys.stderr)
    return (1 if service.any_failed else 0), "master stopping"


def run_dask(opts: RunOptions) -> int:
    """The same run on a Dask cluster: the scheduler at ``opts.scheduler_address``, else a
    LocalCluster of ``opts.local_workers`` processes (one thread each) started here."""
    try:
        from distgray.engines.daskcluster import DaskEngine, connect
    except ImportError as exc:
        raise DistgrayError("--engine dask needs Dask: pip install 'distgray[dask]'") from exc
    from distgray.jobs.service import Service

    # Dask's own INFO lines (workers joining, closing) are not this run's news: warnings only.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    client, cluster = connect(opts.scheduler_address, opts.local_workers)
    engine = DaskEngine(client, cluster=cluster, strip_rows=opts.strip_rows, shared_memory=opts.shared_memory)
    address, page = engine.scheduler_address(), engine.dashboard_link()
    print(
        f"distgray-master: Dask engine, scheduler {address}" + (f"; Dask's dashboard at {page}" if page else ""),
        file=sys.stderr,
        flush=True,
    )
    worker_cmd = f"dask worker {address}"
    dashboard: Dashboard | None = None
    try:
        service = Service(engine, _service_options(opts, worker_cmd), _say)
        dashboard = _start_dashboard(service, opts)
        code, _ = _run_jobs(service, opts, worker_cmd)
        return code
    finally:
        if dashboard is not None:
            dashboard.close()
        engine.close()


def _one_image(service: Service, image: Place, output: Place, fmt: str, opts: RunOptions) -> int:
    """Convert one image, unless the job log says its output was made from it as it is now (the
    same rule as a batch's): then say so and keep it. Either end may be behind a URL
    (:func:`~distgray.jobs.batch.convert_place`)."""
    from distgray.imaging import save
    from distgray.jobs import provenance
    from distgray.jobs.batch import convert_place, output_options

    if isinstance(output, Path):
        save.remove_stale_parts(output)  # of a run that was killed
    options = output_options(fmt, opts.quality, opts.png_level, opts.ops)
    log_file = provenance.log_path(output)
    if not opts.overwrite and provenance.up_to_date(provenance.index([log_file]), image, output, options):
        _say(f"up to date {output} was made from {image} as it is now, with these options (--overwrite redoes it)")
        return 0
    try:
        before = provenance.fingerprint(image, with_hash=False)
    except OSError:
        before = None
    convert_place(service, image, output, fmt, image.name)
    made = provenance.converted(image, output, before, options)
    if made:
        provenance.record(log_file, {"input": str(image), "output": str(output), "status": "converted", **made})
    return 0


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
        keep_upload_bytes=opts.keep_uploads << 20,
        serve=opts.serve,
        worker_command=worker_cmd,
        previews=opts.dashboard,
        strip_encoding=not opts.encode_on_master,
        window_bytes=opts.window_mb << 20,
        strip_rows=opts.strip_rows,
        ops=opts.ops,
    )


def _start_dashboard(service: Service, opts: RunOptions) -> Dashboard | None:
    if not opts.dashboard:
        return None
    from distgray.web.app import PageSecurity
    from distgray.web.server import Dashboard  # Flask and waitress only where the page is served

    token = opts.dashboard_token
    if is_loopback(opts.dashboard_host):
        token = token or None  # this machine only: a token only if one is asked for
    elif opts.dashboard_open:
        token = None
        print(
            f"distgray-master: WARNING: the status page on {opts.dashboard_host} has NO login"
            " (--dashboard-open): anyone who can reach it can upload images, fill the disk and"
            " download every output",
            file=sys.stderr,
        )
    else:
        token = token or config.new_token()
    security = PageSecurity.for_address(opts.dashboard_host, token, tuple(opts.dashboard_allow_host))
    try:
        dashboard = Dashboard(service, opts.dashboard_host, opts.dashboard_port, security)
    except OSError as exc:
        where = f"{opts.dashboard_host}:{opts.dashboard_port}"
        why = busy_hint(exc, "--dashboard-port")
        if opts.serve:  # the page is how a serving master is used: without it, stop
            raise DistgrayError(f"status page: cannot listen on {where}: {why}") from exc
        print(
            f"distgray-master: WARNING: status page not started: cannot listen on {where} ({why})",
            file=sys.stderr,
        )
        return None
    if token is not None and opts.dashboard_token is None:  # made here: the terminal is told, once
        print(f"distgray-master: status page at {dashboard.url}?token={token}", file=sys.stderr, flush=True)
    elif token is not None:
        print(
            f"distgray-master: status page at {dashboard.url} (log in: ?token=<your --dashboard-token>)",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(f"distgray-master: status page at {dashboard.url}", file=sys.stderr, flush=True)
    return dashboard


def _reachable_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses, as its own name resolves (no traffic sent)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos if not str(info[4][0]).startswith("127.")})


#: Where the page shows the token: never the token itself (the page has readers the workers do not).
TOKEN_PLACEHOLDER = "<token printed on the master's terminal>"


def _announce(host: str, port: int, token: str | None, opts: RunOptions, fingerprint: str | None) -> str:
    """Print where the master listens and how to start a worker; returns that command for the
    page, with the token left out (the page and its API must never carry it)."""
    print(f"distgray-master: listening on {host}:{port}", file=sys.stderr)
    if host in ("0.0.0.0", "::"):
        others = _reachable_addresses()
        if opts.advertise_host:
            shown, where = opts.advertise_host, ""
        elif others:
            shown = others[0]
            where = f"(on this machine: --host 127.0.0.1; this machine's addresses: {', '.join(others)})"
        else:
            shown = "127.0.0.1"
            where = "(from other machines, use this machine's IP address instead of 127.0.0.1)"
    else:
        shown, where = opts.advertise_host or host, ""
        if is_loopback(host) and opts.local_workers:
            where = "(this machine only: every worker is local; --host 0.0.0.0 takes workers from others)"
    if token is None:
        print(
            "distgray-master: WARNING: authentication is OFF (--no-auth): any program that can reach "
            f"port {port} can join. Use this only on a closed network.",
            file=sys.stderr,
        )
    if fingerprint is None:
        print(
            "distgray-master: WARNING: TLS is OFF (--no-tls): workers on other machines send and receive"
            " images in the clear, and anyone on the path can read or change them.",
            file=sys.stderr,
        )
    base = f"python -m distgray worker --host {shown} --port {port}"
    # On this machine a worker needs no TLS; one on another machine needs the pin.
    pin = f" --tls-fingerprint={fingerprint}" if fingerprint is not None and not is_loopback(shown) else ""
    if token is None:
        command = shown_command = base + pin
    elif opts.token_generated:
        command, shown_command = f"{base} --token={token}{pin}", f"{base} --token={TOKEN_PLACEHOLDER}{pin}"
    else:  # the user's own token: they know it; do not print it
        command = shown_command = f"{base}{pin}  (with DISTGRAY_TOKEN or DISTGRAY_TOKEN_FILE set)"
    print(f"distgray-master: start workers with:\n    {command}", file=sys.stderr)
    if where:
        print(f"    {where}", file=sys.stderr)
    if fingerprint is not None and not pin:
        print(f"    (workers on other machines add --tls-fingerprint={fingerprint})", file=sys.stderr)
    return shown_command
