"""Operation chains (``--op``) through real masters and real worker subprocesses: every output
equals the library's own call on the whole gray image (Pillow's filters and resizes, OpenCV's
Canny), at 1-row strips, random strip sizes, with a worker killed mid-job, in PNG and JPEG
outputs encoded by the workers in strips, in batches, and on the Dask engine."""

from __future__ import annotations

import io
import json
import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distgray.imaging import ops
from distgray.imaging.load import load_image
from distgray.master.server import Master
from tests.daskcli import DaskCLI
from tests.integration.conftest import WAIT_S, MasterProcess, Workers, wait_until

CHAINS = ["gaussian:4", "blur;sharpen", "median:5;edge_enhance_more", "canny:50,150", "unsharp:2,150,3;canny:20,60"]


def reference(pixels_or_path: np.ndarray | Path, chain: str) -> np.ndarray:
    """The chain on the whole gray image, in one process: Pillow's convert("L"), then each call."""
    if isinstance(pixels_or_path, Path):
        gray = Image.open(pixels_or_path).convert("L")
    else:
        gray = Image.fromarray(np.ascontiguousarray(pixels_or_path[..., :3])).convert("L")
    if "canny" in chain:
        pytest.importorskip("cv2")
    return np.asarray(ops.apply_image(gray, ops.parse_chain([chain])))


def job_result(master: Master, pixels: np.ndarray, chain: str) -> np.ndarray:
    """What the workers' strips make of ``pixels`` (joined, a Canny's map finished here)."""
    in_strips, on_whole = ops.split(ops.parse_chain([chain]))
    assert not on_whole
    job = master.submit(pixels, "ops", ops=ops.spell(in_strips))
    assert job.wait(WAIT_S * 3) and job.failure is None, job.failure
    return ops.canny_finish(job.output) if ops.ends_in_canny(in_strips) else job.output


@pytest.fixture(scope="module")
def random_pixels() -> np.ndarray:
    return np.random.default_rng(2026).integers(0, 256, (157, 211, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def photo_pixels(photo: Path) -> np.ndarray:
    loaded = load_image(photo)
    assert loaded.pixels is not None
    return np.ascontiguousarray(loaded.pixels[300:811, 200:1223])


@pytest.mark.parametrize("chain", CHAINS)
def test_one_row_strips_on_real_workers(
    make_master: Callable[..., Master], workers: Workers, random_pixels: np.ndarray, chain: str
) -> None:
    want = reference(random_pixels, chain)
    master = make_master(strip_rows=1)
    for w in ("a", "b"):
        workers.start(master.address[1], worker_id=w)
    assert master.wait_for_workers(2, timeout=WAIT_S)
    assert np.array_equal(job_result(master, random_pixels, chain), want)


@pytest.mark.parametrize("chain", CHAINS)
def test_the_photo_at_random_strip_sizes(
    make_master: Callable[..., Master], workers: Workers, photo_pixels: np.ndarray, chain: str
) -> None:
    want = reference(photo_pixels, chain)
    rows = random.Random(chain).choice([2, 3, 17, 64, 97])
    master = make_master(strip_rows=rows)
    for w in ("a", "b"):
        workers.start(master.address[1], worker_id=w)
    assert master.wait_for_workers(2, timeout=WAIT_S)
    assert np.array_equal(job_result(master, photo_pixels, chain), want), rows
    # and with the policy's own strip sizes (uneven, shrinking towards the end)
    master2 = make_master()
    workers.start(master2.address[1], worker_id="c")
    assert master2.wait_for_workers(1, timeout=WAIT_S)
    assert np.array_equal(job_result(master2, photo_pixels, chain), want)


def test_a_worker_killed_mid_job_its_strips_redone_with_their_halos(
    make_master: Callable[..., Master], workers: Workers, photo_pixels: np.ndarray
) -> None:
    chain = "gaussian:4;canny:30,90"
    want = reference(photo_pixels, chain)
    master = make_master(strip_rows=8, heartbeat_interval_s=0.25, heartbeat_timeout_s=3.0)
    procs = {w: workers.start(master.address[1], worker_id=w, extra=("--throttle", "40")) for w in ("a", "victim")}
    assert master.wait_for_workers(2, timeout=WAIT_S)
    in_strips, _ = ops.split(ops.parse_chain([chain]))
    job = master.submit(photo_pixels, "ops", ops=ops.spell(in_strips))
    wait_until(
        lambda: any(r.worker == "victim" for r in job.records) and bool(master.workers["victim"].in_flight),
        what="the victim to be mid-job",
    )
    assert not job.wait(0)
    held = {sid for (_, sid) in master.workers["victim"].in_flight}
    procs["victim"].send_signal(signal.SIGKILL)
    assert job.wait(WAIT_S * 3) and job.failure is None, job.failure
    assert np.array_equal(ops.canny_finish(job.output), want)
    redone = {r["strip"] for r in job.scheduler.requeued if r["worker"] == "victim"}
    redone |= {b["strip"] for b in job.scheduler.backups if b["of"] == "victim"}
    assert held <= redone


def _master(args: list[str], cwd: Path, timeout: float = WAIT_S * 6) -> tuple[int, str, str]:
    master = MasterProcess(["--no-dashboard", "--host", "127.0.0.1", "--port", "0", *args], cwd=cwd)
    out = master.finish(timeout)
    return master.proc.returncode, out, master.stderr


def _jpeg_of(gray: np.ndarray, quality: int = 95) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf))


@pytest.mark.parametrize(
    ("chain", "output"),
    [
        ("gaussian:4", "out.png"),  # encoded by the workers in strips, after the chain
        ("blur;find_edges", "out.jpg"),  # the same, JPEG
        ("canny:40,120", "out.png"),  # strips' maps, joined and finished on the master
        ("gaussian:2;resize:640x480", "out.png"),  # the resize on the whole gray image
        ("thumbnail:300x300", "out.jpg"),
        ("reduce:3;emboss", "out.png"),
    ],
)
def test_the_command_line_with_local_workers(photo: Path, tmp_path: Path, chain: str, output: str) -> None:
    ops_args = [a for spec in chain.split(";") for a in ("--op", spec)]
    report = tmp_path / "report.json"
    args = ["--image", str(photo), "--output", output, "--local-workers", "2", "--report", str(report), *ops_args]
    code, _, err = _master([*args, "--strip-rows", "37"], tmp_path)
    assert code == 0, err
    want = reference(photo, chain)
    got = np.asarray(Image.open(tmp_path / output))
    assert np.array_equal(got, want if output.endswith(".png") else _jpeg_of(want))
    assert json.loads(report.read_text())["ops"] == chain  # the report names the chain


def test_unknown_operations_are_usage_errors_that_list_what_exists(photo: Path, tmp_path: Path) -> None:
    for bad in (["--op", "sepia"], ["--op", "gaussian:big"], ["--op", "resize:100"]):
        code, _, err = _master(["--image", str(photo), "--local-workers", "1", *bad], tmp_path)
        assert code == 2, err
        assert "known:" in err and "gaussian:R" in err and "canny:LOW,HIGH" in err, err
        assert "Traceback" not in err


def test_a_batch_with_a_chain_and_a_bad_file(photo: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.open(photo).crop((0, 0, 801, 613)).save(src / "a.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (99, 131, 3), dtype=np.uint8)).save(src / "b.png")
    (src / "bad.jpg").write_bytes(b"not a jpeg")
    args = ["--input-dir", "in", "--output-dir", "out", "--local-workers", "2", "--op", "median:3", "--op", "sharpen"]
    code, out, err = _master(args, tmp_path)
    assert code == 1, err  # one input failed; the rest converted
    assert "bad.jpg" in out + err
    for name in ("a", "b"):
        want = reference(src / f"{name}.png", "median:3;sharpen")
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"{name}_gray.png")), want), name
    records = [json.loads(line) for line in (tmp_path / "out" / "distgray-log.jsonl").read_text().splitlines()]
    assert {r["options"]["ops"] for r in records if r["status"] == "converted"} == {"median:3;sharpen"}
    # the same chain again: up to date; another chain: converted again
    code, out, _ = _master([*args[:-4], "--op", "median:3", "--op", "sharpen"], tmp_path)
    assert "2 skipped" in out, out
    code, out, _ = _master([*args[:-4], "--op", "blur"], tmp_path)
    assert "2 converted" in out, out
    want = reference(src / "a.png", "blur")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a_gray.png")), want)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCLI]:
    from tests.integration.test_dask import start_cluster

    cluster = start_cluster(tmp_path_factory.mktemp("dask-ops"), 2)
    yield cluster
    cluster.close()


@pytest.mark.parametrize(
    ("chain", "output"), [("gaussian:4;canny:30,90", "out.png"), ("smooth_more", "out.jpg"), ("gaussian:2", "out.png")]
)
def test_the_dask_engine_runs_the_same_chains(
    dask_cluster: DaskCLI, photo: Path, tmp_path: Path, chain: str, output: str
) -> None:
    ops_args = [a for spec in chain.split(";") for a in ("--op", spec)]
    args = ["--image", str(photo), "--output", output, "--engine", "dask", "--scheduler-address", dask_cluster.address]
    code, _, err = _master([*args, "--strip-rows", "53", *ops_args], tmp_path)
    assert code == 0, err
    want = reference(photo, chain)
    got = np.asarray(Image.open(tmp_path / output))
    assert np.array_equal(got, want if output.endswith(".png") else _jpeg_of(want))
    # a batch on Dask: whole files, the chain run by the task
    src = tmp_path / "in"
    src.mkdir()
    Image.open(photo).crop((5, 5, 406, 333)).save(src / "c.png")
    batch = ["--input-dir", "in", "--output-dir", "out", "--engine", "dask", "--scheduler-address"]
    code, _, err = _master([*batch, dask_cluster.address, *ops_args], tmp_path)
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "c_gray.png")), reference(src / "c.png", chain))


@pytest.mark.parametrize(
    ("chain", "output", "extra"),
    [
        ("gaussian:4", "out.png", ()),  # PNG encoded by the workers in strips, rows let go as written
        ("median:5;sharpen", "out.tif", ("--encode-on-master",)),  # TIFF written here in strips
    ],
)
def test_a_streamed_image_through_a_chain(
    photo: Path, tmp_path: Path, chain: str, output: str, extra: tuple[str, ...]
) -> None:
    """An image bigger than the window streams through it: each strip's halo rows are kept
    until the strip is done, and the output is still the chain on the whole image."""
    big = tmp_path / "big.png"
    Image.open(photo).convert("RGB").crop((0, 0, 2001, 1503)).save(big, compress_level=1)
    ops_args = [a for spec in chain.split(";") for a in ("--op", spec)]
    report = tmp_path / "report.json"
    args = ["--image", str(big), "--output", output, "--local-workers", "2", "--window-mb", "2", *extra]
    code, _, err = _master([*args, "--report", str(report), *ops_args], tmp_path)
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / output)), reference(big, chain))
    assert json.loads(report.read_text())["streamed"] is True


def test_a_whole_image_operation_on_an_image_that_must_stream_is_refused(photo: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.open(photo).convert("RGB").crop((0, 0, 2001, 1503)).save(big, compress_level=1)
    args = ["--image", str(big), "--output", "o.png", "--local-workers", "1", "--window-mb", "2"]
    code, _, err = _master([*args, "--op", "canny:10,20"], tmp_path)
    assert code == 1 and "whole gray image in memory" in err and "--window-mb" in err, err
    assert not (tmp_path / "o.png").exists()
