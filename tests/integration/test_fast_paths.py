"""The fast paths end to end: PNG strips encoded by workers, shared memory, streamed decoding.

Real master (in-process or ``master_server.py``), real worker subprocesses, real /dev/shm.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from distgray.engines.cluster import ClusterEngine
from distgray.imaging.kernel import to_grayscale
from distgray.jobs.service import Service, ServiceOptions
from distgray.master.server import Master
from distgray.net import shm
from distgray.wire import protocol as P
from tests.conftest import pillow_jpeg_bytes, pillow_reference, pngcheck
from tests.integration.conftest import ROOT, TOKEN, WAIT_S, FakeWorker, MasterProcess, Workers, wait_until

#: Processes whose segments these tests may look at: this one and the masters they start. Another
#: distgray master running on the machine has segments of its own, which are none of our business.
_OURS = [os.getpid()]


def _segments(pid: int | None = None) -> list[str]:
    pids = _OURS if pid is None else [pid]
    prefixes = tuple(f"{shm.PREFIX}{p}-" for p in pids)
    return sorted(p.name for p in shm.SHM_DIR.iterdir() if p.name.startswith(prefixes))


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(ROOT / "master_server.py"), *args, "--host", "127.0.0.1", "--port", "0"]
    with subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        _OURS.append(proc.pid)
        out, err = proc.communicate(timeout=WAIT_S * 3)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.mark.parametrize(
    ("source", "extra"),
    [
        ("photo.jpg", ["--local-workers", "2"]),
        ("photo.png", ["--local-workers", "2", "--png-level", "1"]),
        ("small.png", ["--local-workers", "2", "--strip-rows", "1"]),
        ("photo.png", ["--local-workers", "1", "--no-shared-memory"]),
    ],
    ids=["JPEG in", "PNG in, level 1", "one-row strips", "TCP only"],
)
def test_png_output_from_worker_encoded_strips(source: str, extra: list[str], photo: Path, tmp_path: Path) -> None:
    src = tmp_path / source
    with Image.open(photo) as im:
        rgb = im.convert("RGB")
    if source == "small.png":
        rgb.crop((0, 0, 301, 67)).save(src)
    elif source.endswith(".png"):
        rgb.save(src, compress_level=1)
    else:
        shutil.copy(photo, src)
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    done = _run_cli(["--image", str(src), "--output", str(out), "--report", str(report), *extra], tmp_path)
    assert done.returncode == 0, done.stderr
    with Image.open(out) as im:
        assert im.mode == "L"
        assert np.array_equal(np.asarray(im), pillow_reference(src))
    pngcheck(out)
    figures = json.loads(report.read_text())
    assert figures["encoded_strips"] == "PNG"
    gray_bytes = figures["width"] * figures["height"]
    returned = sum(w["bytes_out"] for w in figures["workers"].values())
    assert returned < gray_bytes  # deflated strips came back, not gray rows
    by_shm = [w["shared_memory"] for w in figures["workers"].values()]
    assert all(by_shm) if "--no-shared-memory" not in extra else not any(by_shm)
    assert not _segments()


def test_shared_memory_and_tcp_give_the_same_bytes(photo: Path, tmp_path: Path) -> None:
    outputs = {}
    for name, extra in (("shm", []), ("tcp", ["--no-shared-memory"])):
        out, report = tmp_path / f"{name}.jpg", tmp_path / f"{name}.json"
        args = ["--image", str(photo), "--output", str(out), "--local-workers", "2", "--report", str(report), *extra]
        done = _run_cli(args, tmp_path)
        assert done.returncode == 0, done.stderr
        workers = json.loads(report.read_text())["workers"].values()
        tcp_bytes = sum(w["bytes_in"] for w in workers)
        if name == "shm":
            assert all(w["shared_memory"] for w in workers) and tcp_bytes < 10_000  # headers only
        else:
            assert tcp_bytes > 3840 * 2160 * 3
        outputs[name] = out.read_bytes()
    assert outputs["shm"] == outputs["tcp"]
    assert not _segments()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("alpha", [False, True], ids=["RGB", "RGBA"])
def test_a_worker_without_strip_encoding_still_takes_part(
    make_master: Callable[..., Master], workers: Workers, tmp_path: Path, photo: Path, fmt: str, alpha: bool
) -> None:
    """A minimal worker (only ``luma-u8``, as docs/PROTOCOL.md's smallest worker) gets plain TASKs
    in a PNG or TIFF job, beside a real worker that encodes its strips; the master encodes the
    minimal one's rows itself and the file is still exact (with alpha: gray + alpha, the input's)."""
    source = photo
    if alpha:
        with Image.open(photo) as im:
            rgba = im.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
        source = tmp_path / "rgba.png"
        rgba.save(source, compress_level=1)
    master = make_master(strip_rows=97)
    fake = FakeWorker(master.address[1])
    wait_until(lambda: fake.id in master.workers, what="the master to register the worker")
    assert not {P.CAPABILITY_PNG, P.CAPABILITY_TIFF} & set(master.workers[fake.id].capabilities)
    fake.serve_until_bye()
    workers.start(master.address[1], worker_id="real", extra=("--throttle", "2"))
    assert master.wait_for_workers(2, timeout=WAIT_S)
    service = Service(ClusterEngine(master), ServiceOptions(output_dir=tmp_path, previews=False))
    out = tmp_path / f"out.{fmt.lower()}"
    entry = service.enqueue(source, out, fmt)
    service.process(entry, quiet=True)
    assert entry.report is not None and {s["worker"] for s in entry.report["strip_log"]} == {fake.id, "real"}
    with Image.open(source) as im, Image.open(out) as got:
        want = np.dstack([np.asarray(im.convert("L")), np.asarray(im.getchannel("A"))]) if alpha else None
        assert got.mode == ("LA" if alpha else "L")
        assert np.array_equal(np.asarray(got), want if alpha else pillow_reference(source))
    if fmt == "PNG":
        pngcheck(out)
    else:
        with tifffile.TiffFile(out) as tif:  # deflated strips, on whole TIFF strips
            page = tif.pages[0]
            assert (page.compression, page.predictor) == (8, 2) and len(page.dataoffsets) > 1


def test_png_strips_with_and_without_the_row_above(
    make_master: Callable[..., Master], workers: Workers, tmp_path: Path, photo: Path
) -> None:
    for above in (True, False):
        master = make_master(strip_rows=50, png_row_above=above)
        workers.start(master.address[1])
        workers.start(master.address[1])
        assert master.wait_for_workers(2, timeout=WAIT_S)
        service = Service(ClusterEngine(master), ServiceOptions(output_dir=tmp_path, previews=False))
        out = tmp_path / f"above-{above}.png"
        service.process(service.enqueue(photo, out, "PNG"), quiet=True)
        assert np.array_equal(np.asarray(Image.open(out)), pillow_reference(photo))
        pngcheck(out)
        master.close("next")
        workers.stop_all()


@pytest.mark.slow
def test_streamed_png_hands_out_rows_before_it_is_decoded(
    make_master: Callable[..., Master], workers: Workers, odd_8k: Path, tmp_path: Path
) -> None:
    master = make_master()
    for _ in range(2):
        workers.start(master.address[1])
    assert master.wait_for_workers(2, timeout=WAIT_S)
    service = Service(ClusterEngine(master), ServiceOptions(output_dir=tmp_path, previews=False))
    out = tmp_path / "out.jpg"
    entry = service.enqueue(odd_8k, out, "JPEG")
    service.process(entry, quiet=True)
    assert entry.job is not None and entry.job.input_ready_at is not None and entry.job.started is not None
    first_sent = min(r.sent_s for r in entry.job.records)
    assert first_sent < entry.job.input_ready_at - entry.job.started  # overlap, not load-then-send
    assert out.read_bytes() == pillow_jpeg_bytes(pillow_reference(odd_8k), strips=True)


def test_a_corrupt_streamed_png_fails_alone(photo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    with Image.open(photo) as im:
        im.convert("RGB").crop((0, 0, 900, 600)).save(folder / "bad.png", compress_level=1)
        im.convert("RGB").crop((0, 0, 900, 600)).save(folder / "good.png", compress_level=1)
    data = bytearray((folder / "bad.png").read_bytes())
    data[5000:5400] = bytes(400)  # inside the IDAT stream; chunk layout intact, so it streams
    (folder / "bad.png").write_bytes(bytes(data))
    for name in ("bad.png", "good.png"):
        out = tmp_path / f"out-{name}"
        done = _run_cli(["--image", str(folder / name), "--output", str(out), "--local-workers", "1"], tmp_path)
        if name == "bad.png":
            assert done.returncode == 1
            assert "cannot decode image" in done.stderr and "Traceback" not in done.stderr
            assert not out.exists() and not list(tmp_path.glob(".out-bad*"))
        else:
            assert done.returncode == 0, done.stderr
            assert np.array_equal(np.asarray(Image.open(out)), pillow_reference(folder / name))
    assert not _segments()


def _slow_job(tmp_path: Path, photo: Path) -> tuple[MasterProcess, Workers]:
    """A master with one worker slowed 50x on a big job, started from the command line."""
    big = tmp_path / "big.png"
    with Image.open(photo) as im:
        im.convert("RGB").save(big, compress_level=1)
    master = MasterProcess(
        [
            "--image",
            str(big),
            "--output",
            str(tmp_path / "out.png"),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--token",
            TOKEN,
            "--no-dashboard",
            "--strip-rows",
            "8",
        ],
        tmp_path,
    )
    wait_until(lambda: any("listening on" in line for line in master.err_lines), what="the master listening")
    port = int(next(line for line in master.err_lines if "listening on" in line).rsplit(":", 1)[1])
    workers = Workers(tmp_path)
    workers.start(port, extra=("--throttle", "50"))
    return master, workers


def test_no_segment_outlives_a_master_killed_mid_job(photo: Path, tmp_path: Path) -> None:
    master, workers = _slow_job(tmp_path, photo)
    pid = master.proc.pid
    try:
        wait_until(lambda: any("job" in name for name in _segments(pid)), what="the job's shared-memory segment")
        master.proc.send_signal(signal.SIGKILL)
        master.proc.wait(timeout=WAIT_S)
        # multiprocessing's resource tracker, a separate process, unlinks what the master held.
        wait_until(lambda: not _segments(pid), what="the segments to be removed after the master died")
    finally:
        workers.stop_all()


def test_segments_of_a_master_killed_with_its_tracker_are_swept_next_time(photo: Path, tmp_path: Path) -> None:
    master, workers = _slow_job(tmp_path, photo)
    pid = master.proc.pid
    try:
        wait_until(lambda: any("job" in name for name in _segments(pid)), what="the job's shared-memory segment")
        tracker = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        os.kill(pid, signal.SIGKILL)  # kill -9 of the whole process tree: nobody left to clean up
        for child in tracker:
            os.kill(child, signal.SIGKILL)
        master.proc.wait(timeout=WAIT_S)
        assert _segments(pid), "the segments are left behind (what the next master must clean)"
        done = _run_cli(
            ["--image", str(photo), "--output", str(tmp_path / "next.jpg"), "--local-workers", "1"], tmp_path
        )
        assert done.returncode == 0, done.stderr
        assert not _segments(pid)
    finally:
        workers.stop_all()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_a_worker_with_its_own_dev_shm_gets_pixels_over_tcp(
    make_master: Callable[..., Master], tmp_path: Path, photo: Path
) -> None:
    """A worker that cannot see our /dev/shm (another host, or a container) fails the probe and
    gets its pixels over TCP; the output is the same."""
    master = make_master()
    port = master.address[1]
    script = (
        "mount -t tmpfs tmpfs /dev/shm && exec "
        f"{sys.executable} {ROOT / 'worker_client.py'} --host 127.0.0.1 --port {port} --token {TOKEN} --id apart"
    )
    proc = subprocess.Popen(
        ["unshare", "--mount", "sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert master.wait_for_workers(1, timeout=WAIT_S)
        wait_until(lambda: "apart" in master.workers, what="the worker")
        service = Service(ClusterEngine(master), ServiceOptions(output_dir=tmp_path, previews=False))
        out = tmp_path / "out.jpg"
        entry = service.enqueue(photo, out, "JPEG")
        service.process(entry, quiet=True)
        assert not master.workers["apart"].shm
        assert entry.job is not None and entry.job.worker_bytes["apart"][0] > 3840 * 2160 * 3
        assert out.read_bytes() == pillow_jpeg_bytes(pillow_reference(photo), strips=True)
    finally:
        proc.kill()
        proc.wait()


def test_fake_worker_reads_shared_memory_by_reference(make_master: Callable[..., Master], photo: Path) -> None:
    """What the protocol promises a worker: after SHM_OFFER/SHM_ANSWER, tasks name a segment and
    an offset, and the rows are there."""
    master = make_master()
    fake = FakeWorker(master.address[1])  # connected without the shm capability: no offer
    fake.close()
    from distgray.net.channel import connect
    from distgray.net.handshake import client_handshake

    channel = connect("127.0.0.1", master.address[1], timeout=WAIT_S)
    client_handshake(channel, "by-ref", TOKEN.encode(), (P.CAPABILITY_LUMA_U8, P.CAPABILITY_SHM))
    message, _ = channel.recv()
    assert isinstance(message, P.ShmOffer)
    channel.send(P.ShmAnswer(True, shm.read_probe(message.segment) or b""))
    wait_until(lambda: "by-ref" in master.workers and master.workers["by-ref"].shm, what="the probe answered")
    pixels = np.ascontiguousarray(pillow_reference(photo)[:64, :, None].repeat(3, axis=2))
    shared, segment = master.share(pixels)
    assert segment is not None
    job = master.submit(shared, "by-reference", segment=segment)
    while not job.wait(0):
        message, payload = channel.recv()
        if isinstance(message, P.Heartbeat):
            continue
        assert isinstance(message, P.Task) and message.shm_segment == segment.name and payload is None
        rows = shm.map_region(message.shm_segment, message.shm_offset, message.pixel_bytes)
        gray = np.empty((message.rows, message.width), np.uint8)
        to_grayscale(rows.reshape(message.rows, message.width, 3), gray)
        channel.send(
            P.Result(message.job_id, message.strip_id, message.row_start, message.row_stop, message.width), gray
        )
        if message.row_stop == 64:
            break
    assert job.wait(WAIT_S) and not job.failure
    assert np.array_equal(job.output, pixels[..., 0])
    segment.close()
    channel.close()


@pytest.mark.parametrize("encode_on_master", [False, True], ids=["strips by workers", "--encode-on-master"])
def test_jpeg_output_bytes(encode_on_master: bool, photo: Path, tmp_path: Path) -> None:
    """JPEG encoded by the workers: Pillow's bytes with a restart marker per row of blocks (the
    same decoded pixels as Pillow's file); --encode-on-master: Pillow's own file exactly."""
    out, report = tmp_path / "out.jpg", tmp_path / "report.json"
    extra = ["--encode-on-master"] if encode_on_master else []
    args = ["--image", str(photo), "--output", str(out), "--local-workers", "2", "--report", str(report), *extra]
    done = _run_cli(args, tmp_path)
    assert done.returncode == 0, done.stderr
    gray = pillow_reference(photo)
    assert out.read_bytes() == pillow_jpeg_bytes(gray, strips=not encode_on_master)
    figures = json.loads(report.read_text())
    assert figures["encoded_strips"] == (None if encode_on_master else "JPEG")
    assert encode_on_master or all(r["row_start"] % 8 == 0 for r in figures["strip_log"])
    with Image.open(out) as a, Image.open(io.BytesIO(pillow_jpeg_bytes(gray))) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
