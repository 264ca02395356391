#!/usr/bin/env python3
"""Benchmark distgray against single-process Pillow, in one run, on the same 8K image.

    python utils/make_test_images.py          # once: makes test_images/sample_8k.png
    python utils/bench.py                     # prints markdown tables; --help for options

Three views, medians of ``--repeat`` runs, ratios against Pillow measured in the same run:
1. the kernel, one core, 8K RGB array in memory (why ``to_grayscale`` is built as it is);
2. the distributed phase alone: RGB array in memory -> gray array, distgray with N local
   workers (an in-process master, ``worker_client.py`` subprocesses) vs Pillow in one process;
3. end to end, file in -> file out, each as a fresh process (so interpreter start-up counts for
   both): ``python -c 'Image.open().convert("L").save()'`` vs ``master_server.py --local-workers N``,
   with the master's own breakdown (load, distribute, save) and peak memory of master and worker.
A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distgray.imaging import load_image, to_grayscale  # noqa: E402
from distgray.master import Job, Master, MasterConfig  # noqa: E402

TOKEN = "bench"


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def numpy_fixed_point(rgb: np.ndarray) -> np.ndarray:
    px = rgb.astype(np.uint32)
    return ((px[..., 0] * 19595 + px[..., 1] * 38470 + px[..., 2] * 7471 + 32768) >> 16).astype(np.uint8)


def numpy_float(rgb: np.ndarray) -> np.ndarray:
    return np.rint(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)


def bench_kernel(rgb: np.ndarray, repeat: int) -> list[tuple[str, float]]:
    pil = Image.fromarray(rgb)
    out = np.empty(rgb.shape[:2], np.uint8)
    return [
        ('Pillow `convert("L")`, image already in Pillow', median_time(lambda: pil.convert("L"), repeat)),
        (
            "distgray `to_grayscale` (Pillow C in cache-sized blocks of a zero-copy view)",
            median_time(lambda: to_grayscale(rgb, out), repeat),
        ),
        ("NumPy integer fixed point, whole array", median_time(lambda: numpy_fixed_point(rgb), repeat)),
        ("NumPy float64 dot product (not bit-exact)", median_time(lambda: numpy_float(rgb), max(1, repeat // 2))),
    ]


def start_workers(port: int, n: int, throttles: list[float] | None = None) -> list[subprocess.Popen[bytes]]:
    """``n`` local ``worker_client.py`` processes for a master on 127.0.0.1:``port`` (shared by the benches)."""
    throttles = throttles or [1.0] * n
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "worker_client.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--token",
                TOKEN,
                "--id",
                f"bench-{i}-x{t:g}",
                "--throttle",
                str(t),
                "--log-level",
                "warning",
            ]
        )
        for i, t in enumerate(throttles[:n])
    ]


def bench_distributed(rgb: np.ndarray, counts: list[int], repeat: int) -> list[tuple[str, float]]:
    rows = [
        (
            'Pillow, one process: `Image.fromarray(a).convert("L")` -> array',
            median_time(lambda: np.asarray(Image.fromarray(rgb).convert("L")), repeat),
        )
    ]
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    for n in counts:
        master = Master(MasterConfig(host="127.0.0.1", port=0, token=TOKEN.encode()))
        master.start()
        procs = start_workers(master.address[1], n)
        try:
            if not master.wait_for_workers(n, timeout=60):
                raise SystemExit("workers did not join")
            master.run(rgb, "warm-up", timeout=120)
            jobs: list[Job] = []
            t = median_time(partial(_run_into, master, rgb, jobs), repeat)
            assert all(np.array_equal(j.output, expected) for j in jobs), "output differs from Pillow"
            rows.append((f"distgray, {n} local worker{'s' * (n > 1)} (master in this process)", t))
        finally:
            master.close("bench done")
            for p in procs:
                p.wait(timeout=30)
    return rows


def _run_into(master: Master, rgb: np.ndarray, jobs: list[Job]) -> None:
    jobs.append(master.run(rgb, "bench", timeout=120))


PILLOW_SCRIPT = """
import sys
from PIL import Image
src, dst, fmt = sys.argv[1:4]
opts = {"quality": 95} if fmt == "JPEG" else {"compress_level": 6}
Image.open(src).convert("L").save(dst, format=fmt, **opts)
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) / 1024)
"""


def _pillow_process(image: Path, out: Path, fmt: str, rss: list[float]) -> None:
    cmd = [sys.executable, "-c", PILLOW_SCRIPT, str(image), str(out), fmt]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    rss.append(float(done.stdout.strip()))


def _distgray_process(image: Path, out: Path, n: int, report: Path, reports: list[dict[str, Any]]) -> None:
    cmd = [
        sys.executable,
        str(ROOT / "master_server.py"),
        "--image",
        str(image),
        "--output",
        str(out),
        "--local-workers",
        str(n),
        "--min-workers",
        str(n),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--report",
        str(report),
        "--log-level",
        "warning",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    reports.append(json.loads(report.read_text()))


def bench_end_to_end(image: Path, counts: list[int], repeat: int, tmp: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png")):
        ref = tmp / f"pillow.{ext}"
        rss: list[float] = []
        t_pillow = median_time(partial(_pillow_process, image, ref, fmt, rss), repeat)
        rows.append({"output": fmt, "who": "Pillow, one process", "s": t_pillow, "rss": max(rss)})
        expected = np.asarray(Image.open(ref))
        for n in counts:
            out = tmp / f"distgray-{n}.{ext}"
            reports: list[dict[str, Any]] = []
            t = median_time(partial(_distgray_process, image, out, n, tmp / f"report-{n}.json", reports), repeat)
            assert np.array_equal(np.asarray(Image.open(out)), expected), f"{fmt} output differs from Pillow's"
            r = reports[len(reports) // 2]
            rows.append(
                {
                    "output": fmt,
                    "who": f"distgray, {n} local worker{'s' * (n > 1)}",
                    "s": t,
                    "rss": r["master_peak_rss_mb"],
                    "worker_rss": r["local_worker_peak_rss_mb"],
                    "load": r["load_s"],
                    "wall": r["wall_s"],
                    "save": r["save_s"],
                    "ratio": t_pillow / t,
                    "total": r["total_s"],
                    "recv": sum(x["recv_us"] for x in r["strip_log"]) / 1e6,
                    "compute": sum(x["compute_us"] for x in r["strip_log"]) / 1e6,
                    "strips": r["strips"],
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=ROOT / "test_images" / "sample_8k.png")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    if not args.image.exists():
        parser.error(f"{args.image} not found: run python utils/make_test_images.py first")
    loaded = load_image(args.image)
    assert loaded.pixels is not None
    rgb = loaded.pixels
    print(
        f"image: {args.image.name}, {loaded.width}x{loaded.height}; medians of {args.repeat} runs;"
        f" Python {sys.version.split()[0]}, NumPy {np.__version__}, Pillow {Image.__version__}\n"
    )

    kernel = bench_kernel(rgb, args.repeat)
    base = kernel[0][1]
    print("1. Kernel, one core, 8K array in memory\n\n| method | ms | vs Pillow |\n| --- | ---: | ---: |")
    for name, t in kernel:
        print(f"| {name} | {t * 1e3:.1f} | {t / base:.2f}x the time |")

    dist = bench_distributed(rgb, args.workers, args.repeat)
    base = dist[0][1]
    print("\n2. Distributed phase: RGB array in memory -> gray array\n")
    print("| method | ms | speed vs Pillow |\n| --- | ---: | ---: |")
    for name, t in dist:
        print(f"| {name} | {t * 1e3:.1f} | {base / t:.2f}x |")

    with tempfile.TemporaryDirectory() as tmp:
        e2e = bench_end_to_end(args.image, args.workers, args.repeat, Path(tmp))
    print("\n3. End to end, file -> file, fresh process each run (JPEG q95; PNG zlib level 6)\n")
    print("| output | who | s | speed vs Pillow | master load / distribute / save s | peak MB master / worker |")
    print("| --- | --- | ---: | ---: | --- | --- |")
    for r in e2e:
        if "ratio" in r:
            split = f"{r['load']:.2f} / {r['wall']:.2f} / {r['save']:.2f}"
            mem = f"{r['rss']:.0f} / {r['worker_rss']:.0f}"
            print(f"| {r['output']} | {r['who']} | {r['s']:.2f} | {r['ratio']:.2f}x | {split} | {mem} |")
        else:
            print(f"| {r['output']} | {r['who']} | {r['s']:.2f} | 1.00x | - | {r['rss']:.0f} |")
    print("\n4. Where the time goes inside the master process (median run; workers' seconds are summed over")
    print("   workers and overlap with each other; 'other' = start-up, waiting for workers, shutdown)\n")
    print("| output | who | decode + to array | distribute (workers: receive / compute) | encode + write | other |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in e2e:
        if "ratio" in r:
            other = r["total"] - r["load"] - r["wall"] - r["save"]
            print(
                f"| {r['output']} | {r['who']} | {r['load']:.2f} s | {r['wall']:.3f} s ({r['recv']:.3f} / "
                f"{r['compute']:.3f} s, {r['strips']} strips) | {r['save']:.2f} s | {other:.2f} s |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
