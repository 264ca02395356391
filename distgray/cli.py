"""Command lines of ``distgray-master`` and ``distgray-worker``: flags, env fallbacks, logging, exit codes.

The only module that reads ``sys.argv`` or ``os.environ`` and configures logging handlers.
Precedence: command-line flag > environment variable > documented default.
Exit codes: 0 all done, 1 the job (or some input) failed, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from distgray import imaging
from distgray.errors import DistgrayError
from distgray.master import HEARTBEAT_INTERVAL_S, HEARTBEAT_TIMEOUT_S, Master, MasterConfig
from distgray.report import format_summary, job_report, write_json_atomic
from distgray.worker import Worker, WorkerConfig

log = logging.getLogger("distgray")

DEFAULT_PORT = 5003
LOG_LEVELS = ("debug", "info", "warning", "error")
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp", "GIF": ".gif"}


def _env(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        if env.get(name):
            return env[name]
    return None


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
    )


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {text}")
    return value


def _env_default(
    parser: argparse.ArgumentParser, env: Mapping[str, str], names: tuple[str, ...], convert: Any, fallback: Any
) -> Any:
    raw = _env(env, *names)
    if raw is None:
        return fallback
    try:
        return convert(raw)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(f"environment variable {names[0]}={raw!r}: {exc}")


# ====================================================================== master
MASTER_EPILOG = """\
examples:
  one machine, two local worker processes:
    python master_server.py --image test_images/sample_4k.jpg --local-workers 2
  several machines: start the master, then on each worker machine the command it prints:
    python master_server.py --image big.png --host 0.0.0.0 --port 5003
    python worker_client.py --host <master-ip> --port 5003 --token <token>

environment: MASTER_HOST, MASTER_PORT, NUM_WORKERS, DISTGRAY_TOKEN, DISTGRAY_LOG_LEVEL
(a flag given on the command line wins over its environment variable).
exit codes: 0 done, 1 the job failed, 2 usage error, 130 interrupted.
"""


def build_master_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distgray-master",
        description="Convert a colour image to grayscale (Pillow's convert('L'), bit for bit) by "
        "splitting it into strips and sending them to worker processes on this or other machines.",
        epilog=MASTER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument("--image", type=Path, required=True, help="the image to convert")
    io.add_argument("--output", type=Path, help="output file (default: results/<stem>_gray.<input extension>)")
    io.add_argument(
        "--format", help="output format, e.g. png, jpeg, webp, tiff (default: from --output, else the input's)"
    )
    io.add_argument(
        "--quality",
        type=int,
        choices=range(1, 101),
        metavar="1-100",
        help=f"JPEG/WebP quality (JPEG default {imaging.DEFAULT_JPEG_QUALITY}; WebP is lossless unless given)",
    )
    io.add_argument(
        "--png-level",
        type=int,
        choices=range(10),
        metavar="0-9",
        default=imaging.DEFAULT_PNG_LEVEL,
        help="PNG zlib compression level (default %(default)s, Pillow's)",
    )
    io.add_argument(
        "--max-pixels",
        type=_positive,
        default=imaging.DEFAULT_MAX_PIXELS,
        help="refuse larger images, a guard against decompression bombs (default %(default)s)",
    )
    io.add_argument(
        "--report", type=Path, metavar="FILE.json", help="write the job's figures, per strip and per worker, as JSON"
    )
    net = p.add_argument_group("workers and network")
    net.add_argument(
        "--host",
        default=_env(env, "MASTER_HOST") or "0.0.0.0",
        help="address to listen on (env MASTER_HOST; default %(default)s = all interfaces)",
    )
    net.add_argument(
        "--port",
        type=_port,
        default=_env_default(p, env, ("MASTER_PORT",), _port, DEFAULT_PORT),
        help="port to listen on; 0 picks a free one (env MASTER_PORT; default %(default)s)",
    )
    net.add_argument(
        "--local-workers",
        type=_nonnegative,
        metavar="N",
        default=_env_default(p, env, ("NUM_WORKERS",), _nonnegative, 0),
        help="start N worker processes on this machine (env NUM_WORKERS; default %(default)s)",
    )
    net.add_argument(
        "--min-workers",
        type=_positive,
        default=1,
        metavar="N",
        help="wait for N workers before starting (default %(default)s); later ones join the running job",
    )
    net.add_argument(
        "--token",
        default=_env(env, "DISTGRAY_TOKEN"),
        help="shared secret workers must prove (env DISTGRAY_TOKEN; default: a random one, printed)",
    )
    net.add_argument("--no-auth", action="store_true", help="accept workers without a token: ONLY on a closed network")
    net.add_argument("--strip-rows", type=_positive, help="rows per strip (default: about 4 MiB of pixels per strip)")
    net.add_argument(
        "--heartbeat",
        type=float,
        default=HEARTBEAT_INTERVAL_S,
        metavar="SECONDS",
        help="heartbeat interval (default %(default)s)",
    )
    net.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=HEARTBEAT_TIMEOUT_S,
        metavar="SECONDS",
        help="a worker silent this long is lost and its strips requeued (default %(default)s)",
    )
    net.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up if the job has not finished in this time"
    )
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=(_env(env, "DISTGRAY_LOG_LEVEL") or "info").lower(),
        help="debug also shows tracebacks (default %(default)s)",
    )
    return p


def master_main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = build_master_parser(env)
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        output, fmt = _resolve_output(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.heartbeat <= 0 or args.heartbeat_timeout < args.heartbeat:
        parser.error("--heartbeat must be positive and --heartbeat-timeout at least as long")
    try:
        return _run_master(args, output, fmt)
    except DistgrayError as exc:
        _fail(args, exc)
        return 1
    except KeyboardInterrupt:
        print("distgray-master: interrupted; no output written", file=sys.stderr)
        return 130
    except Exception as exc:
        _fail(args, exc, internal=True)
        return 1


def _fail(args: argparse.Namespace, exc: BaseException, internal: bool = False) -> None:
    if args.log_level == "debug":
        log.exception("failed")
    what = f"internal error: {type(exc).__name__}: {exc}" if internal else str(exc)
    hint = "" if args.log_level == "debug" else " (--log-level debug shows details)" if internal else ""
    print(f"distgray-master: error: {what}{hint}", file=sys.stderr)


def _resolve_output(args: argparse.Namespace) -> tuple[Path, str]:
    if args.output is not None:
        fmt = imaging.output_format(args.output, args.format)
        output = args.output
    else:
        fmt = imaging.output_format(args.image, args.format)
        ext = EXTENSIONS.get(fmt, args.image.suffix) if args.format else args.image.suffix
        output = Path("results") / f"{args.image.stem}_gray{ext}"
    if imaging.same_file(args.image, output):
        raise ValueError(f"--output {output} would overwrite the input")
    return output, fmt


def _run_master(args: argparse.Namespace, output: Path, fmt: str) -> int:
    t0 = time.monotonic()
    token = None if args.no_auth else (args.token or secrets.token_urlsafe(18))
    config = MasterConfig(
        host=args.host,
        port=args.port,
        token=token.encode() if token else None,
        heartbeat_interval_s=args.heartbeat,
        heartbeat_timeout_s=args.heartbeat_timeout,
        strip_rows=args.strip_rows,
    )
    master = Master(config)
    try:
        host, port = master.start()
    except OSError as exc:
        raise DistgrayError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    procs: list[subprocess.Popen[bytes]] = []
    job = None
    workers_rss: list[float | None] = []
    try:
        _announce(host, port, token)
        # Local workers start (importing NumPy and Pillow) while the image decodes.
        procs = spawn_local_workers(args.local_workers, port, token, args.log_level)
        loaded = imaging.load_image(args.image, args.max_pixels)
        t_loaded = time.monotonic()
        for note in loaded.notes:
            log.info("%s: %s", args.image, note)
        if loaded.kind is imaging.Kind.GRAY:
            log.info("%s: already grayscale (%s): copied unchanged, no workers needed", args.image, loaded.mode)
        else:
            job = _run_job(master, loaded, args, procs)
            workers_rss = [peak_rss_mb(p.pid) for p in procs]  # before they leave
    finally:
        master.close("job finished")
        reap(procs)
    report = job_report(job, master) if job is not None else None
    if job is not None and job.failure:
        raise DistgrayError(f"job failed: {job.failure}")
    image, notes = imaging.compose_output(loaded, job.output if job is not None else None, fmt)
    for note in notes:
        log.warning("%s: %s", output, note)
    t_save = time.monotonic()
    imaging.save_atomic(image, output, fmt, imaging.save_options(fmt, args.quality, args.png_level))
    total = time.monotonic() - t0
    if report is None:
        print(f"{output}: written ({loaded.width}x{loaded.height}, {loaded.mode}) in {total:.3f} s")
        return 0
    known_rss = [r for r in workers_rss if r is not None]
    report.update(
        output=str(output),
        input=str(args.image),
        total_s=round(total, 4),
        load_s=round(t_loaded - t0, 4),
        save_s=round(time.monotonic() - t_save, 4),
        master_peak_rss_mb=peak_rss_mb(os.getpid()),
        local_worker_peak_rss_mb=max(known_rss) if known_rss else None,
    )
    print(format_summary(report))
    if args.report:
        write_json_atomic(report, args.report)
    return 0


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a live process in MB (Linux /proc VmHWM); None where unknown."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _announce(host: str, port: int, token: str | None) -> None:
    shown = host
    if host in ("0.0.0.0", "::"):
        try:
            shown = socket.gethostbyname(socket.gethostname())
        except OSError:
            shown = "<this-machine's-address>"
    print(f"distgray-master: listening on {host}:{port}", file=sys.stderr)
    if token is None:
        print(
            "distgray-master: WARNING: authentication is OFF (--no-auth): any program that can reach "
            f"port {port} can join. Use this only on a closed network.",
            file=sys.stderr,
        )
        cmd = f"python worker_client.py --host {shown} --port {port}"
    else:
        cmd = f"python worker_client.py --host {shown} --port {port} --token {token}"
    print(f"distgray-master: start workers with:\n    {cmd}", file=sys.stderr)


def _run_job(
    master: Master, loaded: imaging.LoadedImage, args: argparse.Namespace, procs: list[subprocess.Popen[bytes]]
) -> Any:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    assert loaded.pixels is not None
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    if len(master.live_workers()) < args.min_workers:
        log.info("waiting for %d worker(s)...", args.min_workers)
    while not master.wait_for_workers(args.min_workers, timeout=0.5):
        if procs and all(p.poll() is not None for p in procs) and len(procs) >= args.min_workers:
            raise DistgrayError(f"local workers exited (codes {[p.returncode for p in procs]}) before joining")
        if deadline is not None and time.monotonic() > deadline:
            raise DistgrayError(f"timed out after {args.timeout:g} s waiting for {args.min_workers} worker(s)")
    job = master.submit(loaded.pixels, loaded.path.name)
    with (
        logging_redirect_tqdm(),
        tqdm(total=job.height, unit="rows", desc=loaded.path.name, disable=None, leave=False) as bar,
    ):
        while not job.wait(0.2):
            bar.update(job.rows_done - bar.n)
            if deadline is not None and time.monotonic() > deadline:
                raise DistgrayError(f"timed out after {args.timeout:g} s ({job.rows_done}/{job.height} rows done)")
        bar.update(job.rows_done - bar.n)
    return job


def spawn_local_workers(n: int, port: int, token: str | None, log_level: str) -> list[subprocess.Popen[bytes]]:
    """Start ``n`` worker processes on loopback; the token goes by environment, not argv (ps shows argv)."""
    env = dict(os.environ)
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


def reap(procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """Wait for local workers to leave after BYE; kill any that do not."""
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("local worker (pid %d) did not leave after BYE: killing it", p.pid)
            p.kill()
            p.wait()


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
        default=_env(env, "MASTER_HOST") or "127.0.0.1",
        help="the master's address (env MASTER_HOST; default %(default)s)",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=_env_default(p, env, ("MASTER_PORT",), _port, DEFAULT_PORT),
        help="the master's port (env MASTER_PORT; default %(default)s)",
    )
    p.add_argument(
        "--token", default=_env(env, "DISTGRAY_TOKEN"), help="the shared secret the master printed (env DISTGRAY_TOKEN)"
    )
    p.add_argument(
        "--id",
        default=_env(env, "DISTGRAY_WORKER_ID") or "",
        help="a name for this worker (env DISTGRAY_WORKER_ID; default <hostname>-<pid>)",
    )
    p.add_argument(
        "--retry-for",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="keep trying to reach the master this long before giving up (default %(default)s)",
    )
    p.add_argument("--max-tasks", type=_positive, metavar="N", help="leave after N strips (for tests and demos)")
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=(_env(env, "DISTGRAY_LOG_LEVEL") or "info").lower(),
        help="default %(default)s",
    )
    return p


def worker_main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = build_worker_parser(env).parse_args(argv)
    _setup_logging(args.log_level)
    worker = Worker(
        WorkerConfig(
            host=args.host,
            port=args.port,
            token=args.token.encode() if args.token else None,
            worker_id=args.id,
            retry_for_s=args.retry_for,
            max_tasks=args.max_tasks,
        )
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if worker._stop.is_set():
            raise KeyboardInterrupt
        print("distgray-worker: finishing the current strip, then leaving (Ctrl+C again to quit now)", file=sys.stderr)
        worker.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return worker.run()
    except KeyboardInterrupt:
        return 130
