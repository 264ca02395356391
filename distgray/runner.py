"""Running one image end to end: start the master and local workers, load, convert, save, report.

The CLI parses flags into :class:`RunOptions` and calls :func:`run_single_image`; everything here
takes its settings from those options (and the environment mapping inside them), never from
``sys.argv`` or ``os.environ``. Status lines for the person at the terminal go to stderr; the
summary table goes to stdout.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from distgray import imaging
from distgray.errors import DistgrayError, TaskFailed
from distgray.master import Job, Master, MasterConfig
from distgray.report import format_summary, job_report, write_json_atomic

log = logging.getLogger("distgray")


@dataclass(frozen=True)
class RunOptions:
    """Everything one ``distgray-master --image`` run needs (see ``--help`` for each)."""

    image: Path
    output: Path
    format: str
    quality: int | None = None
    png_level: int = imaging.DEFAULT_PNG_LEVEL
    max_pixels: int = imaging.DEFAULT_MAX_PIXELS
    report: Path | None = None
    host: str = "0.0.0.0"
    port: int = 5003
    local_workers: int = 0
    min_workers: int = 1
    token: str | None = None
    no_auth: bool = False
    strip_rows: int | None = None
    heartbeat: float = 2.0
    heartbeat_timeout: float = 20.0
    timeout: float | None = None
    log_level: str = "info"
    env: Mapping[str, str] = field(default_factory=dict)  # passed on to local worker processes


def run_single_image(opts: RunOptions) -> int:
    t0 = time.monotonic()
    token = None if opts.no_auth else (opts.token or secrets.token_urlsafe(18))
    config = MasterConfig(
        host=opts.host,
        port=opts.port,
        token=token.encode() if token else None,
        heartbeat_interval_s=opts.heartbeat,
        heartbeat_timeout_s=opts.heartbeat_timeout,
        strip_rows=opts.strip_rows,
    )
    master = Master(config)
    try:
        host, port = master.start()
    except OSError as exc:
        raise DistgrayError(f"cannot listen on {opts.host}:{opts.port}: {exc.strerror or exc}") from exc
    procs: list[subprocess.Popen[bytes]] = []
    job = None
    workers_rss: list[float | None] = []
    bye = "master stopping"
    try:
        worker_cmd = _announce(host, port, token)
        # Local workers start (importing NumPy and Pillow) while the image decodes.
        procs = spawn_local_workers(opts.local_workers, port, token, opts.log_level, opts.env)
        loaded = imaging.load_image(opts.image, opts.max_pixels)
        t_loaded = time.monotonic()
        for note in loaded.notes:
            log.info("%s: %s", opts.image, note)
        if loaded.kind is imaging.Kind.GRAY:
            log.info("%s: already grayscale (%s): copied unchanged, no workers needed", opts.image, loaded.mode)
        else:
            job = _run_job(master, loaded, opts, procs, worker_cmd)
            workers_rss = [peak_rss_mb(p.pid) for p in procs]  # before they leave
        bye = "job finished"
    finally:
        master.close(bye)
        reap(procs)
    report = job_report(job, master) if job is not None else None
    if job is not None and job.failure:
        if opts.report and report is not None:  # what happened is most useful when it went wrong
            write_json_atomic(report, opts.report)
        raise TaskFailed(f"job failed: {job.failure}")
    image, notes = imaging.compose_output(loaded, job.output if job is not None else None, opts.format)
    for note in notes:
        log.warning("%s: %s", opts.output, note)
    t_save = time.monotonic()
    imaging.save_atomic(
        image, opts.output, opts.format, imaging.save_options(opts.format, opts.quality, opts.png_level)
    )
    total = time.monotonic() - t0
    if report is None:
        print(f"{opts.output}: written ({loaded.width}x{loaded.height}, {loaded.mode}) in {total:.3f} s")
        return 0
    known_rss = [r for r in workers_rss if r is not None]
    report.update(
        output=str(opts.output),
        input=str(opts.image),
        total_s=round(total, 4),
        load_s=round(t_loaded - t0, 4),
        save_s=round(time.monotonic() - t_save, 4),
        master_peak_rss_mb=peak_rss_mb(os.getpid()),
        local_worker_peak_rss_mb=max(known_rss) if known_rss else None,
    )
    print(format_summary(report))
    if opts.report:
        write_json_atomic(report, opts.report)
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


def _run_job(
    master: Master,
    loaded: imaging.LoadedImage,
    opts: RunOptions,
    procs: list[subprocess.Popen[bytes]],
    worker_cmd: str,
) -> Job:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    assert loaded.pixels is not None
    deadline = None if opts.timeout is None else time.monotonic() + opts.timeout
    if len(master.live_workers()) < opts.min_workers:
        log.info("waiting for %d worker(s)...", opts.min_workers)
    while not master.wait_for_workers(opts.min_workers, timeout=0.5):
        if procs and all(p.poll() is not None for p in procs) and len(procs) >= opts.min_workers:
            raise TaskFailed(f"local workers exited (codes {[p.returncode for p in procs]}) before joining")
        if deadline is not None and time.monotonic() > deadline:
            raise TaskFailed(f"timed out after {opts.timeout:g} s waiting for {opts.min_workers} worker(s)")
    job = master.submit(loaded.pixels, loaded.path.name)
    with (
        logging_redirect_tqdm(),
        tqdm(total=job.height, unit="rows", desc=loaded.path.name, disable=None, leave=False) as bar,
    ):
        waiting = False
        while not job.wait(0.2):
            bar.update(job.rows_done - bar.n)
            none_left = not master.live_workers()
            if none_left and not waiting:  # say it once per episode, not every tick
                log.warning(
                    "no workers connected: the job waits (%d/%d rows done). Start one with:\n    %s",
                    job.rows_done,
                    job.height,
                    worker_cmd,
                )
            waiting = none_left
            if deadline is not None and time.monotonic() > deadline:
                raise TaskFailed(f"timed out after {opts.timeout:g} s ({job.rows_done}/{job.height} rows done)")
        bar.update(job.rows_done - bar.n)
    return job


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
