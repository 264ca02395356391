"""Safe on a real network: TLS against a relay, checked results, handshakes that cannot be held,
an accept loop that survives running out of descriptors, and a worker that knows a stranger.

All on 127.0.0.1 with real sockets, real TLS and real worker processes.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distgray.imaging import pngstrip, tiffstrip
from distgray.imaging.encoded import Encoding
from distgray.imaging.kernel import to_grayscale
from distgray.imaging.load import load_image
from distgray.jobs.sinks import TiffSink
from distgray.master.books import WorkerState
from distgray.master.server import Master
from distgray.net import tls as T
from distgray.net.channel import Channel, connect
from distgray.net.handshake import client_handshake
from distgray.wire import protocol as P
from tests.conftest import pillow_reference
from tests.integration.conftest import ROOT, TOKEN, WAIT_S, MasterProcess, Workers, flag_of, wait_until

HEARTBEAT = {"heartbeat_interval_s": 0.25, "heartbeat_timeout_s": 5.0}


@pytest.fixture(scope="module")
def photo_job(photo: Path) -> tuple[np.ndarray, np.ndarray]:
    loaded = load_image(photo)
    assert loaded.pixels is not None
    return loaded.pixels, pillow_reference(photo)


@pytest.fixture(scope="module")
def server_tls() -> T.ServerTLS:
    return T.server_context()


class Relay:
    """A TCP relay between a worker and the master: records what passes, and may change it."""

    def __init__(self, target: int, tamper: Callable[[bytes, int], bytes] | None = None) -> None:
        self.target = target
        self.tamper = tamper  # (chunk, offset so far) -> chunk, on the worker -> master direction
        self.seen = {"up": bytearray(), "down": bytearray()}
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
                self._socks += [client, upstream]
                threading.Thread(target=self._pipe, args=(client, upstream, "up"), daemon=True).start()
                threading.Thread(target=self._pipe, args=(upstream, client, "down"), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                if way == "up" and self.tamper is not None:
                    data = self.tamper(data, len(self.seen[way]))
                self.seen[way] += data
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()
        for s in self._socks:
            s.close()


@pytest.fixture
def relays() -> Iterator[list[Relay]]:
    made: list[Relay] = []
    yield made
    for r in made:
        r.close()


def pinned(server_tls: T.ServerTLS) -> tuple[str, ...]:
    return ("--tls-fingerprint", server_tls.fingerprint)


# ---------------------------------------------------------------- a relay in the middle
def test_a_relay_reads_no_pixels_and_alters_no_strip_over_tls(
    make_master: Callable[..., Master],
    workers: Workers,
    relays: list[Relay],
    server_tls: T.ServerTLS,
    photo_job: tuple[np.ndarray, np.ndarray],
) -> None:
    pixels, expected = photo_job
    master = make_master(tls=server_tls, shared_memory=False, **HEARTBEAT)
    listener = Relay(master.address[1])
    relays.append(listener)
    worker = workers.start(listener.port, worker_id="relayed", extra=pinned(server_tls))
    wait_until(lambda: "relayed" in master.workers, what="the worker to join through the relay")
    assert master.workers["relayed"].secure
    job = master.run(pixels, "photo", timeout=WAIT_S * 2)
    assert job.done and job.failure is None and np.array_equal(job.output, expected)
    # Every byte of pixels and results went through the relay, and none of it is readable there.
    down, up = bytes(listener.seen["down"]), bytes(listener.seen["up"])
    assert len(down) > pixels.nbytes and len(up) > expected.nbytes
    for row in (0, pixels.shape[0] // 2, pixels.shape[0] - 1):
        assert pixels[row, :64].tobytes() not in down and expected[row, :64].tobytes() not in up
    assert b"DGRY" not in down and b"DGRY" not in up  # not even a frame header
    worker.kill()

    # A relay that changes one byte of what the worker sends breaks TLS's integrity check: the
    # connection ends, the strip is redone by an honest worker, the output is still exact.
    flipper = Relay(master.address[1], tamper=lambda data, at: _flip_after(data, at, 200_000))
    relays.append(flipper)
    workers.start(flipper.port, worker_id="tampered", extra=pinned(server_tls))
    wait_until(lambda: "tampered" in master.workers, what="the second worker to join")
    job = master.submit(pixels, "photo again")
    wait_until(lambda: master.workers["tampered"].state is WorkerState.LOST, what="the tampered link to drop")
    workers.start(master.address[1], worker_id="direct")
    assert job.wait(WAIT_S * 2) and job.failure is None
    assert np.array_equal(job.output, expected)
    assert any("tampered" in str(r["worker"]) for r in job.scheduler.requeued)


def _flip_after(data: bytes, at: int, offset: int) -> bytes:
    if at <= offset < at + len(data):
        i = offset - at
        return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
    return data


def test_a_worker_refuses_a_master_that_is_not_the_one_pinned(
    make_master: Callable[..., Master], workers: Workers, server_tls: T.ServerTLS
) -> None:
    impostor = make_master(tls=T.server_context())  # another key: another fingerprint
    proc = workers.start(impostor.address[1], worker_id="careful", extra=pinned(server_tls))
    assert proc.wait(timeout=WAIT_S) == 1
    log = workers.log_of(proc)
    assert "is not the one pinned" in log and "careful" not in impostor.workers


def test_a_plaintext_relay_cannot_change_a_result_unnoticed(
    make_master: Callable[..., Master],
    workers: Workers,
    relays: list[Relay],
    photo_job: tuple[np.ndarray, np.ndarray],
) -> None:
    """Without TLS (--no-tls, or a relay on the master's own machine) a relay can change
    results; the master's row checks catch it, drop the worker and redo its strips."""
    pixels, expected = photo_job
    master = make_master(shared_memory=False, **HEARTBEAT)
    # Worker -> master bytes after the handshake: RESULT frames, each a header and gray rows.
    # Flip every 1000th byte of them: whatever rows the master samples, some pixel is wrong.
    flipper = Relay(master.address[1], tamper=lambda data, at: _flip_every(data, at, 4096, 1000))
    relays.append(flipper)
    workers.start(flipper.port, worker_id="through-relay")
    wait_until(lambda: "through-relay" in master.workers, what="the worker to join")
    job = master.submit(pixels, "photo")
    wait_until(lambda: master.workers["through-relay"].state is WorkerState.LOST, what="the liar to be dropped")
    assert "wrong result" in master.workers["through-relay"].reason or "bad" in master.workers["through-relay"].reason
    workers.start(master.address[1], worker_id="honest")
    assert job.wait(WAIT_S * 2) and job.failure is None
    assert np.array_equal(job.output, expected)


def _flip_every(data: bytes, at: int, start: int, step: int) -> bytes:
    out = bytearray(data)
    for i in range(len(out)):
        pos = at + i
        if pos >= start and pos % step == 0:
            out[i] ^= 0x10
    return bytes(out)


# ---------------------------------------------------------------- trusted workers that lie
def _png_worker(port: int, worker_id: str) -> Channel:
    channel = connect("127.0.0.1", port, timeout=WAIT_S)
    caps = (P.CAPABILITY_LUMA_U8, P.CAPABILITY_PNG)
    client_handshake(channel, worker_id, TOKEN.encode(), caps, max_payload=1 << 30)
    return channel


def _next_task(channel: Channel) -> tuple[P.Task, np.ndarray]:
    while True:
        message, payload = channel.recv()
        if isinstance(message, P.Task):
            assert payload is not None
            rows = message.row_stop - message.row_start + (1 if getattr(message, "above", False) else 0)
            return message, np.frombuffer(payload, np.uint8).reshape(rows, message.width, message.channels)


def test_a_worker_with_the_token_sending_broken_png_strips_is_dropped(
    make_master: Callable[..., Master], workers: Workers, photo_job: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, _ = photo_job
    master = make_master(shared_memory=False, **HEARTBEAT)
    liar = _png_worker(master.address[1], "png-liar")
    job = master.submit(pixels, "photo", encoding=Encoding("PNG", 1))
    task, _ = _next_task(liar)
    assert isinstance(task, P.PngTask)
    rows = task.row_stop - task.row_start
    garbage = os.urandom(5000)
    liar.send(
        P.PngResult(
            task.job_id,
            task.strip_id,
            task.row_start,
            task.row_stop,
            task.width,
            12345,
            rows * (task.width + 1),
            len(garbage),
        ),
        garbage,
    )
    wait_until(lambda: master.workers["png-liar"].state is WorkerState.LOST, what="the liar to be dropped")
    assert "deflate" in master.workers["png-liar"].reason
    workers.start(master.address[1], worker_id="honest")
    assert job.wait(WAIT_S * 2) and job.failure is None
    pieces = job.take_encoded(0)
    assert pieces and all(p[1].length for p in pieces)
    liar.close()


def test_a_worker_with_the_token_sending_wrong_tiff_strips_is_dropped(
    make_master: Callable[..., Master], workers: Workers, photo_job: tuple[np.ndarray, np.ndarray]
) -> None:
    """Well-formed TIFF strips (valid zlib, right sizes) of subtly wrong rows: caught by the
    sampled rows, the liar dropped, the job finished by an honest worker."""
    pixels, expected = photo_job
    master = make_master(shared_memory=False, **HEARTBEAT)
    channel = connect("127.0.0.1", master.address[1], timeout=WAIT_S)
    caps = (P.CAPABILITY_LUMA_U8, P.CAPABILITY_TIFF)
    client_handshake(channel, "tiff-liar", TOKEN.encode(), caps, max_payload=1 << 30)
    per_strip = tiffstrip.rows_per_strip(pixels.shape[1])
    job = master.submit(pixels, "photo", encoding=Encoding("TIFF", 1, per_strip))
    task, rgb = _next_task(channel)
    assert isinstance(task, P.TiffTask) and task.rows_per_strip == per_strip
    gray = np.empty((task.rows, task.width), np.uint8)
    to_grayscale(np.ascontiguousarray(rgb), gray)
    gray[:, ::5] ^= 2
    piece = tiffstrip.encode_strip(gray, 1, per_strip)
    where = (task.job_id, task.strip_id, task.row_start, task.row_stop, task.width)
    channel.send(P.TiffResult(*where, per_strip, len(piece.data)), piece.data)
    wait_until(lambda: master.workers["tiff-liar"].state is WorkerState.LOST, what="the liar to be dropped")
    assert "differs from the source" in master.workers["tiff-liar"].reason
    workers.start(master.address[1], worker_id="honest")
    assert job.wait(WAIT_S * 2) and job.failure is None
    pieces = job.take_encoded(0)
    assert sum(p.length for _, p in pieces) == pixels.shape[0]
    buf = io.BytesIO()
    with TiffSink(buf, pixels.shape[1], pixels.shape[0], per_strip, 1) as sink:
        for _, piece in pieces:
            sink.add(piece)
    got = np.asarray(Image.open(buf))
    assert np.array_equal(got, expected)
    channel.close()


def test_a_worker_with_the_token_sending_wrong_gray_rows_is_dropped(
    make_master: Callable[..., Master], workers: Workers, photo_job: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, expected = photo_job
    master = make_master(shared_memory=False, **HEARTBEAT)
    channel = connect("127.0.0.1", master.address[1], timeout=WAIT_S)
    client_handshake(channel, "gray-liar", TOKEN.encode(), max_payload=1 << 30)
    job = master.submit(pixels, "photo")
    task, rgb = _next_task(channel)
    gray = np.empty((task.rows, task.width), np.uint8)
    to_grayscale(np.ascontiguousarray(rgb), gray)
    gray[:, ::7] ^= 1  # off by one in every 7th column: a subtle bug, not noise
    channel.send(P.Result(task.job_id, task.strip_id, task.row_start, task.row_stop, task.width), gray)
    wait_until(lambda: master.workers["gray-liar"].state is WorkerState.LOST, what="the liar to be dropped")
    assert "differs from the source" in master.workers["gray-liar"].reason
    workers.start(master.address[1], worker_id="honest")
    assert job.wait(WAIT_S * 2) and job.failure is None and np.array_equal(job.output, expected)
    # Caught lying: it is not given work again under its id, even if it comes back.
    again = connect("127.0.0.1", master.address[1], timeout=WAIT_S)
    client_handshake(again, "gray-liar", TOKEN.encode(), max_payload=1 << 30)
    job = master.submit(pixels, "photo 2")
    assert job.wait(WAIT_S * 2) and job.failure is None
    assert "gray-liar" not in {r.worker for r in job.records}
    channel.close()
    again.close()


# ---------------------------------------------------------------- departures are not failures
def test_workers_that_take_a_strip_and_leave_do_not_fail_the_job(
    make_master: Callable[..., Master], workers: Workers, photo_job: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, expected = photo_job
    master = make_master(shared_memory=False, **HEARTBEAT)
    job = master.submit(pixels, "photo")
    for n in range(5):  # more than the 3 attempts a strip has
        channel = connect("127.0.0.1", master.address[1], timeout=WAIT_S)
        client_handshake(channel, f"leaver-{n}" if n % 2 else "leaver", TOKEN.encode(), max_payload=1 << 30)
        _next_task(channel)
        if n % 2:
            channel.send(P.Bye("changed my mind"))
        channel.close()
        wait_until(lambda: all(not w.live for w in master.workers.values()), what="the leaver to be gone")
    assert not job.done, job.error
    workers.start(master.address[1], worker_id="stayer")
    assert job.wait(WAIT_S * 2) and job.failure is None and np.array_equal(job.output, expected)
    assert "leaver#2" not in master.workers  # the same id coming back is the same worker
    assert master.workers["leaver"].joins == 3


# ---------------------------------------------------------------- handshakes and accept
def test_slow_handshakes_do_not_keep_a_real_worker_out(make_master: Callable[..., Master], workers: Workers) -> None:
    master = make_master(handshake_timeout_s=2.0)
    stop = threading.Event()
    dribblers: list[socket.socket] = []

    def dribble() -> None:  # 64 connections, a byte each every second, for as long as the test runs
        while not stop.is_set():
            for s in list(dribblers):
                with contextlib.suppress(OSError):
                    s.send(b"D")
            while len(dribblers) < 64 and not stop.is_set():
                with contextlib.suppress(OSError):
                    dribblers.append(socket.create_connection(("127.0.0.1", master.address[1]), timeout=5))
            stop.wait(1.0)

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(dribblers) >= 64, what="64 slow connections")
        started = time.monotonic()
        workers.start(master.address[1], worker_id="real")
        wait_until(lambda: "real" in master.workers, timeout=WAIT_S, what="the real worker to get in")
        took = time.monotonic() - started
        # One handshake deadline frees every slot; the worker's backoff (capped at 10 s) finds one.
        assert took < 2.0 + 10.0 + 5.0, took
    finally:
        stop.set()
        thread.join(timeout=10)
        for s in dribblers:
            s.close()


def test_running_out_of_descriptors_does_not_stop_accepting(photo: Path, tmp_path: Path, workers: Workers) -> None:
    port = _free_port()
    args = ["--image", str(photo), "--host", "127.0.0.1", "--port", str(port), "--token", TOKEN, "--no-dashboard"]
    limit = 48  # below the 64 pending handshakes allowed: the descriptors run out first

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    master = MasterProcess([*args, "--handshake-timeout", "60"], tmp_path, preexec_fn=few_descriptors)
    master.worker_command()
    idle: list[socket.socket] = []
    try:
        for _ in range(limit + 20):  # more than the master can hold: accept() hits EMFILE
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            idle.append(s)
        wait_until(
            lambda: "accept failed: Too many open files" in master.stderr,
            what=f"the master to run out: {master.stderr[-600:]}",
        )
        time.sleep(0)  # (no fixed wait: the next steps wait on events)
    finally:
        for s in idle:
            s.close()
    proc = workers.start(port, worker_id="after")
    master.finish(timeout=WAIT_S * 2)
    assert master.proc.returncode == 0, master.stderr[-2000:]
    assert proc.wait(timeout=WAIT_S) == 0
    # Logged once a second at most, not once per failed accept.
    lines = master.stderr.count("accept failed")
    assert 1 <= lines <= 5 + int(master.elapsed()), lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- the worker meets a stranger
def test_a_worker_pointed_at_an_http_server_gives_up_in_its_budget(workers: Workers) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        stop = threading.Event()

        def answer() -> None:
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                with conn, contextlib.suppress(OSError):
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        started = time.monotonic()
        proc = workers.start(server.getsockname()[1], worker_id="lost", extra=("--retry-for", "3"))
        code = proc.wait(timeout=WAIT_S)
        took = time.monotonic() - started
        stop.set()
        thread.join(timeout=5)
    log = workers.log_of(proc)
    assert code == 1
    assert took < 3 + 8, took  # its budget, plus start-up
    assert "is an HTTP server (the status page's port?)" in log
    assert len(log.splitlines()) <= 6, log


def test_a_silent_listener_uses_up_the_budget_too(workers: Workers) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:  # accepts (backlog) and never answers
        started = time.monotonic()
        proc = workers.start(server.getsockname()[1], worker_id="patient", extra=("--retry-for", "2"))
        assert proc.wait(timeout=WAIT_S) == 1
        assert time.monotonic() - started < 2 + 8
    assert "giving up" in workers.log_of(proc)


# ---------------------------------------------------------------- the command line, end to end
def test_the_printed_command_works_with_a_token_that_starts_with_a_dash(photo: Path, tmp_path: Path) -> None:
    token = "-NqQ3vV0aWx1eXpBQkNERUZH"
    master = MasterProcess(
        ["--image", str(photo), "--host", "127.0.0.1", "--port", "0", "--no-dashboard", f"--token={token}"], tmp_path
    )
    cmd = master.worker_command()
    worker = subprocess.run(
        [
            sys.executable,
            str(ROOT / "worker_client.py"),
            "--host",
            "127.0.0.1",
            "--port",
            flag_of(cmd, "--port"),
            f"--token={token}",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_S * 2,
    )
    master.finish(timeout=WAIT_S)
    assert worker.returncode == 0, worker.stderr
    assert master.proc.returncode == 0, master.stderr
    assert token not in master.stderr  # the user's own token is never printed


def test_control_characters_in_a_worker_id_never_reach_the_log_raw(
    photo: Path, tmp_path: Path, workers: Workers
) -> None:
    master = MasterProcess(
        ["--image", str(photo), "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--token", TOKEN], tmp_path
    )
    port = int(flag_of(master.worker_command(), "--port"))
    proc = workers.start(port, worker_id="evil\n12:00:00 INFO    forged line\x1b[2J\x07")
    master.finish(timeout=WAIT_S * 2)
    assert proc.wait(timeout=WAIT_S) == 0
    assert "\x1b" not in master.stderr and "\x07" not in master.stderr
    assert not any(line.startswith("12:00:00 INFO    forged") for line in master.stderr.splitlines())
    assert "evil\\x0a12:00:00 INFO    forged line\\x1b[2J\\x07" in master.stderr


def test_a_changed_input_is_converted_again_on_a_rerun(photo: Path, tmp_path: Path) -> None:
    from PIL import Image

    source = tmp_path / "in.png"
    Image.open(photo).resize((640, 360)).save(source)
    args = [
        sys.executable,
        str(ROOT / "master_server.py"),
        "--image",
        str(source),
        "--local-workers",
        "1",
        "--no-dashboard",
        "--port",
        "0",
    ]
    stale = tmp_path / "results" / ".in_gray.png.x1y2z3.part"  # what a run killed with -9 leaves
    stale.parent.mkdir()
    stale.write_bytes(b"half a file")
    first = subprocess.run(args, capture_output=True, text=True, timeout=WAIT_S * 2, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert not stale.exists()
    assert "listening on 127.0.0.1:" in first.stderr  # only local workers: this machine only
    output = tmp_path / "results" / "in_gray.png"
    made = output.stat().st_mtime_ns
    again = subprocess.run(args, capture_output=True, text=True, timeout=WAIT_S * 2, cwd=tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout and output.stat().st_mtime_ns == made
    # Same size, same modification time, other pixels: only the hash can tell, and it does.
    stat = source.stat()
    Image.open(photo).resize((640, 360)).rotate(180).save(source)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    third = subprocess.run(args, capture_output=True, text=True, timeout=WAIT_S * 2, cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert "up to date" not in third.stdout
    with Image.open(output) as got:
        assert np.array_equal(np.asarray(got), pillow_reference(source))


def test_a_tls_handshake_with_a_bad_client_certificate_is_refused(
    make_master: Callable[..., Master], tmp_path: Path
) -> None:
    """With --tls-ca the master asks TLS workers for a certificate from that CA."""
    ca_cert, _ = T.self_signed_pair("distgray test CA")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(ca_cert)
    master = make_master(tls=T.server_context(client_ca=ca))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", master.address[1]), timeout=WAIT_S) as raw:
        try:
            with ctx.wrap_socket(raw) as tls_sock:
                tls_sock.sendall(b"x")
                got = tls_sock.recv(1)  # TLS 1.3: the refusal arrives after the client's first read
        except (ssl.SSLError, OSError):
            got = b""
    assert got == b"" and not master.workers


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_worker_that_does_not_say_strip_alpha_gets_plain_tasks_in_a_job_with_alpha(
    make_master: Callable[..., Master], photo_job: tuple[np.ndarray, np.ndarray], fmt: str
) -> None:
    """An older worker (png-strip, tiff-strip, but not strip-alpha) would refuse the ALPHA flag:
    it is given plain TASKs, and the master encodes its rows with the alpha itself."""
    pixels, expected = photo_job
    height = 400
    rgba = np.ascontiguousarray(
        np.dstack([pixels[:height, :, :3], np.arange(height, dtype=np.uint8)[:, None].repeat(pixels.shape[1], axis=1)])
    )
    master = make_master(shared_memory=False, **HEARTBEAT)
    older = connect("127.0.0.1", master.address[1], timeout=WAIT_S)
    caps = (P.CAPABILITY_LUMA_U8, P.CAPABILITY_PNG, P.CAPABILITY_TIFF)
    client_handshake(older, "older", TOKEN.encode(), caps, max_payload=1 << 30)
    per_strip = 50
    job = master.submit(rgba, fmt, encoding=Encoding(fmt, 1, per_strip if fmt == "TIFF" else 0, alpha=True))
    answered = 0
    while answered < height:
        task, pixels_in = _next_task(older)
        assert type(task) is P.Task and task.channels == 4
        gray = np.empty((task.rows, task.width), np.uint8)
        to_grayscale(np.ascontiguousarray(pixels_in), gray)
        older.send(P.Result(task.job_id, task.strip_id, task.row_start, task.row_stop, task.width), gray)
        answered += task.rows
    assert job.wait(WAIT_S) and job.failure is None
    pieces = [piece for _, piece in job.take_encoded(0)]
    if fmt == "PNG":
        data = pngstrip.join(rgba.shape[1], height, 1, pieces, alpha=True)
    else:
        buf = io.BytesIO()
        with TiffSink(buf, rgba.shape[1], height, per_strip, 1, alpha=True) as sink:
            for piece in pieces:
                sink.add(piece)
        data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "LA"
        assert np.array_equal(np.asarray(im), np.dstack([expected[:height], rgba[..., 3]]))
    older.close()
