"""Workers that die, hang, lie, join late or leave; masters that restart or are interrupted.

Each job still completes with output bit-identical to Pillow, and the report shows what was redone.
Workers are slowed with ``--throttle`` so that "mid-job" is a state the test can wait for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distgray.imaging.load import load_image
from distgray.master.report import job_report
from distgray.master.server import Job, Master, WorkerState
from distgray.wire import protocol as P
from tests.conftest import decoded, pillow_reference
from tests.integration.conftest import (
    ROOT,
    TOKEN,
    WAIT_S,
    FakeWorker,
    MasterProcess,
    Workers,
    flag_of,
    wait_until,
)

SLOW = ("--throttle", "40")
HEARTBEAT = {"heartbeat_interval_s": 0.25, "heartbeat_timeout_s": 3.0}


@pytest.fixture(scope="module")
def photo_job(photo: Path) -> tuple[np.ndarray, np.ndarray]:
    loaded = load_image(photo)
    assert loaded.pixels is not None
    return loaded.pixels, pillow_reference(photo)


def _mid_job(master: Master, job: Job, worker_id: str) -> None:
    """Wait until ``worker_id`` has finished a strip and holds another: it is mid-job."""
    wait_until(
        lambda: (
            master.workers.get(worker_id) is not None
            and any(r.worker == worker_id for r in job.records)
            and bool(master.workers[worker_id].in_flight)
        ),
        what=f"{worker_id} to be mid-job",
    )
    assert not job.wait(0), "the job must still be running for this test to mean anything"


def _three_workers_mid_job(
    make_master: Callable[..., Master], workers: Workers, pixels: np.ndarray, victim: str
) -> tuple[Master, Job, dict[str, subprocess.Popen[bytes]], set[int]]:
    """Three slowed workers on a running job; returns when ``victim`` is mid-job, with the strips it holds."""
    master = make_master(**HEARTBEAT)
    procs = {w: workers.start(master.address[1], worker_id=w, extra=SLOW) for w in ("a", "b", victim)}
    assert master.wait_for_workers(3, timeout=WAIT_S)
    job = master.submit(pixels, "photo")
    _mid_job(master, job, victim)
    held = {sid for (_, sid) in master.workers[victim].in_flight}
    assert held
    return master, job, procs, held


def _redone(report: dict[str, Any], worker: str) -> set[int]:
    """Strips of ``worker`` that the report shows redone elsewhere: requeued, or backed up."""
    redone = {r["strip"] for r in report["requeued"] if r["worker"] == worker}
    return redone | {b["strip"] for b in report["backups"] if b["of"] == worker}


def _finish(master: Master, job: Job, expected: np.ndarray) -> dict[str, Any]:
    assert job.wait(WAIT_S * 3), "job did not finish"
    assert job.failure is None, job.failure
    assert np.array_equal(job.output, expected)
    return job_report(job, master.workers)


def test_kill_9_one_of_three_workers(
    make_master: Callable[..., Master], workers: Workers, photo_job: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, expected = photo_job
    master, job, procs, held = _three_workers_mid_job(make_master, workers, pixels, victim="victim")
    procs["victim"].send_signal(signal.SIGKILL)
    report = _finish(master, job, expected)
    assert held <= _redone(report, "victim"), "every strip it held was redone elsewhere, as the report shows"
    assert master.workers["victim"].state in (WorkerState.LOST, WorkerState.GONE)


def test_sigstop_worker_is_declared_lost_and_its_late_results_ignored(
    make_master: Callable[..., Master], workers: Workers, photo_job: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, expected = photo_job
    master, job, procs, held = _three_workers_mid_job(make_master, workers, pixels, victim="sleeper")
    procs["sleeper"].send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        wait_until(lambda: master.workers["sleeper"].state is WorkerState.LOST, what="the hung worker to be lost")
        detected = time.monotonic() - stopped_at
        print(f"\nhung worker declared lost {detected:.2f} s after SIGSTOP (heartbeat timeout 3 s)")
        assert any(w in master.workers["sleeper"].reason for w in ("silent for", "stalled for"))
        report = _finish(master, job, expected)
    finally:
        procs["sleeper"].send_signal(signal.SIGCONT)
    # Each strip it held was redone elsewhere: requeued when it was declared lost, or already
    # rescued by a backup copy before that (a straggler gets one after 4x its expected time).
    assert held <= _redone(report, "sleeper"), (held, report["requeued"], report["backups"])
    assert all(job.scheduler.strips[sid].done_by != "sleeper" for sid in held)
    # It wakes up, finds its connection gone and reconnects: the same worker (its id), once more
    # with a new connection; whatever it still had never reaches the finished output.
    wait_until(
        lambda: master.workers["sleeper"].joins >= 2 and master.workers["sleeper"].live,
        what="the woken worker to reconnect",
    )
    assert "sleeper#2" not in master.workers and master.workers["sleeper"].losses == 1
    assert np.array_equal(job.output, expected)


def test_authenticated_worker_sending_garbage_is_dropped(
    make_master: Callable[..., Master], workers: Workers, photo_job: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, expected = photo_job
    master = make_master(**HEARTBEAT)
    liar = FakeWorker(master.address[1], worker_id="garbage")
    job = master.submit(pixels, "photo")
    task, _ = liar.recv_task()
    with contextlib.suppress(OSError):  # the master may hang up while we are still sending
        liar.channel.sock.sendall(os.urandom(4096))
    wait_until(lambda: master.workers["garbage"].state is WorkerState.LOST, what="the liar to be dropped")
    workers.start(master.address[1], worker_id="honest")
    report = _finish(master, job, expected)
    assert task.strip_id in [r["strip"] for r in report["requeued"] if r["worker"] == "garbage"]
    liar.close()


def test_worker_joining_mid_job_gets_work_at_once(
    make_master: Callable[..., Master], workers: Workers, photo_job: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, expected = photo_job
    master = make_master(**HEARTBEAT)
    workers.start(master.address[1], worker_id="early", extra=SLOW)
    assert master.wait_for_workers(1, timeout=WAIT_S)
    job = master.submit(pixels, "photo")
    _mid_job(master, job, "early")
    workers.start(master.address[1], worker_id="late")
    report = _finish(master, job, expected)
    late = report["workers"]["late"]
    assert late["strips"] >= 1 and late["rows"] > 0


def test_second_ctrl_c_quits_at_once(make_master: Callable[..., Master], workers: Workers) -> None:
    # One 48 MB strip at 1000x: the strip in hand takes many seconds, so the second Ctrl+C
    # certainly arrives while the worker is still busy with it.
    master = make_master(strip_rows=4000, **HEARTBEAT)
    proc = workers.start(master.address[1], worker_id="stubborn", extra=("--throttle", "1000", "--log-level", "debug"))
    rgb = np.zeros((4000, 4000, 3), np.uint8)
    job = master.submit(rgb, "big")
    # the worker itself has started the strip (the master may have sent it while it is still arriving)
    wait_until(lambda: "worker stubborn: strip 0" in workers.log_of(proc), what="the worker to start its strip")
    proc.send_signal(signal.SIGINT)  # finish the strip in hand... which takes minutes at 1000x
    wait_until(lambda: "finishing the current strip" in workers.log_of(proc), what="the first Ctrl+C to register")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=WAIT_S) == 130
    wait_until(lambda: master.workers["stubborn"].state in (WorkerState.LOST, WorkerState.GONE), what="drop")
    assert not job.wait(0)


def test_no_workers_left_the_job_waits_and_says_how_to_start_one(photo: Path, tmp_path: Path) -> None:
    master = MasterProcess(
        ["--image", str(photo), "--host", "127.0.0.1", "--port", "0", "--log-level", "info"], tmp_path
    )
    cmd = master.worker_command()
    port, token = flag_of(cmd, "--port"), flag_of(cmd, "--token")
    worker = [sys.executable, str(ROOT / "worker_client.py"), "--host", "127.0.0.1", "--port", port, f"--token={token}"]
    first = subprocess.run([*worker, "--max-tasks", "1", "--throttle", "5"], capture_output=True, timeout=WAIT_S)
    assert first.returncode == 0
    wait_until(
        lambda: "distgray worker" in master.stderr.partition("no workers connected")[2],
        what="the master to say it is waiting, and how to start a worker",
    )
    waiting = master.stderr.split("no workers connected")[1]
    # How to start one, without the token: that line may end up in a log (the terminal had it once).
    assert "-m distgray worker --host 127.0.0.1 --port" in waiting and token not in waiting
    second = subprocess.Popen(worker, stderr=subprocess.DEVNULL)
    master.finish(timeout=WAIT_S * 2)
    assert master.proc.returncode == 0, master.stderr
    assert second.wait(timeout=WAIT_S) == 0
    assert np.array_equal(decoded(tmp_path / "results" / "sample_4k_gray.jpg").shape, (2160, 3840))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_workers_reconnect_to_a_restarted_master(photo: Path, tmp_path: Path, workers: Workers) -> None:
    port = _free_port()
    args = ["--image", str(photo), "--host", "127.0.0.1", "--port", str(port), "--token", TOKEN, "--min-workers", "2"]
    first = MasterProcess([*args, "--output", str(tmp_path / "first.png")], tmp_path)
    first.worker_command()
    procs = [workers.start(port, worker_id=f"r{i}", extra=("--throttle", "40", "--retry-for", "60")) for i in (1, 2)]
    wait_until(lambda: first.stderr.count("joined from") >= 2, what="both workers to join")
    first.proc.send_signal(signal.SIGKILL)  # the master crashes mid-job: no BYE
    first.finish(timeout=WAIT_S)
    assert not (tmp_path / "first.png").exists(), "a crashed master leaves no output"
    wait_until(lambda: all("connection lost" in workers.log_of(p) for p in procs), what="workers to notice")
    second = MasterProcess([*args, "--output", str(tmp_path / "second.png")], tmp_path)
    second.finish(timeout=WAIT_S * 3)
    assert second.proc.returncode == 0, second.stderr
    assert np.array_equal(decoded(tmp_path / "second.png"), pillow_reference(photo))
    for p in procs:
        assert p.wait(timeout=WAIT_S) == 0  # they heard the second master's BYE


def test_master_ctrl_c_mid_job_says_bye_and_writes_nothing(photo: Path, tmp_path: Path, workers: Workers) -> None:
    port = _free_port()
    master = MasterProcess(
        ["--image", str(photo), "--host", "127.0.0.1", "--port", str(port), "--token", TOKEN], tmp_path
    )
    master.worker_command()
    proc = workers.start(port, worker_id="w", extra=("--throttle", "200"))
    wait_until(lambda: "job 1:" in master.stderr, what="the job to start")
    master.proc.send_signal(signal.SIGINT)
    master.finish(timeout=WAIT_S)
    assert master.proc.returncode == 130 and "interrupted; no output written" in master.stderr
    assert proc.wait(timeout=WAIT_S) == 0, workers.log_of(proc)
    assert "master said bye" in workers.log_of(proc)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_strip_failing_on_every_worker_fails_the_job_with_a_reason(
    make_master: Callable[..., Master], photo_job: tuple[np.ndarray, np.ndarray]
) -> None:
    from distgray.scheduling.strips import Policy

    pixels, _ = photo_job
    master = make_master(policy=Policy(max_attempts=2), strip_rows=2160, **HEARTBEAT)
    job = master.submit(pixels, "photo")
    for name in ("bad1", "bad2"):
        liar = FakeWorker(master.address[1], worker_id=name)
        task, _ = liar.recv_task()
        wrong = P.Result(task.job_id, task.strip_id, task.row_start, task.row_stop, task.width + 1)
        with contextlib.suppress(Exception):
            liar.channel.send(wrong, bytes(wrong.payload_len))
        wait_until(lambda n=name: master.workers[n].state is WorkerState.LOST, what=f"{name} dropped")
    assert job.wait(WAIT_S)
    assert job.failure is not None and "failed on 2 workers (bad1, bad2)" in job.failure
