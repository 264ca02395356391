#!/usr/bin/env python3
"""Load balancing benchmark: 3 workers, one 4x slower, on the 8K image.

    python utils/make_test_images.py        # once
    python utils/bench_balance.py           # --help for options

For each cluster (throttle factors of the three workers) it runs the same in-memory 8K job
``--repeat`` times under three policies and prints medians:

- distgray: the default policy (speed-sized strips, guided self-scheduling tail, backups);
- static equal split: three strips of equal height, one per worker (prefetch 1);
- ideal lower bound: total rows / sum of the workers' measured speeds, where a worker's speed is
  the rows it converted over its busy time (receive + compute) in the distgray runs.

Makespan is the master's job wall time (first task sent to last result received). Workers are
``worker_client.py`` subprocesses on this machine, slowed with ``--throttle`` (a testing aid).
A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distgray.imaging.load import load_image  # noqa: E402
from distgray.master.server import Job, Master, MasterConfig  # noqa: E402
from distgray.scheduling.strips import Policy  # noqa: E402

TOKEN = "bench"


def start_workers(port: int, n: int, throttles: list[float] | None = None) -> list[subprocess.Popen[bytes]]:
    """``n`` local ``worker_client.py`` processes for a master on 127.0.0.1:``port``."""
    throttles = throttles or [1.0] * n
    args = [sys.executable, str(ROOT / "worker_client.py"), "--host", "127.0.0.1", "--port", str(port)]
    return [
        subprocess.Popen(
            [*args, "--token", TOKEN, "--id", f"bench-{i}-x{t:g}", "--throttle", str(t), "--log-level", "warning"]
        )
        for i, t in enumerate(throttles[:n])
    ]


def run_cluster(pixels: np.ndarray, throttles: list[float], repeat: int, policy: Policy) -> dict[str, float]:
    height = pixels.shape[0]
    results: dict[str, list[float]] = {"distgray": [], "static": [], "ideal": []}
    for mode in ("distgray", "static"):
        static = mode == "static"
        config = MasterConfig(
            host="127.0.0.1",
            port=0,
            token=TOKEN.encode(),
            prefetch=1 if static else 2,
            policy=policy,
            strip_rows=math.ceil(height / len(throttles)) if static else None,
        )
        master = Master(config)
        master.start()
        procs = start_workers(master.address[1], len(throttles), throttles)
        try:
            if not master.wait_for_workers(len(throttles), timeout=60):
                raise SystemExit("workers did not join")
            master.run(pixels, "warm-up", timeout=600)
            for _ in range(repeat):
                job = master.run(pixels, mode, timeout=600)
                assert job.failure is None and job.finished_at is not None and job.started is not None
                results[mode].append(job.finished_at - job.started)
                if not static:
                    results["ideal"].append(ideal_makespan(job))
        finally:
            master.close("bench done")
            for p in procs:
                p.wait(timeout=30)
    return {k: statistics.median(v) for k, v in results.items()}


def ideal_makespan(job: Job) -> float:
    """Total rows over the sum of each worker's measured speed (rows / its busy seconds)."""
    rows: dict[str, int] = {}
    busy: dict[str, float] = {}
    for r in job.records:
        rows[r.worker] = rows.get(r.worker, 0) + (r.row_stop - r.row_start)
        busy[r.worker] = busy.get(r.worker, 0.0) + (r.recv_us + r.compute_us) / 1e6
    speeds = [rows[w] / busy[w] for w in rows if busy[w] > 0]
    return job.height / sum(speeds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=ROOT / "test_images" / "sample_8k.png")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--clusters",
        nargs="+",
        default=["1,1,4", "10,10,40"],
        help="throttle factors per cluster, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--policy", nargs="*", default=[], metavar="FIELD=VALUE", help="override Policy fields")
    args = parser.parse_args(argv)
    policy = Policy(**{k: type(getattr(Policy(), k))(v) for k, v in (x.split("=", 1) for x in args.policy)})
    if not args.image.exists():
        parser.error(f"{args.image} not found: run python utils/make_test_images.py first")
    loaded = load_image(args.image)
    assert loaded.pixels is not None
    print(f"image: {args.image.name}, {loaded.width}x{loaded.height}; medians of {args.repeat} jobs per policy\n")
    print("| worker throttles | distgray | static equal split | ideal bound | distgray / ideal | static / ideal |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for spec in args.clusters:
        throttles = [float(x) for x in spec.split(",")]
        r = run_cluster(loaded.pixels, throttles, args.repeat, policy)
        print(
            f"| {spec} | {r['distgray'] * 1e3:.0f} ms | {r['static'] * 1e3:.0f} ms | {r['ideal'] * 1e3:.0f} ms"
            f" | {r['distgray'] / r['ideal']:.2f} | {r['static'] / r['ideal']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
