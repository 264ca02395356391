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
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from distgray import defaults as D
from distgray.errors import DistgrayError

if TYPE_CHECKING:
    from distgray.batch import BatchOptions

# The master's modules are imported inside the master's functions and the worker's inside the
# worker's: a worker starts without loading the master, and the master binds its port and starts
# its local workers before loading NumPy and Pillow, so their start-ups overlap (start-up counts
# in every batch).

log = logging.getLogger("distgray")

DEFAULT_PORT = D.DEFAULT_PORT
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_DASHBOARD_PORT = D.DEFAULT_DASHBOARD_PORT


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


def _throttle(text: str) -> float:
    value = float(text)
    if not 1.0 <= value <= 1000.0:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000, got {text}")
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
  a service: no --image; upload images on the status page, they queue and run in order:
    python master_server.py --local-workers 2      # then open http://127.0.0.1:5006/

The status page (http://127.0.0.1:5006/ unless --dashboard-host/--dashboard-port say otherwise)
shows progress, ETA, every worker and the strip map live; --no-dashboard turns it off.
environment: MASTER_HOST, MASTER_PORT, NUM_WORKERS, FLASK_PORT, DISTGRAY_TOKEN, DISTGRAY_LOG_LEVEL
(a flag given on the command line wins over its environment variable).
exit codes: 0 done, 1 a job failed, 2 usage error, 130 interrupted.
"""


def build_master_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distgray-master",
        description="Convert a colour image to grayscale (Pillow's convert('L'), bit for bit) by "
        "splitting it into strips and sending them to worker processes on this or other machines. "
        "Watch it on the status page; without --image, convert images uploaded there.",
        epilog=MASTER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--image",
        type=Path,
        action="append",
        help="an image to convert; repeat for several (a batch). Without --image or --input-dir: serve mode",
    )
    io.add_argument("--input-dir", type=Path, metavar="DIR", help="convert every image in DIR (a batch)")
    io.add_argument("--recursive", action="store_true", help="with --input-dir: also its sub-folders")
    io.add_argument(
        "--pattern", metavar="GLOB", help="with --input-dir: only names matching GLOB, e.g. '*.jpg' (default: images)"
    )
    io.add_argument(
        "--overwrite", action="store_true", help="batches: convert again even where a complete output exists"
    )
    io.add_argument(
        "--whole-file-max-mp",
        type=float,
        default=D.WHOLE_FILE_MAX_PIXELS / 1e6,
        metavar="MP",
        help="batches: images up to MP megapixels go to one worker as a whole file (decoded, converted"
        " and encoded there); bigger ones are split into strips (default %(default)s)",
    )
    io.add_argument("--output", type=Path, help="output file (default: <output-dir>/<stem>_gray.<input extension>)")
    io.add_argument("--output-dir", type=Path, default=Path("results"), help="where outputs go (default %(default)s)")
    io.add_argument(
        "--serve",
        action="store_true",
        help="keep running after --image and accept uploads on the status page (the default without --image)",
    )
    io.add_argument(
        "--upload-dir", type=Path, help="serve mode: where uploaded images are kept (default <output-dir>/uploads)"
    )
    io.add_argument(
        "--max-upload-mb",
        type=_positive,
        default=512,
        metavar="MB",
        help="serve mode: largest upload accepted (default %(default)s)",
    )
    io.add_argument(
        "--format", help="output format, e.g. png, jpeg, webp, tiff (default: from --output, else the input's)"
    )
    io.add_argument(
        "--quality",
        type=int,
        choices=range(1, 101),
        metavar="1-100",
        help=f"JPEG/WebP quality (JPEG default {D.DEFAULT_JPEG_QUALITY}; WebP is lossless unless given)",
    )
    io.add_argument(
        "--png-level",
        type=int,
        choices=range(10),
        metavar="0-9",
        default=D.DEFAULT_PNG_LEVEL,
        help="PNG zlib compression level (default %(default)s, Pillow's)",
    )
    io.add_argument(
        "--max-pixels",
        type=_positive,
        default=D.DEFAULT_MAX_PIXELS,
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
    dash = p.add_argument_group("status page")
    dash.add_argument(
        "--dashboard-port",
        type=_port,
        default=_env_default(p, env, ("FLASK_PORT",), _port, DEFAULT_DASHBOARD_PORT),
        help="port of the status page; 0 picks a free one (env FLASK_PORT; default %(default)s)",
    )
    dash.add_argument(
        "--dashboard-host",
        default=_env(env, "DASHBOARD_HOST") or "127.0.0.1",
        help="address of the status page (env DASHBOARD_HOST; default %(default)s: this machine only;"
        " 0.0.0.0 shares it)",
    )
    dash.add_argument("--no-dashboard", action="store_true", help="do not serve the status page")
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
        default=D.HEARTBEAT_INTERVAL_S,
        metavar="SECONDS",
        help="heartbeat interval (default %(default)s)",
    )
    net.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=D.HEARTBEAT_TIMEOUT_S,
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
    images = args.image or []
    is_batch = args.input_dir is not None or len(images) > 1
    if is_batch:
        if args.output is not None or args.serve or args.report is not None:
            parser.error("--output, --serve and --report are for one image; a batch writes into --output-dir")
        if args.input_dir is not None and not args.input_dir.is_dir():
            parser.error(f"--input-dir {args.input_dir}: not a folder")
    elif not images:
        if args.output is not None:
            parser.error("--output needs --image (in serve mode outputs go to --output-dir)")
        if args.no_dashboard:
            parser.error("serve mode (no --image) needs the status page: drop --no-dashboard")
    if args.whole_file_max_mp < 0:
        parser.error("--whole-file-max-mp must be 0 or more")
    # SIGTERM (docker stop, systemd) stops the master the way Ctrl+C does: workers hear BYE.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        from distgray.local_workers import reap, spawn_local_workers
        from distgray.transport import listen

        # Port and local workers first: the workers start while this process loads the rest.
        token = None if args.no_auth else (args.token or secrets.token_urlsafe(18))
        try:
            listener = listen(args.host, args.port)
        except OSError as exc:
            raise DistgrayError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
        port = listener.getsockname()[1]
        procs = spawn_local_workers(args.local_workers, port, token, args.log_level, env)
        from distgray.runner import RunOptions, run_master

        options = {f: getattr(args, f) for f in RunOptions.__dataclass_fields__ if hasattr(args, f)}
        options.update(
            image=images[0] if len(images) == 1 and not is_batch else None,
            output=output,
            format=fmt,
            env=env,
            serve=args.serve or not (images or is_batch),
            dashboard=not args.no_dashboard,
            batch=_batch_options(args) if is_batch else None,
        )
        options["token"] = token
        running, procs = procs, []  # run_master reaps them from here on
        return run_master(RunOptions(**options), listener, running)
    except DistgrayError as exc:
        _fail(args, exc)
        return 1
    except KeyboardInterrupt:
        print("distgray-master: interrupted; no output written for the unfinished job", file=sys.stderr)
        return 130
    except Exception as exc:
        _fail(args, exc, internal=True)
        return 1
    finally:
        if procs:
            reap(procs, timeout=0)
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _fail(args: argparse.Namespace, exc: BaseException, internal: bool = False) -> None:
    if args.log_level == "debug":
        log.exception("failed")
    what = f"internal error: {type(exc).__name__}: {exc}" if internal else str(exc)
    hint = "" if args.log_level == "debug" else " (--log-level debug shows details)" if internal else ""
    print(f"distgray-master: error: {what}{hint}", file=sys.stderr)


def _batch_options(args: argparse.Namespace) -> BatchOptions:
    from distgray import imaging
    from distgray.batch import BatchOptions

    return BatchOptions(
        images=tuple(args.image or ()),
        input_dir=args.input_dir,
        recursive=args.recursive,
        pattern=args.pattern,
        output_dir=args.output_dir,
        format=imaging.output_format(Path("x"), args.format) if args.format else None,
        overwrite=args.overwrite,
        whole_file_max_pixels=int(args.whole_file_max_mp * 1e6),
        quality=args.quality,
        png_level=args.png_level,
        max_pixels=args.max_pixels,
    )


def _resolve_output(args: argparse.Namespace) -> tuple[Path | None, str | None]:
    if not args.format and (not args.image or len(args.image) > 1 or args.input_dir is not None):
        return None, None  # a batch or serve mode: nothing to check yet (and no Pillow to load)
    from distgray import imaging

    if not args.image or len(args.image) > 1 or args.input_dir is not None:
        return None, imaging.output_format(Path("x"), args.format)
    image = args.image[0]
    if args.output is not None:
        fmt = imaging.output_format(args.output, args.format)
        output = args.output
    else:
        fmt = imaging.output_format(image, args.format)
        ext = imaging.EXTENSIONS.get(fmt, image.suffix) if args.format else image.suffix
        output = args.output_dir / f"{image.stem}_gray{ext}"
    if imaging.same_file(image, output):
        raise ValueError(f"--output {output} would overwrite the input")
    return output, fmt


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
    p.add_argument(
        "--throttle",
        type=_throttle,
        default=1.0,
        metavar="FACTOR",
        help="testing and demo aid: make this worker FACTOR times slower per strip (sleeps), to show"
        " heterogeneous clusters on one machine (default 1 = full speed)",
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
    from distgray.worker import Worker, WorkerConfig

    worker = Worker(
        WorkerConfig(
            host=args.host,
            port=args.port,
            token=args.token.encode() if args.token else None,
            worker_id=args.id,
            retry_for_s=args.retry_for,
            max_tasks=args.max_tasks,
            throttle=args.throttle,
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
    port = _env(env, "FLASK_PORT") or "5006"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:
        print(f"distgray health: status page on port {port} does not answer: {exc}", file=sys.stderr)
        return 1
