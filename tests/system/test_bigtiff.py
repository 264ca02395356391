"""A BigTIFF of more than 4 GiB of pixels, converted by a real master and workers in bounded memory.

Needs ~7 GB of free disk (the input is uncompressed on purpose: 4.3 GB of RGB), and a few
minutes; it skips, saying so, where the disk is too small.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.bigimages import Mosaic, gray_of, photo_tile, tiff_strips, write_tiff
from tests.integration.conftest import MasterProcess

pytestmark = [pytest.mark.system, pytest.mark.slow]

WIDTH, HEIGHT = 40_000, 36_000  # 1.44 GP: 4.32 GB of RGB, more than a classic TIFF's 4 GiB
NEED_BYTES = WIDTH * HEIGHT * 4 + (1 << 30)


def test_a_bigtiff_over_4_gib_streams_through_in_bounded_memory(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    if free < NEED_BYTES:
        pytest.skip(f"needs {NEED_BYTES / 1e9:.1f} GB free in {tmp_path} for a 4.3 GB BigTIFF, has {free / 1e9:.1f} GB")
    tile = photo_tile()
    mosaic = Mosaic(tile, WIDTH, HEIGHT)
    source = write_tiff(tmp_path / "big.tif", mosaic, tile=512)
    with open(source, "rb") as fh:
        assert fh.read(4) in (b"II+\0", b"MM\0+")  # BigTIFF
    report = tmp_path / "report.json"
    master = MasterProcess(
        [
            *("--image", str(source), "--output", "big_gray.tif", "--report", str(report)),
            *("--local-workers", "2", "--no-dashboard", "--port", "0", "--max-pixels", str(WIDTH * HEIGHT)),
        ],
        cwd=tmp_path,
    )
    master.finish(1800)
    assert master.proc.returncode == 0, master.stderr
    source.unlink()  # room for reading the output back
    gray_tile = gray_of(tile)
    rows = 0
    for y, strip in tiff_strips(tmp_path / "big_gray.tif"):  # deflated strips, checked one by one
        assert y == rows and strip.shape[1] == WIDTH
        rows += strip.shape[0]
        assert np.array_equal(strip, mosaic.gray_rows(y, rows, gray_tile)), f"rows {y}-{rows - 1}"
    assert rows == HEIGHT
    figures = json.loads(report.read_text())
    # 5.8 GB of pixels (RGB in, gray out) went through; the master held a 256 MB window of them.
    assert figures["master_peak_rss_mb"] < 800, figures["master_peak_rss_mb"]
    assert figures["local_worker_peak_rss_mb"] < 400, figures["local_worker_peak_rss_mb"]
