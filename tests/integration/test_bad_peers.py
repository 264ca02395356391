"""Bad peers lose their own connection and nothing else: the running job finishes bit-identical."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from distgray.errors import AuthenticationError, DistgrayError, PeerDisconnected
from distgray.imaging.load import load_image
from distgray.master.server import Master, WorkerState
from distgray.wire import protocol as P
from tests.conftest import pillow_reference
from tests.integration.conftest import WAIT_S, FakeWorker, Workers, closed_by_peer, wait_until


@pytest.fixture
def photo_pixels(photo: Path) -> np.ndarray:
    loaded = load_image(photo)
    assert loaded.pixels is not None
    return loaded.pixels


def _raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)


def test_wrong_token_is_refused_on_both_sides(
    master: Master, workers: Workers, photo: Path, photo_pixels: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    intruder = workers.start(master.address[1], token="not-the-token", worker_id="intruder")
    assert intruder.wait(timeout=WAIT_S) == 1
    assert "master refused our token" in workers.log_of(intruder)
    wait_until(lambda: "wrong token" in caplog.text, what="the master to log the refusal")
    assert "intruder" not in {w.id for w in master.live_workers()}
    workers.start(master.address[1], worker_id="good")
    job = master.run(photo_pixels, "photo", timeout=WAIT_S * 2)
    assert np.array_equal(job.output, pillow_reference(photo))


def test_worker_without_token_is_told_what_to_do(master: Master, workers: Workers) -> None:
    proc = workers.start(master.address[1], token=None)
    assert proc.wait(timeout=WAIT_S) == 1
    assert "master requires a token: pass --token or set DISTGRAY_TOKEN" in workers.log_of(proc)


def test_worker_with_token_refuses_a_master_without_auth(make_master: Callable[..., Master]) -> None:
    no_auth = make_master(token=None)
    with pytest.raises(AuthenticationError, match="authentication off"):
        FakeWorker(no_auth.address[1], token=b"secret")


def test_worker_refuses_a_master_that_cannot_prove_the_token() -> None:
    """Mutual auth: a fake master that skips the check still fails the worker's check of it."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def impostor() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)  # HELLO
                conn.sendall(P.encode_frame(P.Challenge(True, b"n" * 32)))
                conn.recv(4096)  # AUTH: accepted without checking
                conn.sendall(P.encode_frame(P.Welcome(b"\x00" * 32, 1000, 5000, 2, "victim")))
                conn.recv(4096)

        t = threading.Thread(target=impostor, daemon=True)
        t.start()
        with pytest.raises(AuthenticationError, match="does not know the token"):
            FakeWorker(port, token=b"secret")
        t.join(timeout=WAIT_S)


def test_no_auth_master_accepts_workers_without_token(
    make_master: Callable[..., Master], workers: Workers, photo: Path, photo_pixels: np.ndarray
) -> None:
    master = make_master(token=None)
    workers.start(master.address[1], token=None)
    job = master.run(photo_pixels, "photo", timeout=WAIT_S * 2)
    assert np.array_equal(job.output, pillow_reference(photo))


def _prefix(mtype: int, header_len: int, payload_len: int, version: int = 1) -> bytes:
    return struct.pack(">4sBBHIQ", b"DGRY", version, mtype, 0, header_len, payload_len)


BAD_BYTES = {
    "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4,
    "oversized header": _prefix(P.MessageType.HELLO, 0xFFFFFFFF, 0),
    "oversized payload": _prefix(P.MessageType.TASK, 24, 2**62),
    "random bytes": bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8)),
    # a well-formed 100 MB RESULT before authenticating: refused before anything is allocated
    "payload before auth": _prefix(P.MessageType.RESULT, 36, 100_000_000) + P.Result(1, 0, 0, 1, 100_000_000).encode(),
}


def test_bad_peers_during_a_running_job(
    master: Master, photo: Path, photo_pixels: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    good = FakeWorker(master.address[1], worker_id="good")
    job = master.submit(photo_pixels, "photo")
    held = [good.recv_task()]  # the job is now mid-flight (one strip until our speed is known)
    for name, data in BAD_BYTES.items():
        with _raw(master.address[1]) as s:
            s.sendall(data)
            assert closed_by_peer(s), name
    with _raw(master.address[1]) as s:  # a truncated frame: half a HELLO, then the peer hangs up
        s.sendall(P.encode_frame(P.Hello("half"))[:13])
        s.shutdown(socket.SHUT_WR)
        assert closed_by_peer(s)
    with _raw(master.address[1]) as s:  # a worker from the future gets a clear refusal
        s.sendall(_prefix(P.MessageType.HELLO, 4, 0, version=2) + b"\x00\x01x\x00")
        decoder = P.FrameDecoder()
        s.settimeout(WAIT_S)
        frames = decoder.feed(s.recv(4096))
        assert frames and isinstance(frames[0][0], P.Error)
        assert frames[0][0].code == P.ErrorCode.VERSION and "protocol 1" in frames[0][0].message
    wait_until(lambda: caplog.text.count("refused") >= len(BAD_BYTES) + 2, what="the master to log each refusal")
    assert "payload_len 100000000 exceeds limit 0" in caplog.text
    # the good worker was never disturbed: it returns what it held and finishes the job
    assert master.workers[good.id].state is WorkerState.BUSY
    for task, pixels in held:
        good.send_result(task, pixels)
    good.serve_until_bye()
    assert job.wait(WAIT_S * 2) and job.failure is None
    assert np.array_equal(job.output, pillow_reference(photo))
    assert job.scheduler.requeued == []


def test_worker_returning_wrong_sized_result_is_dropped_and_strip_redone(
    master: Master, workers: Workers, photo: Path, photo_pixels: np.ndarray
) -> None:
    bad = FakeWorker(master.address[1], worker_id="liar")
    job = master.submit(photo_pixels, "photo")
    task, _ = bad.recv_task()
    wrong = P.Result(task.job_id, task.strip_id, task.row_start, task.row_stop - 1, task.width)
    with contextlib.suppress(PeerDisconnected):  # the master may hang up as soon as it sees the header
        bad.channel.send(wrong, bytes(wrong.payload_len))
    wait_until(lambda: master.workers["liar"].state is WorkerState.LOST, what="the liar to be dropped")
    assert "does not match task rows" in master.workers["liar"].reason
    assert task.strip_id in [r["strip"] for r in job.scheduler.requeued]
    workers.start(master.address[1], worker_id="honest")
    assert job.wait(WAIT_S * 2) and job.failure is None
    assert np.array_equal(job.output, pillow_reference(photo))


def test_result_for_a_strip_never_assigned_is_a_protocol_error(master: Master, photo_pixels: np.ndarray) -> None:
    bad = FakeWorker(master.address[1], worker_id="forger")
    master.submit(photo_pixels, "photo")
    bad.recv_task()
    forged = P.Result(1, 99, 0, 1, photo_pixels.shape[1])
    with contextlib.suppress(PeerDisconnected):
        bad.channel.send(forged, bytes(forged.payload_len))
    wait_until(lambda: master.workers["forger"].state is WorkerState.LOST, what="the forger to be dropped")
    assert "not assigned" in master.workers["forger"].reason


def test_a_silent_peer_mid_handshake_does_not_hold_up_shutdown(master: Master) -> None:
    with _raw(master.address[1]) as s:
        s.sendall(P.encode_frame(P.Hello("mute")))  # then never answers the challenge
        s.settimeout(WAIT_S)
        assert s.recv(4096)  # the CHALLENGE: the master is now waiting inside the handshake
        master.close("test over")
        assert not [t.name for t in master.threads()], "every master thread has ended"
        assert closed_by_peer(s)


def test_a_flood_of_silent_connections_is_capped(make_master: Callable[..., Master]) -> None:
    master = make_master(max_handshakes=2)
    silent = [_raw(master.address[1]) for _ in range(2)]
    for s in silent:  # each is mid-handshake: it said HELLO and got the CHALLENGE
        s.sendall(P.encode_frame(P.Hello("mute")))
        s.settimeout(WAIT_S)
        assert s.recv(4096)
    with _raw(master.address[1]) as third:
        assert closed_by_peer(third), "past the cap a connection is closed at once"
    silent[0].close()  # a slot frees up: a real worker gets in
    wait_until(lambda: _handshake_works(master), what="a worker to get a free handshake slot")
    silent[1].close()


def _handshake_works(master: Master) -> bool:
    try:
        FakeWorker(master.address[1], worker_id="legit").close()
        return True
    except DistgrayError:
        return False


def test_duplicate_long_worker_ids_stay_within_the_limit(master: Master) -> None:
    long_id = "w" * 128
    first, second = FakeWorker(master.address[1], worker_id=long_id), FakeWorker(master.address[1], worker_id=long_id)
    assert first.id == long_id and second.id == "w" * 100 + "#2"
    first.close()
    second.close()
