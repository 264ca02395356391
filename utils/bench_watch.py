#!/usr/bin/env python3
"""Watch mode's latency: from an image arriving in the watched folder to its finished output.

    python utils/bench_watch.py [--repeat 10] [--workers 1]

A master watches a fresh folder (``--watch --local-workers N``); the 4K sample photo is moved in
(written beside the folder, then renamed into it: one move event), ``--repeat`` times, one after
another; each time the clock runs from the rename until the output file exists (outputs appear
by rename, whole). Prints the median and range. A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    photo = ROOT / "test_images" / "sample_4k.jpg"
    tmp = Path(tempfile.mkdtemp(prefix="distgray-watch-"))
    (tmp / "in").mkdir()
    master = subprocess.Popen(
        [
            *(sys.executable, str(ROOT / "master_server.py"), "--input-dir", "in", "--output-dir", "out", "--watch"),
            *("--local-workers", str(args.workers), "--no-dashboard", "--host", "127.0.0.1", "--port", "0"),
        ],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    took: list[float] = []
    try:
        assert master.stdout is not None
        line = master.stdout.readline()
        if "watching" not in line:
            raise SystemExit(f"the master did not start watching: {line!r}")
        for i in range(args.repeat):
            shutil.copy(photo, tmp / f"p{i}.jpg")
            out = tmp / "out" / f"p{i}_gray.jpg"
            t0 = time.perf_counter()
            os.rename(tmp / f"p{i}.jpg", tmp / "in" / f"p{i}.jpg")
            deadline = t0 + 60
            while not out.exists():
                if time.perf_counter() > deadline:
                    raise SystemExit(f"p{i}.jpg was not converted within 60 s")
                time.sleep(0.002)
            took.append(time.perf_counter() - t0)
    finally:
        master.send_signal(signal.SIGINT)
        master.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"watch mode, {args.workers} local worker(s), the 4K photo moved in {args.repeat} times: arrival -> output"
        f" median {statistics.median(took) * 1e3:.0f} ms (range {min(took) * 1e3:.0f}-{max(took) * 1e3:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
