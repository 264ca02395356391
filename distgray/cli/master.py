"""Command line of ``distgray-master``: flags, env fallbacks, logging, exit codes.

The ``cli`` package (this module, ``worker`` for ``distgray-worker`` and the health check,
``common``, and ``run``, which composes a run) is the only code that reads ``sys.argv`` or
``os.environ``, configures logging handlers, or prints.
Exit codes: 0 all done, 1 the job (or some input) failed, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from distgray import config as D
from distgray import formats
from distgray.cli.common import (
    DEFAULT_DASHBOARD_PORT,
    DEFAULT_PORT,
    LOG_LEVELS,
    env_default,
    env_value,
    exit_with,
    nonnegative,
    port_number,
    positive,
    read_token,
    setup_logging,
)
from distgray.cli.worker import build_worker_parser as build_worker_parser
from distgray.cli.worker import health_main as health_main
from distgray.cli.worker import worker_main as worker_main
from distgray.errors import DistgrayError

if TYPE_CHECKING:
    from distgray.cli.local_workers import WorkerProcess
    from distgray.jobs.batch import BatchOptions

# The master's modules are imported inside the master's functions and the worker's inside the
# worker's: a worker starts without loading the master, and the master binds its port and starts
# its local workers before loading NumPy and Pillow, so their start-ups overlap (start-up counts
# in every batch).

log = logging.getLogger(__name__)


# ====================================================================== master
MASTER_EPILOG = """\
examples:
  one machine, two local worker processes:
    python master_server.py --image test_images/sample_4k.jpg --local-workers 2
  several machines: start the master, then on each worker machine the command it prints:
    python master_server.py --image big.png --port 5003
    python -m distgray worker --host <master-ip> --port 5003 --token=<token> --tls-fingerprint=<sha256>
  a service: no --image; upload images on the status page, they queue and run in order:
    python master_server.py --local-workers 2      # then open http://127.0.0.1:5006/
  operations after grayscale, in strips with halos (bit-identical to Pillow's on the whole image):
    python master_server.py --image big.png --local-workers 2 --op gaussian:4 --op find_edges
  on a Dask cluster (pip install 'distgray[dask]'), a local one or the one a scheduler runs:
    python master_server.py --image big.png --engine dask --local-workers 2
    python master_server.py --input-dir photos/ --engine dask --scheduler-address tcp://10.0.0.5:8786

The status page (http://127.0.0.1:5006/ unless --dashboard-host/--dashboard-port say otherwise)
shows progress, ETA, every worker and the strip map live; --no-dashboard turns it off.
Safety: workers on other machines talk to the master over TLS 1.3 (a self-signed certificate
made at start unless --tls-cert; the printed worker command pins its fingerprint), and prove
the token by HMAC inside it. The page is this machine's only unless --dashboard-host says
otherwise, and then needs its access token.
environment: MASTER_HOST, MASTER_PORT, NUM_WORKERS, FLASK_PORT, DASHBOARD_HOST, DISTGRAY_TOKEN,
DISTGRAY_TOKEN_FILE, DISTGRAY_DASHBOARD_TOKEN, DISTGRAY_ADVERTISE_HOST, DISTGRAY_WINDOW_MB, DISTGRAY_LOG_LEVEL,
DISTGRAY_OPS, DISTGRAY_ENGINE, DASK_SCHEDULER_ADDRESS, CLOUD_RUN_TASK_INDEX, CLOUD_RUN_TASK_COUNT, JOB_COMPLETION_INDEX
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
        action="append",
        metavar="PATH|URL",
        help="an image to convert, a path or an fsspec URL (s3://bucket/a.jpg, gs://..., memory://...); repeat"
        " for several (a batch). Without --image or --input-dir: serve mode",
    )
    io.add_argument(
        "--input-dir",
        metavar="DIR|URL",
        help="convert every image in DIR (a batch); a folder or a URL prefix such as s3://bucket/photos/",
    )
    io.add_argument("--recursive", action="store_true", help="with --input-dir: also its sub-folders")
    io.add_argument(
        "--pattern", metavar="GLOB", help="with --input-dir: only names matching GLOB, e.g. '*.jpg' (default: images)"
    )
    io.add_argument(
        "--overwrite",
        action="store_true",
        help="convert again even where an output made from the same input with the same options exists",
    )
    io.add_argument(
        "--whole-file-max-mp",
        type=float,
        default=D.WHOLE_FILE_MAX_PIXELS / 1e6,
        metavar="MP",
        help="batches: images up to MP megapixels go to one worker as a whole file (decoded, converted"
        " and encoded there); bigger ones are split into strips (default %(default)s)",
    )
    io.add_argument(
        "--watch",
        action="store_true",
        help="with --input-dir: keep running, converting each image that arrives once it is whole (closed"
        " after writing or moved in, or unchanged for --watch-settle seconds), each once: the job log"
        " says what earlier runs made, so a restart repeats and misses nothing. Ctrl+C stops",
    )
    io.add_argument(
        "--watch-interval",
        type=float,
        default=env_default(p, env, ("DISTGRAY_WATCH_INTERVAL",), float, 5.0),
        metavar="S",
        help="--watch: list the folder every S seconds besides its events (env DISTGRAY_WATCH_INTERVAL;"
        " default %(default)s)",
    )
    io.add_argument(
        "--watch-settle",
        type=float,
        default=2.0,
        metavar="S",
        help="--watch: a file found by a listing (no event) is whole once unchanged for S seconds"
        " (default %(default)s)",
    )
    io.add_argument(
        "--task-index",
        type=nonnegative,
        metavar="I",
        default=env_default(p, env, ("CLOUD_RUN_TASK_INDEX", "JOB_COMPLETION_INDEX"), nonnegative, None),
        help="batches run as N parallel tasks (a Cloud Run job, a Kubernetes indexed Job): this one, 0-based,"
        " converts its share of the inputs, chosen by a hash of each name, so N tasks started anywhere"
        " convert every input exactly once. Env CLOUD_RUN_TASK_INDEX, else JOB_COMPLETION_INDEX",
    )
    io.add_argument(
        "--task-count",
        type=positive,
        metavar="N",
        default=env_default(p, env, ("CLOUD_RUN_TASK_COUNT",), positive, None),
        help="how many tasks share the batch (env CLOUD_RUN_TASK_COUNT; Kubernetes: give it). Each task"
        " writes its own job log, distgray-log-task-I-of-N.jsonl",
    )
    io.add_argument(
        "--output",
        metavar="PATH|URL",
        help="output file, or URL (default: <output-dir>/<stem>_gray.<input extension>)",
    )
    io.add_argument(
        "--output-dir",
        metavar="DIR|URL",
        default=D.DEFAULT_OUTPUT_DIR,
        help="where outputs go, a folder or a URL prefix (default %(default)s)",
    )
    io.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the URLs' fsspec backend, repeatable: endpoint_url=http://127.0.0.1:8333,"
        " anon=true, config_kwargs.connect_timeout=5 (dotted keys nest; values are JSON where they parse)."
        " Credentials come best from the backend's own environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL,"
        " GOOGLE_APPLICATION_CREDENTIALS...); no option value is ever logged or shown",
    )
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
        type=positive,
        default=D.MAX_UPLOAD_MB,
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
        "--zlib-level",
        dest="png_level",
        type=int,
        choices=range(10),
        metavar="0-9",
        default=D.DEFAULT_PNG_LEVEL,
        help="zlib compression level of PNG and of (deflated) TIFF output (default %(default)s, Pillow's)",
    )
    io.add_argument(
        "--max-pixels",
        type=positive,
        default=D.DEFAULT_MAX_PIXELS,
        help="refuse larger images, a guard against decompression bombs (default %(default)s)",
    )
    io.add_argument(
        "--window-mb",
        type=positive,
        default=env_default(p, env, ("DISTGRAY_WINDOW_MB",), positive, D.DEFAULT_WINDOW_MB),
        metavar="MB",
        help="memory for one image's pixels (RGB in, gray out; env DISTGRAY_WINDOW_MB; default %(default)s)."
        " A larger image streams through a window of this size: PNG (RGB, palette or gray, no alpha, not"
        " interlaced) and"
        " TIFF/BigTIFF (8-bit RGB, strips or tiles, lossless) and, with the optional libvips, YCbCr JPEG"
        " are read in bands, converted, and written"
        " in row order as PNG, JPEG or TIFF, so memory stays flat whatever the image's size. Other"
        " inputs up to this size (or Pillow's 89.5 MP) load whole; larger ones are refused with what"
        " would work",
    )
    io.add_argument(
        "--encode-on-master",
        action="store_true",
        help="workers send back gray rows and the master encodes the whole file with Pillow (slower). By"
        " default PNG and JPEG outputs are encoded by the workers strip by strip: PNG with the same"
        " pixels, JPEG with restart markers between rows of blocks (the same decoded pixels)",
    )
    io.add_argument(
        "--report", type=Path, metavar="FILE.json", help="write the job's figures, per strip and per worker, as JSON"
    )
    ops_group = p.add_argument_group(
        "operations after grayscale",
        "A chain of operations on the gray image, applied in order, each the library's own (Pillow's"
        " ImageFilter, resize, thumbnail and reduce; OpenCV's Canny): the output equals that"
        " library's call on the whole gray image. Filters and Canny are split into strips with halos"
        " (each strip gets the rows of context its chain needs); resizes run on the whole gray image"
        " (on the master for one image, in the worker for a batch's file). Operations drop the alpha"
        " channel. In a batch, serve mode and the page's uploads alike.",
    )
    ops_group.add_argument(
        "--op",
        action="append",
        metavar="NAME[:ARGS]",
        default=None,
        help="an operation (repeatable; env DISTGRAY_OPS, ';'-separated): blur, sharpen, contour, detail,"
        " edge_enhance, edge_enhance_more, smooth, smooth_more, find_edges, emboss; gaussian:R, box:R,"
        " unsharp:R,PERCENT,THRESHOLD, median:SIZE (odd); canny:LOW,HIGH (pip install 'distgray[canny]');"
        " resize:WxH, thumbnail:WxH (keeps the aspect ratio), reduce:N. E.g. --op gaussian:4 --op find_edges",
    )
    net = p.add_argument_group("workers and network")
    net.add_argument(
        "--host",
        default=env_value(env, "MASTER_HOST"),
        help=f"address to listen on (env MASTER_HOST; default {D.DEFAULT_HOST} = all interfaces, or"
        f" {D.LOCAL_HOST} = this machine only when every worker is a --local-workers one)",
    )
    net.add_argument(
        "--port",
        type=port_number,
        default=env_default(p, env, ("MASTER_PORT",), port_number, DEFAULT_PORT),
        help="port to listen on; 0 picks a free one (env MASTER_PORT; default %(default)s)",
    )
    net.add_argument(
        "--advertise-host",
        default=env_value(env, "DISTGRAY_ADVERTISE_HOST"),
        metavar="NAME",
        help="the address workers should use, in the worker command the master prints (env"
        " DISTGRAY_ADVERTISE_HOST; default: this machine's address), e.g. a Compose service name",
    )
    dash = p.add_argument_group("status page")
    dash.add_argument(
        "--dashboard-port",
        type=port_number,
        default=env_default(p, env, ("FLASK_PORT",), port_number, DEFAULT_DASHBOARD_PORT),
        help="port of the status page; 0 picks a free one (env FLASK_PORT; default %(default)s)",
    )
    dash.add_argument(
        "--dashboard-host",
        default=env_value(env, "DASHBOARD_HOST") or D.DEFAULT_DASHBOARD_HOST,
        help="address of the status page (env DASHBOARD_HOST; default %(default)s: this machine only;"
        " 0.0.0.0 shares it)",
    )
    dash.add_argument("--no-dashboard", action="store_true", help="do not serve the status page")
    dash.add_argument(
        "--dashboard-token",
        default=env_value(env, "DISTGRAY_DASHBOARD_TOKEN"),
        metavar="SECRET",
        help="the page's access token (env DISTGRAY_DASHBOARD_TOKEN); required when the page is"
        " bound beyond loopback: a random one is made and printed if none is given",
    )
    dash.add_argument(
        "--dashboard-open",
        action="store_true",
        help="serve a page bound beyond loopback WITHOUT a login: anyone who reaches it can upload and download",
    )
    dash.add_argument(
        "--dashboard-allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the page answers to besides its address and localhost (DNS-rebinding guard);"
        " repeat for several",
    )
    dash.add_argument(
        "--keep-uploads",
        type=positive,
        default=D.KEEP_UPLOADS_MB,
        metavar="MB",
        help=f"serve mode: keep uploads and their outputs within MB (and {D.KEEP_UPLOADS_HOURS:g} hours);"
        " the oldest finished ones are removed first (default %(default)s)",
    )
    net.add_argument(
        "--local-workers",
        type=nonnegative,
        metavar="N",
        default=env_default(p, env, ("NUM_WORKERS",), nonnegative, 0),
        help="start N worker processes on this machine (env NUM_WORKERS; default %(default)s)",
    )
    net.add_argument(
        "--min-workers",
        type=positive,
        default=1,
        metavar="N",
        help="wait for N workers before starting (default %(default)s); later ones join the running job",
    )
    net.add_argument(
        "--token",
        help="shared secret workers must prove, at least 16 characters (env DISTGRAY_TOKEN; default:"
        " a random one, printed once on this terminal)",
    )
    net.add_argument(
        "--token-file", metavar="FILE", help="read the token from FILE, out of sight of `ps` (env DISTGRAY_TOKEN_FILE)"
    )
    net.add_argument(
        "--allow-weak-token", action="store_true", help="accept a --token shorter than 16 characters (guessable)"
    )
    net.add_argument("--no-auth", action="store_true", help="accept workers without a token: ONLY on a closed network")
    net.add_argument(
        "--tls-cert",
        type=Path,
        metavar="PEM",
        help="this master's certificate for TLS (default: a self-signed one made at start, whose"
        " fingerprint the worker command carries)",
    )
    net.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    net.add_argument(
        "--tls-ca", type=Path, metavar="PEM", help="also require TLS workers to show a certificate from this CA"
    )
    net.add_argument(
        "--tls-save-cert",
        type=Path,
        metavar="PEM",
        help="write this master's certificate (public, no key) to PEM, for workers' --tls-ca: how"
        " containers that start together trust a self-signed master (see docker-compose.yml)",
    )
    net.add_argument(
        "--no-tls",
        action="store_true",
        help="accept plaintext workers from other machines: anyone on the network path can read every"
        " image and change every result. By default workers from other machines must use TLS 1.3",
    )
    net.add_argument(
        "--handshake-timeout",
        type=float,
        default=D.HANDSHAKE_TIMEOUT_S,
        metavar="SECONDS",
        help="a new connection must finish its whole handshake (TLS included) in this time (default %(default)s)",
    )
    net.add_argument(
        "--verify-rows",
        type=nonnegative,
        default=D.VERIFY_ROWS,
        metavar="N",
        help="rows of every strip the master recomputes from the source and compares with the worker's"
        " (a worker caught lying is dropped and its strips redone); 0 trusts the workers (default %(default)s)",
    )
    net.add_argument("--strip-rows", type=positive, help="rows per strip (default: about 4 MiB of pixels per strip)")
    net.add_argument(
        "--no-shared-memory",
        dest="shared_memory",
        action="store_false",
        help="send every worker its pixels over TCP; by default a worker that proves it can read this"
        " machine's shared memory (/dev/shm) gets them by reference instead",
    )
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
    eng = p.add_argument_group("engine")
    eng.add_argument(
        "--engine",
        choices=("builtin", "dask"),
        default=(env_value(env, "DISTGRAY_ENGINE") or "builtin").lower(),
        help="who runs the work (env DISTGRAY_ENGINE; default %(default)s): builtin, distgray's own workers"
        " (the worker and network flags above); dask, a Dask cluster (pip install 'distgray[dask]'): the"
        " one at --scheduler-address, else a local one of --local-workers processes. Same output either way",
    )
    eng.add_argument(
        "--scheduler-address",
        default=env_value(env, "DASK_SCHEDULER_ADDRESS"),
        metavar="tcp://HOST:PORT",
        help="--engine dask: the Dask scheduler to use (env DASK_SCHEDULER_ADDRESS; default: start a"
        " LocalCluster on this machine)",
    )
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=(env_value(env, "DISTGRAY_LOG_LEVEL") or "info").lower(),
        help="debug also shows tracebacks (default %(default)s)",
    )
    return p


def master_main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = build_master_parser(env)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        _locate(args)
    except (ValueError, ImportError) as exc:
        parser.error(str(exc))
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
        if isinstance(args.input_dir, Path) and not args.input_dir.is_dir():  # (a URL's is listed later)
            parser.error(f"--input-dir {args.input_dir}: not a folder")
    elif not images:
        if args.output is not None:
            parser.error("--output needs --image (in serve mode outputs go to --output-dir)")
        if args.no_dashboard:
            parser.error("serve mode (no --image) needs the status page: drop --no-dashboard")
    if args.watch and args.input_dir is None:
        parser.error("--watch watches a folder: give --input-dir")
    if args.watch_interval <= 0 or args.watch_settle < 0:
        parser.error("--watch-interval must be positive and --watch-settle not negative")
    if (args.task_index is None) != (args.task_count is None):
        parser.error("--task-index and --task-count go together (or CLOUD_RUN_TASK_INDEX and CLOUD_RUN_TASK_COUNT)")
    if args.task_count is not None:
        if not is_batch and args.task_count > 1:
            parser.error("--task-index/--task-count split a batch: give --input-dir (or several --image)")
        if not 0 <= (args.task_index or 0) < args.task_count:
            parser.error(f"--task-index {args.task_index} is not one of 0..{args.task_count - 1} (--task-count)")
    if args.whole_file_max_mp < 0:
        parser.error("--whole-file-max-mp must be 0 or more")
    try:
        args.ops = _chain(args.op, env)
    except ValueError as exc:
        parser.error(f"--op {exc}")
    try:
        given_token = None if args.no_auth else read_token(args.token, args.token_file, env)
    except ValueError as exc:
        parser.error(str(exc))
    if given_token is not None and len(given_token) < D.MIN_TOKEN_CHARS and not args.allow_weak_token:
        parser.error(
            f"the token has {len(given_token)} characters: anyone who sees one handshake can guess a token"
            f" under {D.MIN_TOKEN_CHARS} offline. Use a longer one (or none: a random one is made), or"
            " --allow-weak-token"
        )
    if args.tls_key is not None and args.tls_cert is None:
        parser.error("--tls-key needs --tls-cert")
    if args.no_tls and (args.tls_cert or args.tls_ca):
        parser.error("--no-tls and --tls-cert/--tls-ca contradict each other")
    if args.handshake_timeout <= 0:
        parser.error("--handshake-timeout must be positive")
    if args.host is None:
        args.host = D.LOCAL_HOST if args.local_workers else D.DEFAULT_HOST
    # SIGTERM (docker stop, systemd) stops the master the way Ctrl+C does: workers hear BYE.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    procs: list[WorkerProcess] = []
    try:
        from distgray.cli.local_workers import reap
        from distgray.cli.run import RunOptions, run_master, start_early

        # Port and local workers first: the workers start while this process loads the rest.
        token = None if args.no_auth else (given_token or D.new_token())
        listener = None
        if args.engine == "builtin":
            listener, procs = start_early(args.host, args.port, args.local_workers, token, args.log_level, env)
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
        options["token_generated"] = token is not None and given_token is None
        if args.engine == "dask":
            from distgray.cli.run import run_dask

            return run_dask(RunOptions(**options))
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


def _chain(given: list[str] | None, env: Mapping[str, str]) -> str:
    """The operation chain of ``--op`` (else ``DISTGRAY_OPS``), parsed and spelled; ValueError
    naming what exists. Canny needs OpenCV here (workers say whether they have it)."""
    from distgray.imaging import ops

    specs = given if given is not None else [env.get("DISTGRAY_OPS", "")]
    chain = ops.parse_chain(specs)
    if any(op.kind == "canny" for op in chain) and importlib.util.find_spec("cv2") is None:
        raise ValueError("canny needs OpenCV: pip install 'distgray[canny]'")
    return ops.spell(chain)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _fail(args: argparse.Namespace, exc: BaseException, internal: bool = False) -> None:
    if args.log_level == "debug":
        log.exception("failed")
    what = f"internal error: {type(exc).__name__}: {exc}" if internal else str(exc)
    hint = "" if args.log_level == "debug" else " (--log-level debug shows details)" if internal else ""
    print(f"distgray-master: error: {what}{hint}", file=sys.stderr)


def _batch_options(args: argparse.Namespace) -> BatchOptions:
    from distgray.imaging.load import output_format
    from distgray.jobs.batch import BatchOptions

    return BatchOptions(
        images=tuple(args.image or ()),
        input_dir=args.input_dir,
        recursive=args.recursive,
        pattern=args.pattern,
        output_dir=args.output_dir,
        format=output_format(Path("x"), args.format) if args.format else None,
        overwrite=args.overwrite,
        whole_file_max_pixels=int(args.whole_file_max_mp * 1e6),
        quality=args.quality,
        png_level=args.png_level,
        max_pixels=args.max_pixels,
        task_index=args.task_index or 0,
        task_count=args.task_count or 1,
        ops=args.ops,
    )


def _locate(args: argparse.Namespace) -> None:
    """--image, --input-dir, --output and --output-dir as local paths, or as places behind fsspec
    URLs (their backend loaded now, with the --storage-option options)."""
    from distgray.storage.remote import is_url, locate, options_of

    named = [*(args.image or []), args.input_dir, args.output, args.output_dir]
    options = options_of(args.storage_option) if any(x is not None and is_url(x) for x in named) else {}
    args.image = [locate(x, options) for x in args.image] if args.image else None
    args.input_dir = locate(args.input_dir, options) if args.input_dir is not None else None
    args.output = locate(args.output, options) if args.output is not None else None
    args.output_dir = locate(args.output_dir, options)


def _resolve_output(args: argparse.Namespace) -> tuple[Path | None, str | None]:
    if not args.format and (not args.image or len(args.image) > 1 or args.input_dir is not None):
        return None, None  # a batch or serve mode: nothing to check yet (and no Pillow to load)

    def output_format(path: Path) -> str:
        # Common formats without Pillow: loading its plugins would delay the local workers' start.
        quick = formats.quick_format(path, args.format)
        if quick is not None:
            return quick
        from distgray.imaging import load

        return load.output_format(path, args.format)

    if not args.image or len(args.image) > 1 or args.input_dir is not None:
        return None, output_format(Path("x"))
    image = args.image[0]
    if args.output is not None:
        fmt = output_format(args.output)
        output = args.output
    else:
        fmt = output_format(image)
        ext = formats.EXTENSIONS.get(fmt, image.suffix) if args.format else image.suffix
        output = args.output_dir / formats.gray_name(image.stem, ext)
    from distgray.storage.places import same_place

    if same_place(image, output):
        raise ValueError(f"--output {output} would overwrite the input")
    return output, fmt


def module_main(argv: Sequence[str] | None = None) -> int:
    """``python -m distgray {master,worker,health,jobs} [flags]``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    from distgray.cli.jobs import jobs_main

    commands = {"master": master_main, "worker": worker_main, "health": health_main, "jobs": jobs_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m distgray {master,worker,health,jobs} [--help]", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


def master_command() -> None:
    """``master_server.py`` and ``distgray-master``."""
    exit_with(master_main)


def worker_command() -> None:
    """``worker_client.py`` and ``distgray-worker``."""
    exit_with(worker_main)


def module_command() -> None:
    """``python -m distgray``."""
    exit_with(module_main)
