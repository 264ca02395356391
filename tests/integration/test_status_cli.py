"""The status page from the command line: where it listens, and what happens when it cannot."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, WAIT_S


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program already listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def master(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "master_server.py"), "--host", "127.0.0.1", "--port", "0", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT_S * 3,
    )


def test_a_busy_status_port_does_not_stop_a_conversion(photo: Path, tmp_path: Path, busy_port: int) -> None:
    proc = master("--image", str(photo), "--local-workers", "1", "--dashboard-port", str(busy_port), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"status page not started: cannot listen on 127.0.0.1:{busy_port}" in proc.stderr
    assert "--dashboard-port" in proc.stderr
    assert (tmp_path / "results" / "sample_4k_gray.jpg").is_file()


def test_serve_mode_stops_without_its_page(tmp_path: Path, busy_port: int) -> None:
    proc = master("--dashboard-port", str(busy_port), cwd=tmp_path)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == [
        f"distgray-master: error: status page: cannot listen on 127.0.0.1:{busy_port}: Address already in use"
        " (another distgray master? pick a free port with --dashboard-port 0, or stop the other one)"
    ]
    assert "Traceback" not in proc.stderr


def test_no_dashboard_means_no_page(photo: Path, tmp_path: Path) -> None:
    proc = master("--image", str(photo), "--local-workers", "1", "--no-dashboard", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "status page" not in proc.stderr
