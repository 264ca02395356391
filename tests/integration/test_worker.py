"""The real worker subprocess against masters written in the test: misbehaving masters, no-auth CLI."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distgray.errors import PeerDisconnected
from distgray.net.channel import Channel
from distgray.net.handshake import server_handshake
from distgray.wire import protocol as P
from tests.integration.conftest import ROOT, TOKEN, WAIT_S, Workers


def _accept_worker(server: socket.socket, prefetch: int = 2) -> Channel:
    server.settimeout(WAIT_S)
    sock, addr = server.accept()
    channel = Channel(sock, peer=f"worker {addr}", timeout=WAIT_S)

    def welcome(hello: P.Hello, proof: bytes) -> P.Welcome:
        return P.Welcome(proof, 1000, 10_000, prefetch, hello.worker_id)

    server_handshake(channel, TOKEN.encode(), welcome)
    return channel


def _task(strip: int, width: int = 64, rows: int = 4) -> tuple[P.Task, np.ndarray]:
    pixels = np.random.default_rng(strip).integers(0, 256, (rows, width, 3), dtype=np.uint8)
    return P.Task(1, strip, strip * rows, (strip + 1) * rows, width), pixels


def test_worker_converts_tasks_from_a_master_written_to_the_spec(workers: Workers) -> None:
    from PIL import Image

    with socket.create_server(("127.0.0.1", 0)) as server:
        proc = workers.start(server.getsockname()[1], worker_id="spec")
        channel = _accept_worker(server)
        sent: dict[int, np.ndarray] = {}
        for i in range(2):
            task, pixels = _task(i)
            channel.send(task, pixels.data)
            sent[i] = pixels
        for _ in range(2):
            message, payload = channel.recv()
            while isinstance(message, P.Heartbeat):
                message, payload = channel.recv()
            assert isinstance(message, P.Result) and payload is not None
            expected = np.asarray(Image.fromarray(sent[message.strip_id]).convert("L"))
            assert bytes(payload) == expected.tobytes()
            assert message.compute_us > 0
        channel.send(P.Bye("done"))
        assert proc.wait(timeout=WAIT_S) == 0
        channel.close()


def test_worker_refuses_a_master_that_exceeds_its_prefetch(workers: Workers) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        proc = workers.start(server.getsockname()[1], worker_id="victim", extra=("--retry-for", "1"))
        channel = _accept_worker(server, prefetch=2)
        with pytest.raises(PeerDisconnected):
            for i in range(50):  # the worker hangs up at the 3rd task that has no free slot
                task, pixels = _task(i, width=4096, rows=64)
                channel.send(task, pixels.data)
            while True:
                channel.recv()
        channel.close()
    assert proc.wait(timeout=WAIT_S) == 1  # it tried to reconnect; the master is gone: gives up
    assert "more than 2 tasks at once" in workers.log_of(proc)


def test_no_auth_master_says_so_loudly(photo: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "master_server.py"),
            "--image",
            str(photo),
            "--no-auth",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--timeout",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "authentication is OFF (--no-auth)" in proc.stderr
    assert "--token" not in proc.stderr.split("start workers with:")[1]
    assert "timed out after 0.5 s waiting for 1 worker(s)" in proc.stderr


def test_worker_told_bye_during_the_handshake_leaves_cleanly(workers: Workers) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        proc = workers.start(server.getsockname()[1], worker_id="early")
        server.settimeout(WAIT_S)
        sock, _ = server.accept()
        channel = Channel(sock, peer="worker", timeout=WAIT_S)
        assert isinstance(channel.expect(P.Hello), P.Hello)
        channel.send(P.Bye("master shutting down"))
        assert proc.wait(timeout=WAIT_S) == 0
        assert "said bye: master shutting down" in workers.log_of(proc)
        channel.close()


def test_worker_told_an_error_reconnects_without_a_traceback(workers: Workers) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        proc = workers.start(server.getsockname()[1], worker_id="told", extra=("--retry-for", "1"))
        channel = _accept_worker(server)
        channel.send(P.Error(P.ErrorCode.INTERNAL, "master bug, sorry"))
        channel.close()
    assert proc.wait(timeout=WAIT_S) == 1  # reconnecting found no master; it gave up after 1 s
    log = workers.log_of(proc)
    assert "master bug, sorry; retrying in" in log and "Traceback" not in log
