"""Batches against real file-system trouble: a full disk, a read-only output folder, an input the
master may not read. Real mounts (tmpfs), a real unprivileged user; needs root to set them up,
and says so when it cannot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import pillow_reference
from tests.integration.conftest import ROOT, TOKEN, WAIT_S, Workers

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount tmpfs and drop root's file-reading capabilities"),
]


@contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def batch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(ROOT / "master_server.py"), "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=WAIT_S * 3)


@pytest.fixture
def inputs(photo: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    im = Image.open(photo)
    for i in range(3):  # uncompressed gray PNG output: 3 MB each
        im.crop((i * 100, 0, i * 100 + 2000, 1500)).save(folder / f"s{i}.png", compress_level=1)
    return folder


def test_full_disk_fails_the_files_that_do_not_fit_and_leaves_no_partial_files(inputs: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "size=4m") as out:
        proc = batch(
            "--input-dir",
            str(inputs),
            "--output-dir",
            str(out),
            "--png-level",
            "0",
            "--local-workers",
            "1",
            cwd=tmp_path,
        )
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        failed = [ln for ln in proc.stdout.splitlines() if ln.startswith("failed ")]
        assert failed and all("No space left on device" in ln for ln in failed), proc.stdout
        written = sorted(p.name for p in out.iterdir() if p.name.endswith(".png"))
        assert len(written) == 3 - len(failed)
        for name in written:
            source = inputs / name.replace("_gray", "")
            np.testing.assert_array_equal(np.asarray(Image.open(out / name)), pillow_reference(source))
        assert not [p for p in out.iterdir() if p.name.endswith(".part")]


def test_read_only_output_folder_is_a_clear_failure(inputs: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "size=4m,ro") as out:
        proc = batch(
            "--input-dir", str(inputs), "--output-dir", str(out / "results"), "--local-workers", "1", cwd=tmp_path
        )
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr
        assert "Read-only file system" in proc.stdout + proc.stderr
        assert list(out.iterdir()) == []


def test_an_input_we_may_not_read_fails_alone(photo: Path, workers: Workers) -> None:
    work = Path(tempfile.mkdtemp(prefix="distgray-perm-"))
    try:
        work.chmod(0o777)  # the unprivileged master writes its results here
        (work / "in").mkdir()
        (work / "in").chmod(0o755)
        for name in ("ok.jpg", "secret.jpg"):
            shutil.copy(photo, work / "in" / name)
            (work / "in" / name).chmod(0o644)
        (work / "in" / "secret.jpg").chmod(0o000)
        # The master runs as root *without* the capabilities that let root read any file
        # (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): permissions apply to it as to anyone, while it
        # can still run this Python and this checkout wherever they live (another user could not
        # when the clone sits under a 0700 folder, as `mktemp -d` makes).
        master = subprocess.Popen(
            [
                *("setpriv", "--bounding-set=-dac_override,-dac_read_search"),
                *(sys.executable, str(ROOT / "master_server.py"), "--input-dir", "in", "--no-dashboard"),
                *("--host", "127.0.0.1", "--port", "0", "--token", TOKEN),
            ],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert master.stderr is not None
        first = master.stderr.readline()
        assert "listening on 127.0.0.1:" in first, first + master.stderr.read()
        workers.start(int(first.rsplit(":", 1)[1]))
        out, err = master.communicate(timeout=WAIT_S * 3)
        assert master.returncode == 1, err
        assert "failed     secret.jpg: permission denied" in out
        assert "1 converted" in out and (work / "results" / "ok_gray.jpg").is_file()
        # No shared-memory segment of its own left behind.
        assert not [p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(f"distgray-{master.pid}-")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
