"""Real sockets on 127.0.0.1 (port 0), an in-process master, real worker subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from distgray.imaging.kernel import to_grayscale
from distgray.master.server import Master, MasterConfig
from distgray.net.channel import Channel, connect
from distgray.net.handshake import client_handshake
from distgray.wire import protocol as P

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "integration-token"
WAIT_S = 60.0  # generous: the machines are shared and noisy


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def wait_while_progressing(
    progress: Callable[[], object], done: Callable[[], bool], stall_s: float = WAIT_S, what: str = "condition"
) -> None:
    """Wait until ``done()``, failing only when ``progress()`` has not changed for ``stall_s``
    seconds: the deadline follows the work, so a machine three times slower still passes."""
    last, since = progress(), time.monotonic()
    while not done():
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > stall_s:
            pytest.fail(f"no progress for {stall_s} s (stuck at {last!r}) waiting for {what}")
        time.sleep(0.05)


@dataclass
class Workers:
    """Starts ``worker_client.py`` subprocesses; kills leftovers at teardown."""

    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def start(
        self, port: int, *, token: str | None = TOKEN, worker_id: str = "", extra: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        log = self.tmp / f"worker-{len(self.procs)}.log"
        env = {k: v for k, v in os.environ.items() if k != "DISTGRAY_TOKEN"}
        args = [
            sys.executable,
            str(ROOT / "worker_client.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--retry-for",
            "30",
            "--log-level",
            "info",
            *extra,
        ]
        if token is not None:
            args += ["--token", token]
        if worker_id:
            args += ["--id", worker_id]
        with open(log, "wb") as fh:
            proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[self.procs.index(proc)].read_text()

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    w.stop_all()


@pytest.fixture
def make_master() -> Iterator[Callable[..., Master]]:
    masters: list[Master] = []

    def make(**overrides: object) -> Master:
        cfg = {"host": "127.0.0.1", "port": 0, "token": TOKEN.encode(), **overrides}
        m = Master(MasterConfig(**cfg))  # type: ignore[arg-type]
        m.start()
        masters.append(m)
        return m

    yield make
    for m in masters:
        m.close("test over")


@pytest.fixture
def master(make_master: Callable[..., Master]) -> Master:
    return make_master()


class FakeWorker:
    """A worker written in the test, over a real socket: it can hold tasks, or misbehave."""

    def __init__(self, port: int, token: bytes | None = TOKEN.encode(), worker_id: str = "fake") -> None:
        self.channel: Channel = connect("127.0.0.1", port, timeout=WAIT_S)
        self.welcome = client_handshake(self.channel, worker_id, token)
        self.id = self.welcome.worker_id

    def recv_task(self) -> tuple[P.Task, np.ndarray]:
        while True:
            message, payload = self.channel.recv()
            if isinstance(message, P.Task):
                assert payload is not None
                pixels = np.frombuffer(payload, np.uint8).reshape(message.rows, message.width, message.channels)
                return message, pixels
            assert isinstance(message, P.Heartbeat), message

    def send_result(self, task: P.Task, pixels: np.ndarray) -> None:
        out = np.empty((task.rows, task.width), np.uint8)
        to_grayscale(np.ascontiguousarray(pixels), out)
        self.channel.send(P.Result(task.job_id, task.strip_id, task.row_start, task.row_stop, task.width), out)

    def serve_until_bye(self) -> threading.Thread:
        """Work like a real worker in a background thread until the master says BYE."""

        def loop() -> None:
            try:
                while True:
                    message, payload = self.channel.recv()
                    if isinstance(message, P.Task):
                        assert payload is not None
                        shape = (message.rows, message.width, message.channels)
                        self.send_result(message, np.frombuffer(payload, np.uint8).reshape(shape))
                    elif isinstance(message, P.Bye):
                        return
            except Exception:
                return

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return t

    def close(self) -> None:
        self.channel.close()


def closed_by_peer(sock: socket.socket, timeout: float = WAIT_S) -> bool:
    """True once the other end has closed ``sock`` (EOF or reset), reading and discarding data."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


class MasterProcess:
    """``master_server.py`` as a user runs it in a terminal; stderr read in a thread."""

    running: ClassVar[list[MasterProcess]] = []  # killed after each test if still alive

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        preexec_fn: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: variables added to this process's environment for the master."""
        MasterProcess.running.append(self)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "master_server.py"), *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec_fn,
            env={**os.environ, **env} if env else None,
        )
        self.err_lines: list[str] = []
        self.out_lines: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(s, lines), daemon=True)
            for s, lines in ((self.proc.stderr, self.err_lines), (self.proc.stdout, self.out_lines))
        ]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def finish(self, timeout: float) -> str:
        """Wait for the master to exit; returns its stdout."""
        self.proc.wait(timeout=timeout)
        for t in self._readers:
            t.join(timeout=timeout)
        return "".join(self.out_lines)

    @property
    def stderr(self) -> str:
        return "".join(self.err_lines)

    def worker_command(self) -> list[str]:
        wait_until(
            lambda: (
                "start workers with:" in self.stderr
                and "distgray worker" in self.stderr.split("start workers with:")[1]
            ),
            what="the master to print the worker command",
        )
        line = next(ln for ln in self.err_lines if "-m distgray worker" in ln)
        return line.split()


def flag_of(cmd: list[str], flag: str) -> str:
    """The value of ``--flag=VALUE`` or ``--flag VALUE`` in a printed command."""
    for i, arg in enumerate(cmd):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag:
            return cmd[i + 1]
    raise AssertionError(f"{flag} not in {cmd}")


@pytest.fixture(autouse=True)
def no_leftover_masters() -> Iterator[None]:
    yield
    while MasterProcess.running:
        proc = MasterProcess.running.pop().proc
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT_S)
