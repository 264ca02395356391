#!/usr/bin/env python3
"""Operations after grayscale on the 8K photo: distgray with 1, 2 and 4 local workers against the
libraries in one process (Pillow's Gaussian blur; OpenCV's Canny on Pillow's gray), in one sitting.

    python utils/make_test_images.py --photo-8k    # once: the input
    python utils/bench_ops.py                      # writes docs/BENCHMARK_OPS.md
    python utils/bench.py --ops                    # the same, from the main benchmark

Each run is a fresh process, as a person runs it, in turns (one process, then distgray with 1, 2,
4 workers, then again): the one-process reference decodes the photo, converts it with Pillow's
``convert("L")``, runs the operation and saves a PNG at zlib level 1; distgray runs
``master_server.py --image ... --op ... --local-workers N --png-level 1 --no-dashboard``. Also
timed *warm*: the operation alone on the decoded gray image in one process, against a master
whose workers are already connected converting the decoded pixels with the chain (no file
reading or writing on either side). Medians of ``--repeat`` runs; every output is compared with
the one-process reference's pixels. The halo's cost is the rows sent beyond each strip's own, as
a share of the image's rows, read from the ``--report`` of each distgray run. The machine's
parallel ceiling (2 and 4 equal CPU-bound processes) is measured in the same sitting.

A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import load_utils  # noqa: E402

BENCH = load_utils("bench")
PHOTO = ROOT / "test_images" / "photo_8k.jpg"
CASES = {"gaussian": ("Gaussian blur, radius 4", "gaussian:4"), "canny": ("Canny 50,150", "canny:50,150")}

ONE_PROCESS = """
import sys
from PIL import Image, ImageFilter
src, dst, op = sys.argv[1:4]
gray = Image.open(src).convert("L")
if op == "gaussian:4":
    out = gray.filter(ImageFilter.GaussianBlur(4))
else:
    import cv2
    import numpy as np
    out = Image.fromarray(cv2.Canny(np.asarray(gray), 50.0, 150.0))
out.save(dst, compress_level=1)
"""


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{argv[:4]}... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return took


def halo_share(report: Path, support: int) -> tuple[float, int]:
    """Rows sent beyond the strips' own, as a share of the image's rows; and the strips' count."""
    figures = json.loads(report.read_text())
    height = figures["height"]
    extra = sum(min(support, s["row_start"]) + min(support, height - s["row_stop"]) for s in figures["strip_log"])
    return extra / height, figures["strips"]


def warm(op: str, workers: list[int], repeat: int) -> dict[str, list[float]]:
    """The operation alone on decoded pixels: in this process, and on running workers."""
    from distgray.cli.local_workers import reap, spawn_local_workers
    from distgray.imaging import ops
    from distgray.master.server import Master, MasterConfig

    pixels = np.asarray(Image.open(PHOTO).convert("RGB"))
    chain = ops.parse_chain([op])
    in_strips, _ = ops.split(chain)
    times: dict[str, list[float]] = {"one process": []}
    gray = Image.fromarray(pixels).convert("L")
    for _ in range(repeat):
        t0 = time.perf_counter()
        ops.apply_image(gray, chain)
        times["one process"].append(time.perf_counter() - t0)
    for n in workers:
        master = Master(MasterConfig(host="127.0.0.1", port=0, token=b"bench-ops"))
        port = master.start()[1]
        procs = spawn_local_workers(n, port, "bench-ops", "warning", os.environ)
        try:
            if not master.wait_for_workers(n, timeout=60):
                raise SystemExit("workers did not join")
            shared, segment = master.share(pixels)
            key = f"distgray {n}"
            times[key] = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                job = master.submit(shared, "warm", segment=segment, ops=ops.spell(in_strips))
                job.wait()
                out = ops.canny_finish(job.output) if ops.ends_in_canny(in_strips) else job.output
                times[key].append(time.perf_counter() - t0)
                assert job.failure is None, job.failure
            want = np.asarray(ops.apply_image(gray, chain))
            if not np.array_equal(out, want):
                raise SystemExit(f"warm {op} with {n} workers: not the one-process pixels")
            if segment is not None:
                segment.close()
        finally:
            master.close("bench over")
            reap(procs)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each (default 5); medians")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="local workers (default 1 2 4)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARK_OPS.md")
    args = parser.parse_args(argv)
    if not PHOTO.exists():
        parser.error(f"{PHOTO} is missing: python utils/make_test_images.py --photo-8k")
    compileall.compile_dir(ROOT / "distgray", quiet=1)  # as utils/bench.py (PYTHONDONTWRITEBYTECODE)
    from distgray.imaging import ops

    ceilings = {n: BENCH.parallel_ceiling(n) for n in (2, 4)}
    command = "python utils/bench_ops.py" + ("" if argv is None else " " + " ".join(argv))
    lines = [
        "# Operations after grayscale: distgray vs one process (utils/bench_ops.py)",
        "",
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores; the 8K photo"
        f" ({PHOTO.name}, 7680x4320) -> PNG zlib 1. Medians of {args.repeat} runs, in turns.",
        "",
        f"This machine's parallel ceiling in the same sitting: {ceilings[2]:.2f}x for 2 equal CPU-bound"
        f" processes, {ceilings[4]:.2f}x for 4.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="distgray-bench-ops-") as tmp_:
        tmp = Path(tmp_)
        for key in args.cases:
            title, op = CASES[key]
            support = ops.support(ops.split(ops.parse_chain([op]))[0])
            names = ["one process", *(f"distgray {n}" for n in args.workers)]
            times: dict[str, list[float]] = {n: [] for n in names}
            reference = tmp / f"{key}-reference.png"
            timed([sys.executable, "-c", ONE_PROCESS, str(PHOTO), str(reference), op])
            want = np.asarray(Image.open(reference))
            same, halos = True, {}
            for r in range(args.repeat):
                for name in names:
                    out = tmp / f"{key}-{name.replace(' ', '')}-{r}.png"
                    if name == "one process":
                        times[name].append(timed([sys.executable, "-c", ONE_PROCESS, str(PHOTO), str(out), op]))
                    else:
                        n = name.split()[1]
                        report = tmp / f"{key}-{n}-{r}.json"
                        argv_ = [sys.executable, str(ROOT / "master_server.py"), "--image", str(PHOTO)]
                        argv_ += ["--output", str(out), "--op", op, "--local-workers", n, "--png-level", "1"]
                        argv_ += ["--no-dashboard", "--host", "127.0.0.1", "--port", "0", "--log-level", "warning"]
                        times[name].append(timed([*argv_, "--report", str(report)]))
                        halos[name] = halo_share(report, support)
                        if r == 0:
                            same = same and np.array_equal(np.asarray(Image.open(out)), want)
                    out.unlink(missing_ok=True)
                print(f"{key}: run {r + 1}/{args.repeat}", {k: round(v[-1], 3) for k, v in times.items()})
            warm_times = warm(op, args.workers, args.repeat)
            base, warm_base = statistics.median(times["one process"]), statistics.median(warm_times["one process"])
            lines += [
                f"## {title} (`--op {op}`: {support} rows of halo each way)",
                "",
                "| how | fresh command | speed vs one process | operation alone (warm) | speed vs one process |"
                " halo: extra rows (strips) |",
                "| --- | ---: | ---: | ---: | ---: | ---: |",
            ]
            for name in names:
                fresh, hot = statistics.median(times[name]), statistics.median(warm_times[name])
                share, strips = halos.get(name, (0.0, 1))
                halo = "-" if name == "one process" else f"{100 * share:.2f}% ({strips})"
                label = name if name == "one process" else f"distgray, {name.split()[1]} worker"
                label += "s" if name not in ("one process", "distgray 1") else ""
                lines.append(
                    f"| {label} | {fresh:.2f} s | {base / fresh:.2f}x | {hot:.3f} s | {warm_base / hot:.2f}x | {halo} |"
                )
            lines += ["", f"Outputs equal the one-process reference's pixels: {'yes' if same else '**NO**'}.", ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
