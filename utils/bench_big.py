#!/usr/bin/env python3
"""Images of any size: time and peak memory as pixels grow, distgray against Pillow and libvips.

    pip install -e '.[bench]'
    python utils/bench_big.py                         # 8K, 16K, 32K and 1.19 GP; writes docs/BENCHMARK_BIG.md
    python utils/bench_big.py --sizes 8k,16k --workers 2

Inputs are mosaics of the 8K photo (the bundled 4K photo mirrored 2x2; CC-BY-4.0, see
test_images/ATTRIBUTION.md): 1x1 (8K, 7680x4320), 2x2 (16K), 4x4 (32K), 6x6 (46080x25920 =
1.19 gigapixels), written once as 8-bit RGB PNG (zlib 1, no filters) into ``--dir`` (default
/tmp/distgray-big; ~6 GB of disk for all four). Each case converts the PNG to a gray PNG (zlib 1)
and to a gray TIFF (deflate: distgray and libvips at zlib level 1 with the horizontal predictor,
Pillow at libtiff's default level 6 without a predictor, as it has no option for either) with:

* Pillow, single process (``convert("L")``), where the image fits memory comfortably (not the
  gigapixel one: ~6 GB and minutes; say ``--pillow-max-mp`` to change that);
* libvips (pyvips, ``access="sequential"``, ``colourspace("b-w")``: another gray formula, so its
  pixels differ; its time and memory are the reference for streaming);
* distgray with ``--local-workers`` 1, 2, 4 (default window, 256 MB).

Each is a fresh process, timed once (these runs take seconds to minutes; the spread between runs
is far below the differences shown), peak memory from /usr/bin/time (master or tool) and, for
distgray, the workers' VmHWM from its report. distgray's outputs are checked against the expected
gray mosaic band by band (Pillow's ``convert("L")`` of the tile, tiled).

A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.bigimages import Mosaic, gray_of, photo_tile, tiff_strips, write_png  # noqa: E402

SIZES = {"8k": (1, 1), "16k": (2, 2), "32k": (4, 4), "giga": (6, 6)}

PILLOW = """
import sys
from PIL import Image
Image.MAX_IMAGE_PIXELS = None
src, dst = sys.argv[1], sys.argv[2]
with Image.open(src) as im:
    gray = im.convert("L")
gray.save(dst, **({"compress_level": 1} if dst.endswith(".png") else {"compression": "tiff_adobe_deflate"}))
"""
VIPS = """
import sys
import pyvips
src, dst = sys.argv[1], sys.argv[2]
im = pyvips.Image.new_from_file(src, access="sequential").colourspace("b-w")
if dst.endswith(".png"):
    im.pngsave(dst, compression=1)
else:
    big = im.width * im.height > 4_000_000_000
    im.tiffsave(dst, compression="deflate", predictor="horizontal", level=1, bigtiff=big)
"""


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of the command's own process, and its stderr."""
    t0 = time.monotonic()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], cwd=cwd, capture_output=True, text=True, check=False)
    took = time.monotonic() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:3]}... failed ({done.returncode}): {done.stderr[-2000:]}")
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    return took, peak_kb / 1024, done.stderr


def check(path: Path, mosaic: Mosaic, gray_tile: np.ndarray) -> bool:
    """The output equals the expected gray mosaic, read band by band (PNG through Pillow whole)."""
    from PIL import Image

    if path.suffix == ".tif":  # deflated strips, decoded one at a time
        rows = 0
        for y, strip in tiff_strips(path):
            if y != rows or strip.shape[1] != mosaic.width:
                return False
            rows += strip.shape[0]
            if not np.array_equal(strip, mosaic.gray_rows(y, rows, gray_tile)):
                return False
        return rows == mosaic.height
    else:
        Image.MAX_IMAGE_PIXELS = None
        with Image.open(path) as im:
            data = np.asarray(im)
    if data.shape != (mosaic.height, mosaic.width):
        return False
    for y in range(0, mosaic.height, 1024):
        stop = min(mosaic.height, y + 1024)
        if not np.array_equal(data[y:stop], mosaic.gray_rows(y, stop, gray_tile)):
            return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="8k,16k,32k,giga")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--formats", default="png,tif")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "distgray-big")
    ap.add_argument("--pillow-max-mp", type=float, default=600)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARK_BIG.md")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    tile = photo_tile()
    gray_tile = gray_of(tile)
    rows: list[str] = []
    results: list[dict[str, object]] = []
    for size in args.sizes.split(","):
        nx, ny = SIZES[size]
        mosaic = Mosaic(tile, tile.shape[1] * nx, tile.shape[0] * ny)
        src = args.dir / f"mosaic_{size}.png"
        if not src.exists():
            print(f"writing {src} ({mosaic.width}x{mosaic.height})...", flush=True)
            write_png(src, mosaic)
        mp = mosaic.width * mosaic.height / 1e6
        for fmt in args.formats.split(","):
            runs: list[tuple[str, list[str], bool]] = []
            if mp <= args.pillow_max_mp:
                runs.append(("Pillow", [sys.executable, "-c", PILLOW], False))
            runs.append(("libvips", [sys.executable, "-c", VIPS], False))
            for n in args.workers.split(","):
                cmd = [
                    *(sys.executable, str(ROOT / "master_server.py"), "--local-workers", n, "--no-dashboard"),
                    *("--port", "0", "--png-level", "1", "--max-pixels", "2000000000", "--overwrite"),
                ]
                runs.append((f"distgray {n}w", cmd, True))
            for name, cmd, ours in runs:
                dst = args.dir / f"out_{size}_{name.replace(' ', '_')}.{fmt}"
                dst.unlink(missing_ok=True)
                report = args.dir / "report.json"
                full = (
                    [*cmd, "--image", str(src), "--output", str(dst), "--report", str(report)]
                    if ours
                    else [*cmd, str(src), str(dst)]
                )
                took, peak, _ = timed(full, args.dir)
                workers_mb = None
                if ours:
                    r = json.loads(report.read_text())
                    workers_mb = r.get("local_worker_peak_rss_mb")
                ok = check(dst, mosaic, gray_tile) if ours else None
                out_mb = dst.stat().st_size / 1e6
                line = {
                    "size": size,
                    "megapixels": round(mp, 1),
                    "format": fmt,
                    "tool": name,
                    "seconds": round(took, 2),
                    "peak_mb": round(peak),
                    "worker_peak_mb": workers_mb,
                    "output_mb": round(out_mb, 1),
                    "exact": ok,
                }
                results.append(line)
                print(json.dumps(line), flush=True)
                worker = "-" if workers_mb is None else f"{workers_mb:.0f} MB"
                exact = "-" if ok is None else "yes" if ok else "**NO**"
                rows.append(
                    f"| {size} ({mosaic.width}x{mosaic.height}, {mp:,.0f} MP) | {fmt} | {name} | {took:.2f} s"
                    f" | {took / mp * 1000:.1f} ms | {peak:.0f} MB | {worker} | {out_mb:,.1f} MB | {exact} |"
                )
                dst.unlink(missing_ok=True)
    head = [
        "# Images of any size: time and memory (utils/bench_big.py)",
        "",
        f"`python utils/bench_big.py --sizes {args.sizes} --workers {args.workers} --formats {args.formats}`,"
        f" {os.cpu_count()} cores. One fresh process per run, timed once.",
        "",
        "| image | out | tool | time | per megapixel | peak (master / tool) | peak (a worker) | output | = expected |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    args.out.write_text("\n".join([*head, *rows, ""]))
    (args.out.with_suffix(".json")).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
