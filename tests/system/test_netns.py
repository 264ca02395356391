"""Master and workers on separate hosts: network namespaces joined by a bridge (utils/netlab.py).

Needs root and iproute2; skips with the reason otherwise. CI runs as root, so it runs there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import _load_utils, decoded, pillow_reference
from tests.integration.conftest import ROOT, WAIT_S

netlab = _load_utils("netlab")
REASON = netlab.unavailable_reason()
pytestmark = [pytest.mark.system, pytest.mark.skipif(REASON is not None, reason=f"netns lab: {REASON}")]


@pytest.fixture
def lab() -> Iterator[Any]:
    with netlab.Lab(hosts=3, prefix=f"dg{os.getpid() % 100000}") as lab:
        yield lab


def test_master_and_two_workers_on_three_hosts(lab: Any, odd_8k: Path, tmp_path: Path) -> None:
    master_ip = lab.address("h0")
    out = tmp_path / "out.png"
    env = {**os.environ, "DISTGRAY_TOKEN": "lab-token"}
    master = subprocess.Popen(
        lab.command(
            "h0",
            [
                sys.executable,
                str(ROOT / "master_server.py"),
                "--image",
                str(odd_8k),
                "--output",
                str(out),
                "--png-level",
                "1",
                "--host",
                master_ip,
                "--port",
                "5003",
                "--min-workers",
                "2",
            ],
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers = [
        subprocess.Popen(
            lab.command(
                h,
                [
                    sys.executable,
                    str(ROOT / "worker_client.py"),
                    "--host",
                    master_ip,
                    "--port",
                    "5003",
                    "--id",
                    h,
                    "--retry-for",
                    "30",
                ],
            ),
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for h in ("h1", "h2")
    ]
    try:
        stdout, stderr = master.communicate(timeout=WAIT_S * 3)
        assert master.returncode == 0, stderr
        for w in workers:
            _, err = w.communicate(timeout=WAIT_S)
            assert w.returncode == 0, err
    finally:
        for p in [master, *workers]:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert np.array_equal(decoded(out), pillow_reference(odd_8k))
    # both remote hosts did work, and each came from its own address
    assert "joined from 10.231.77.2" in stderr and "joined from 10.231.77.3" in stderr
    assert all(f"\n{h} " in "\n" + stdout for h in ("h1", "h2")), stdout
    # and the master could not be reached from outside the lab: it listened on the lab address only
    assert f"listening on {master_ip}:5003" in stderr


def test_cutting_a_workers_link_mid_job(lab: Any, odd_8k: Path, tmp_path: Path) -> None:
    """Unplug one worker's host mid-job: it is declared lost after the heartbeat timeout, its
    strips are redone by the other, and the output is still bit-identical."""
    import json
    import time

    master_ip = lab.address("h0")
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    env = {**os.environ, "DISTGRAY_TOKEN": "lab-token"}
    master = subprocess.Popen(
        lab.command(
            "h0",
            [
                sys.executable,
                str(ROOT / "master_server.py"),
                "--image",
                str(odd_8k),
                "--output",
                str(out),
                "--png-level",
                "1",
                "--host",
                master_ip,
                "--port",
                "5003",
                "--min-workers",
                "2",
                "--heartbeat",
                "0.25",
                "--heartbeat-timeout",
                "3",
                "--report",
                str(report),
                "--log-level",
                "debug",
            ],
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers = {
        h: subprocess.Popen(
            lab.command(
                h,
                [
                    sys.executable,
                    str(ROOT / "worker_client.py"),
                    "--host",
                    master_ip,
                    "--port",
                    "5003",
                    "--id",
                    h,
                    "--throttle",
                    "40",
                    "--retry-for",
                    "30",
                ],
            ),
            env=env,
            stderr=subprocess.DEVNULL,
        )
        for h in ("h1", "h2")
    }
    err_lines: list[str] = []

    def read_stderr() -> None:
        assert master.stderr is not None
        err_lines.extend(master.stderr)

    import threading

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while "worker h2: strip" not in "".join(err_lines):  # h2 holds work: it is mid-job
            assert time.monotonic() < deadline and master.poll() is None, "".join(err_lines)
            time.sleep(0.02)
        lab.cut("h2")
        cut_at = time.monotonic()
        master.wait(timeout=WAIT_S * 3)
        reader.join(timeout=WAIT_S)
        stderr = "".join(err_lines)
        assert master.returncode == 0, stderr
        assert workers["h1"].wait(timeout=WAIT_S) == 0
    finally:
        for p in [master, *workers.values()]:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert np.array_equal(decoded(out), pillow_reference(odd_8k))
    data = json.loads(report.read_text())
    lost = [r for r in data["requeued"] if r["worker"] == "h2"]
    assert lost, f"h2's strips were requeued: {data['requeued']}"
    assert "silent for 3.0 s" in lost[0]["reason"] or "stalled for 3.0 s" in lost[0]["reason"]
    detected = lost[0]["at"] - cut_at  # both on the system-wide monotonic clock
    print(f"\nlink cut: h2 declared lost {detected:.2f} s after its cable was unplugged (timeout 3 s)")
    assert 0 < detected < 3 * 3.0, "detected by the heartbeat timeout, not by luck or never"
    assert data["workers"]["h1"]["rows"] > data["workers"]["h2"]["rows"]
