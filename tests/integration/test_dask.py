"""The Dask engine against a real cluster: ``dask scheduler`` and ``dask worker`` started from
Dask's own command line on 127.0.0.1, and a LocalCluster the master starts itself. Outputs are
compared with the built-in engine's, a batch of good and bad files goes through, and a worker
killed with SIGKILL mid-job costs time, not pixels.

Needs ``pip install 'distgray[dask]'`` (the test extras include it): without Dask these tests
skip and say so, and fail instead under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.bigimages import Mosaic, gray_of, photo_tile, write_png
from tests.conftest import decoded, pillow_reference
from tests.daskcli import DaskCLI
from tests.integration.conftest import WAIT_S, MasterProcess, wait_until
from tests.integration.test_batch import BAD, GOOD, build_folder, out_name

pytestmark = pytest.mark.slow


def _dask_cli() -> str:
    """The ``dask`` command of this interpreter's environment."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        why = "Dask is not installed (pip install 'distgray[dask]'; the test extras include it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    found = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
    assert found, "distributed is installed but its `dask` command is not on PATH"
    return found


def start_cluster(tmp: Path, n: int, worker_prefix: list[str] | None = None) -> DaskCLI:
    _dask_cli()  # skips (or fails under CI=true) without Dask
    return DaskCLI(tmp, n, timeout=WAIT_S, worker_prefix=worker_prefix)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCLI]:
    cluster = start_cluster(tmp_path_factory.mktemp("dask"), 2)
    yield cluster
    cluster.close()


def _master(args: list[str], cwd: Path, timeout: float = WAIT_S * 6) -> tuple[int, str, str]:
    master = MasterProcess(["--no-dashboard", "--host", "127.0.0.1", "--port", "0", *args], cwd=cwd)
    out = master.finish(timeout)
    return master.proc.returncode, out, master.stderr


@pytest.mark.parametrize(
    ("source", "output"),
    [("photo", "out.png"), ("photo", "out.jpg"), ("photo", "out.tif"), ("odd_8k", "out.png")],
)
def test_images_in_strips_on_a_cli_cluster_match_the_builtin_engine(
    dask_cluster: DaskCLI, tmp_path: Path, source: str, output: str, request: pytest.FixtureRequest
) -> None:
    """A JPEG (the photo) and a PNG (an odd-sized 8K) in strips: JPEG and TIFF outputs byte for
    byte the built-in engine's file (their strips do not depend on where the cuts fall), PNG the
    same pixels (a PNG's deflate pieces do)."""
    photo: Path = request.getfixturevalue(source)
    report = tmp_path / "report.json"
    code, _, err = _master(
        [
            "--image",
            str(photo),
            "--output",
            f"dask_{output}",
            "--report",
            str(report),
            "--engine",
            "dask",
            "--scheduler-address",
            dask_cluster.address,
        ],
        tmp_path,
    )
    assert code == 0, err
    code, _, err = _master(["--image", str(photo), "--output", f"builtin_{output}", "--local-workers", "2"], tmp_path)
    assert code == 0, err
    ours, theirs = tmp_path / f"dask_{output}", tmp_path / f"builtin_{output}"
    if output.endswith(".png"):
        assert np.array_equal(decoded(ours), pillow_reference(photo))
        assert np.array_equal(decoded(ours), decoded(theirs))
    else:
        assert ours.read_bytes() == theirs.read_bytes()
    figures = json.loads(report.read_text())
    assert figures["engine"] == "dask" and figures["strips"] > 2
    assert {s["worker"] for s in figures["strip_log"]} == {"w0", "w1"}  # both Dask workers took strips


def test_a_batch_of_good_and_bad_files_on_a_cli_cluster(dask_cluster: DaskCLI, photo: Path, tmp_path: Path) -> None:
    """Whole files as one task each (read by the workers from their paths), the photo in strips,
    every bad file reported with its reason and the rest converted: the built-in engine's bytes."""
    src = tmp_path / "in"
    build_folder(src, photo)
    common = ["--input-dir", "in", "--recursive", "--whole-file-max-mp", "5"]
    code, summary, err = _master(
        [*common, "--output-dir", "dask", "--engine", "dask", "--scheduler-address", dask_cluster.address], tmp_path
    )
    assert code == 1, err  # some inputs failed, the rest were converted
    assert "Traceback" not in err
    assert f"{len(GOOD) + len(BAD)} files: {len(GOOD)} converted, 0 skipped, {len(BAD)} failed" in summary
    for name, reason in BAD.items():
        line = next(ln for ln in summary.splitlines() if ln.startswith(f"failed     {name}:"))
        assert reason in line, line
    code, _, err = _master([*common, "--output-dir", "builtin", "--local-workers", "2"], tmp_path)
    assert code == 1, err
    for rel in GOOD:  # whole files are Pillow's bytes; the photo's JPEG strips do not depend on the cuts
        ours, theirs = tmp_path / "dask" / out_name(rel), tmp_path / "builtin" / out_name(rel)
        assert ours.read_bytes() == theirs.read_bytes(), rel


@pytest.mark.parametrize("how", ["shared memory", "scattered"])
def test_a_worker_killed_mid_job_costs_time_not_pixels(photo: Path, tmp_path: Path, how: str) -> None:
    """Pixels by reference (Dask reruns the dead worker's tasks), or scattered to the workers
    (the dead worker's strips lost their pixels: the engine sends them again)."""
    cluster = start_cluster(tmp_path / "dask", 2)
    try:
        report = tmp_path / "report.json"
        master = MasterProcess(
            [
                *("--no-dashboard", "--image", str(photo), "--output", "out.png", "--report", str(report)),
                *("--engine", "dask", "--scheduler-address", cluster.address, "--strip-rows", "8"),
                *("--log-level", "debug"),
                *(["--no-shared-memory"] if how == "scattered" else []),
            ],
            cwd=tmp_path,
        )
        # Once w1 has done a few strips (the job is well under way), kill it.
        wait_until(lambda: master.stderr.count("done by w1") >= 4, WAIT_S * 2, "w1 to do a few strips")
        cluster.workers[1].send_signal(signal.SIGKILL)
        cluster.workers[1].wait(timeout=WAIT_S)
        master.finish(WAIT_S * 6)
        assert master.proc.returncode == 0, master.stderr
        assert np.array_equal(decoded(tmp_path / "out.png"), pillow_reference(photo))
        figures = json.loads(report.read_text())
        workers = {s["worker"] for s in figures["strip_log"]}
        assert workers == {"w0", "w1"}, workers  # w1 did strips before it died; w0 did the rest
        moved = sum(s["bytes_in"] for s in figures["strip_log"])
        assert (moved == 0) if how == "shared memory" else (moved >= photo.stat().st_size), moved
    finally:
        cluster.close()


def test_a_local_cluster_started_by_the_master_and_a_streamed_image(tmp_path: Path) -> None:
    """``--engine dask --local-workers 2``: a LocalCluster of two processes. An image bigger than
    a 2 MB window streams through it, strips sent as their rows are decoded: Pillow's gray."""
    _dask_cli()
    mosaic = Mosaic(photo_tile(0.25), 2501, 1999)
    source = write_png(tmp_path / "odd.png", mosaic)
    report = tmp_path / "report.json"
    started = time.monotonic()
    code, _, err = _master(
        [
            "--image",
            str(source),
            "--output",
            "out.tif",
            "--window-mb",
            "2",
            "--report",
            str(report),
            "--engine",
            "dask",
            "--local-workers",
            "2",
        ],
        tmp_path,
    )
    assert code == 0, err
    assert "Dask engine" in err and time.monotonic() - started < WAIT_S * 6
    assert np.array_equal(decoded(tmp_path / "out.tif"), mosaic.gray_rows(0, mosaic.height, gray_of(photo_tile(0.25))))
    figures = json.loads(report.read_text())
    assert figures["engine"] == "dask" and len(figures["strip_log"]) > 10  # it streamed, in many strips


def _distgray_tasks(address: str) -> list[str]:
    """The keys of this engine's tasks the scheduler still holds."""
    from distributed import Client

    def keys(dask_scheduler: object) -> list[str]:
        return [str(k) for k in dask_scheduler.tasks if "distgray" in str(k)]  # type: ignore[attr-defined]

    with Client(address, timeout=WAIT_S) as client:
        return list(client.run_on_scheduler(keys))


def test_ctrl_c_stops_the_job_and_releases_its_tasks(dask_cluster: DaskCLI, photo: Path, tmp_path: Path) -> None:
    """Ctrl+C mid-job: exit code 130 with one line, no output (not even a part file), and the
    scheduler forgets every task of the job (the workers do not go on with them)."""
    master = MasterProcess(
        [
            *("--no-dashboard", "--host", "127.0.0.1", "--port", "0", "--log-level", "debug"),
            *("--image", str(photo), "--output", "out.png", "--strip-rows", "8", "--no-shared-memory"),
            *("--engine", "dask", "--scheduler-address", dask_cluster.address),
        ],
        cwd=tmp_path,
    )
    wait_until(lambda: master.stderr.count("done by w") >= 3, WAIT_S * 2, "a few strips to be done")
    assert _distgray_tasks(dask_cluster.address), "the job's tasks are on the scheduler while it runs"
    master.proc.send_signal(signal.SIGINT)
    master.finish(WAIT_S)
    assert master.proc.returncode == 130, master.stderr
    assert "interrupted" in master.stderr and "Traceback" not in master.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "no output and no part file"
    wait_until(lambda: not _distgray_tasks(dask_cluster.address), WAIT_S, "the scheduler to forget the job's tasks")


def test_workers_that_cannot_see_the_inputs_get_their_bytes(photo: Path, tmp_path: Path) -> None:
    """Workers on "another machine": each runs in its own mount namespace where the input folder
    is an empty tmpfs (a real mount, as a remote host would have no such folder). The first file
    they are sent by path comes back unreadable; from then on the master sends every file's bytes,
    and the outputs are the built-in engine's."""
    unshare = shutil.which("unshare")
    why = None
    if unshare is None:
        why = "util-linux's unshare is not installed"
    elif os.geteuid() != 0:
        why = "a private mount namespace needs root"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(photo.read_bytes())
    Image.open(photo).convert("RGB").crop((0, 0, 901, 677)).save(src / "b.png")
    (src / "c.jpg").write_text("this is not a picture\n")
    hide = ["sh", "-c", f'mount -t tmpfs none "{src}" && exec "$0" "$@"']
    cluster = start_cluster(tmp_path / "dask", 2, [unshare, "--mount", "--propagation", "private", *hide])
    try:
        common = ["--input-dir", "in", "--whole-file-max-mp", "50", "--log-level", "info"]
        code, summary, err = _master(
            [*common, "--output-dir", "dask", "--engine", "dask", "--scheduler-address", cluster.address], tmp_path
        )
        assert code == 1, err  # c.jpg is not an image: reported, the rest converted
        assert "3 files: 2 converted, 0 skipped, 1 failed" in summary, summary
        assert "sending file contents" in err, err
        assert "cannot read here" not in summary  # no file failed for being out of the workers' sight
    finally:
        cluster.close()
    code, _, err = _master([*common, "--output-dir", "builtin", "--local-workers", "2"], tmp_path)
    assert code == 1, err
    for name in ("a_gray.jpg", "b_gray.png"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "builtin" / name).read_bytes(), name
