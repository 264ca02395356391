"""Whole jobs with real worker subprocesses: output bit-identical to single-process Pillow."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from distgray.imaging.load import load_image
from distgray.master.server import Master, WorkerState
from tests.conftest import decoded, pillow_reference
from tests.integration.conftest import ROOT, WAIT_S, MasterProcess, Workers, flag_of, wait_until


def _coverage(master: Master) -> list[int]:
    """How many counted results landed on each row of the job's image."""
    job = master.job
    assert job is not None
    hits = np.zeros(job.height, dtype=np.int64)
    for r in job.records:
        if r.counted:
            hits[r.row_start : r.row_stop] += 1
    return sorted(set(hits.tolist()))


@pytest.mark.parametrize("n_workers", [1, 2, 3])
def test_real_photo_with_n_workers(
    n_workers: int, photo: Path, make_master: Callable[..., Master], workers: Workers
) -> None:
    master = make_master(strip_rows=97)  # 23 strips that do not divide 2160 rows
    for i in range(n_workers):
        workers.start(master.address[1], worker_id=f"w{i}")
    assert master.wait_for_workers(n_workers, timeout=WAIT_S)
    loaded = load_image(photo)
    assert loaded.pixels is not None
    job = master.run(loaded.pixels, photo.name, timeout=WAIT_S * 2)
    assert job.failure is None and job.scheduler.finished
    assert np.array_equal(job.output, pillow_reference(photo))
    assert _coverage(master) == [1], "every row comes from exactly one counted result"
    assert {w.id for w in master.live_workers()} == {f"w{i}" for i in range(n_workers)}


def test_one_row_strips(make_master: Callable[..., Master], workers: Workers) -> None:
    rgb = np.random.default_rng(7).integers(0, 256, (37, 1001, 3), dtype=np.uint8)
    master = make_master(strip_rows=1)
    workers.start(master.address[1])
    workers.start(master.address[1])
    job = master.run(rgb, "random", timeout=WAIT_S * 2)
    from PIL import Image

    assert np.array_equal(job.output, np.asarray(Image.fromarray(rgb).convert("L")))
    assert len(job.scheduler.strips) == 37


@pytest.mark.slow
def test_odd_sized_8k_through_the_cli(odd_8k: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "odd_gray.png"
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "master_server.py"),
            "--image",
            str(odd_8k),
            "--output",
            str(out),
            "--png-level",
            "1",
            "--local-workers",
            "3",
            "--min-workers",
            "3",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(decoded(out), pillow_reference(odd_8k))
    data = json.loads(report.read_text())
    assert (data["width"], data["height"], data["status"]) == (7679, 4321, "done")
    counted = sorted((s["row_start"], s["row_stop"]) for s in data["strip_log"] if s["counted"])
    assert counted[0][0] == 0 and counted[-1][1] == 4321
    assert all(a[1] == b[0] for a, b in itertools.pairwise(counted))
    assert sum(w["rows"] for w in data["workers"].values()) >= 4321
    # the terminal summary shows the same figures
    assert "7679x4321" in proc.stdout and "rows/s" in proc.stdout
    for wid, w in data["workers"].items():
        assert re.search(rf"^{re.escape(wid)}\s+\w+\s+{w['strips']}\s+{w['rows']}\s", proc.stdout, re.M)
    # every local worker heard BYE and left by itself
    assert "did not leave" not in proc.stderr and "reconnecting" not in proc.stderr


def test_multi_terminal_flow_as_in_the_readme(photo: Path, tmp_path: Path) -> None:
    master = MasterProcess(
        ["--image", str(photo), "--host", "127.0.0.1", "--port", "0", "--min-workers", "2"], cwd=tmp_path
    )
    cmd = master.worker_command()
    assert cmd[:4] == ["python", "-m", "distgray", "worker"]
    port, token = flag_of(cmd, "--port"), flag_of(cmd, "--token")
    assert int(port) > 0
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "worker_client.py"), "--host", "127.0.0.1", "--port", port, f"--token={token}"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    out = master.finish(timeout=WAIT_S * 2)
    assert master.proc.returncode == 0, master.stderr
    for p in procs:
        _, err = p.communicate(timeout=WAIT_S)
        assert p.returncode == 0, err  # the master said BYE; the workers left cleanly
    result = tmp_path / "results" / "sample_4k_gray.jpg"
    assert result.exists() and "sample_4k.jpg: 3840x2160" in out
    assert np.array_equal(decoded(result), decoded_jpeg_of_reference(photo))


def decoded_jpeg_of_reference(photo: Path) -> np.ndarray:
    """Pillow's gray image encoded as the master encodes JPEG (quality 95), then decoded."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pillow_reference(photo)).save(buf, format="JPEG", quality=95)
    buf.seek(0)
    return np.asarray(Image.open(buf))


def test_master_ctrl_c_while_waiting_writes_nothing(photo: Path, tmp_path: Path) -> None:
    master = MasterProcess(["--image", str(photo), "--host", "127.0.0.1", "--port", "0"], cwd=tmp_path)
    master.worker_command()
    master.proc.send_signal(signal.SIGINT)
    master.finish(timeout=WAIT_S)
    assert master.proc.returncode == 130
    assert "interrupted" in master.stderr and "Traceback" not in master.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_worker_leaving_mid_job_loses_nothing(
    photo: Path, make_master: Callable[..., Master], workers: Workers
) -> None:
    master = make_master(strip_rows=60)
    loaded = load_image(photo)
    assert loaded.pixels is not None
    leaver = workers.start(master.address[1], worker_id="leaver", extra=("--max-tasks", "1"))
    assert master.wait_for_workers(1, timeout=WAIT_S)
    job = master.submit(loaded.pixels, photo.name)
    assert leaver.wait(timeout=WAIT_S) == 0
    wait_until(lambda: master.workers["leaver"].state is WorkerState.GONE, what="the master to see it leave")
    assert not job.wait(0) and job.rows_done == 60, "one strip done, the job waits for a worker"
    # the strips it had prefetched (one or two, depending on timing) were requeued, none lost
    assert {r["worker"] for r in job.scheduler.requeued} == {"leaver"}
    assert 1 <= len(job.scheduler.requeued) <= 2
    workers.start(master.address[1], worker_id="stayer")
    assert job.wait(WAIT_S * 2)
    assert job.failure is None
    assert np.array_equal(job.output, pillow_reference(photo))


def test_console_scripts_are_installed() -> None:
    bindir = Path(sys.executable).parent
    for name in ("distgray-master", "distgray-worker"):
        script = bindir / name
        assert script.exists(), f"{name} not installed next to {sys.executable}: run pip install -e ."
        proc = subprocess.run(
            [str(script), "--help"],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert proc.returncode == 0 and "environment:" in proc.stdout


@pytest.fixture(scope="module")
def odd_8k_pixels(odd_8k: Path) -> tuple[np.ndarray, np.ndarray]:
    loaded = load_image(odd_8k)
    assert loaded.pixels is not None
    return loaded.pixels, pillow_reference(odd_8k)


@pytest.mark.slow
@pytest.mark.parametrize("n_workers", [1, 2, 3])
def test_odd_sized_8k_with_n_workers(
    n_workers: int,
    odd_8k_pixels: tuple[np.ndarray, np.ndarray],
    make_master: Callable[..., Master],
    workers: Workers,
) -> None:
    pixels, expected = odd_8k_pixels
    master = make_master()
    for i in range(n_workers):
        workers.start(master.address[1], worker_id=f"w{i}")
    assert master.wait_for_workers(n_workers, timeout=WAIT_S)
    job = master.run(pixels, "odd8k", timeout=WAIT_S * 2)
    assert job.failure is None
    assert np.array_equal(job.output, expected)
    assert _coverage(master) == [1]


def test_worker_ctrl_c_leaves_cleanly(master: Master, workers: Workers) -> None:
    proc = workers.start(master.address[1], worker_id="leaving")
    assert master.wait_for_workers(1, timeout=WAIT_S)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=WAIT_S) == 0
    wait_until(lambda: master.workers["leaving"].state is WorkerState.GONE, what="the master to see it leave")
    assert master.workers["leaving"].reason == "left: stopped"


def test_worker_mid_handshake_during_shutdown_is_told_bye(master: Master) -> None:
    from distgray.net.channel import connect
    from distgray.wire import protocol as P

    channel = connect("127.0.0.1", master.address[1], timeout=WAIT_S)
    channel.send(P.Hello("late"))
    channel.expect(P.Challenge)  # the master now waits for our AUTH, which never comes
    closer = threading.Thread(target=master.close, args=("test shutdown",), daemon=True)
    closer.start()
    assert channel.expect(P.Bye).reason == "test shutdown"
    closer.join(timeout=WAIT_S)
    assert not closer.is_alive()
    channel.close()


def test_progress_bar_on_a_terminal(photo: Path, tmp_path: Path) -> None:
    """With stderr on a terminal the master draws a progress bar; piped, it stays quiet."""
    import fcntl
    import pty
    import struct
    import termios

    main_fd, sub_fd = pty.openpty()
    fcntl.ioctl(sub_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "master_server.py"),
            "--image",
            str(photo),
            "--output",
            str(tmp_path / "o.png"),
            "--local-workers",
            "1",
            "--strip-rows",
            "16",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--png-level",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=sub_fd,
        cwd=tmp_path,
    )
    os.close(sub_fd)
    seen = b""
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # the terminal closed: the master has exited
            break
        if not chunk:
            break
        seen += chunk
    os.close(main_fd)
    assert proc.wait(timeout=WAIT_S) == 0
    text = seen.decode(errors="replace")
    assert "sample_4k.jpg:" in text and "rows/s" in text and "/2160" in text, text[-2000:]
