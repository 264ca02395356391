#!/usr/bin/env python3
"""distgray against single-process Pillow, OpenCV and libvips: one command, one sitting.

    pip install -e '.[bench]'                                  # OpenCV, pyvips, matplotlib (optional)
    python utils/make_test_images.py --photo-8k --batch        # once: the inputs
    python utils/bench.py                                      # writes docs/BENCHMARK.md, docs/benchmark.png
    python utils/bench.py --dask                               # the built-in and Dask engines: docs/BENCHMARK_DASK.md
    python utils/bench.py --ops                                # Gaussian blur and Canny: docs/BENCHMARK_OPS.md

Cases (file in -> grayscale file out): an 8K photo JPEG -> JPEG (quality 95), the same photo as
PNG -> PNG at zlib 6 (Pillow's default) and at zlib 1 (OpenCV's default), the 4K photo
JPEG -> JPEG, and a folder of 40 different 4K JPEGs -> JPEGs.

Every tool runs as a fresh process per run (``python -c ...``, interpreter start-up and imports
included, as a person would run it), in turns, so all see the same machine; medians of
``--repeat`` runs; ratios against Pillow from the same sitting. distgray runs as
``master_server.py --local-workers N --no-dashboard`` (workers started by the master, each run).
It is also timed *warm*: a master with N workers already connected converting one image after
another (the service case: ``--serve`` or a batch), against Pillow converting in a running process.
Peak memory is the largest VmHWM seen for the process (and, for distgray, its worker processes)
while it runs. Outputs are compared with Pillow's: "= Pillow" means identical decoded pixels.

A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
IMAGES = ROOT / "test_images"

PILLOW = """
import sys
from pathlib import Path
from PIL import Image
level, pairs = int(sys.argv[1]), sys.argv[2:]
for src, dst in zip(pairs[::2], pairs[1::2]):
    with Image.open(src) as im:
        gray = im.convert("L")
    gray.save(dst, **({"compress_level": level} if dst.endswith(".png") else {"quality": 95}))
"""
OPENCV = """
import sys
import cv2
level, pairs = int(sys.argv[1]), sys.argv[2:]
for src, dst in zip(pairs[::2], pairs[1::2]):
    gray = cv2.cvtColor(cv2.imread(src, cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY)
    params = [cv2.IMWRITE_PNG_COMPRESSION, level] if dst.endswith(".png") else [cv2.IMWRITE_JPEG_QUALITY, 95]
    cv2.imwrite(dst, gray, params)
"""
VIPS = """
import sys
import pyvips
level, pairs = int(sys.argv[1]), sys.argv[2:]
for src, dst in zip(pairs[::2], pairs[1::2]):
    gray = pyvips.Image.new_from_file(src, access="sequential").colourspace("b-w")
    gray.write_to_file(dst, **({"compression": level} if dst.endswith(".png") else {"Q": 95}))
"""
TOOLS = {"Pillow": PILLOW, "OpenCV": OPENCV, "libvips": VIPS}
IMPORTS = {"Pillow": "PIL", "OpenCV": "cv2", "libvips": "pyvips"}


@dataclass(frozen=True)
class Case:
    name: str
    inputs: tuple[Path, ...]
    suffix: str
    level: int = 6
    folder: bool = False

    def available(self) -> bool:
        return all(p.exists() for p in self.inputs) and bool(self.inputs)


def cases() -> dict[str, Case]:
    batch = tuple(sorted((IMAGES / "batch_4k").glob("*.jpg")))
    return {
        "8k-jpeg": Case("8K JPEG -> JPEG q95", (IMAGES / "photo_8k.jpg",), ".jpg"),
        "8k-png": Case("8K PNG -> PNG zlib 6", (IMAGES / "photo_8k.png",), ".png", 6),
        "8k-png-l1": Case("8K PNG -> PNG zlib 1", (IMAGES / "photo_8k.png",), ".png", 1),
        "4k-jpeg": Case("4K JPEG -> JPEG q95", (IMAGES / "sample_4k.jpg",), ".jpg"),
        "folder": Case(f"{len(batch)} 4K JPEGs -> JPEGs", batch, ".jpg", folder=True),
    }


@dataclass
class Row:
    tool: str
    how: str
    times: list[float] = field(default_factory=list)
    peak_main: list[float] = field(default_factory=list)
    peak_workers: list[float] = field(default_factory=list)
    out_bytes: int = 0
    same: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)


# --------------------------------------------------------------------------- measuring
def _vmhwm(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


class PeakWatcher:
    """Largest VmHWM of a process and (separately) of any of its descendants, polled every 10 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.main, self.others = pid, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.main = max(self.main, _vmhwm(self.pid) or 0.0)
            todo = _children(self.pid)
            while todo:
                child = todo.pop()
                self.others = max(self.others, _vmhwm(child) or 0.0)
                todo.extend(_children(child))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_command(argv: list[str]) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watcher = PeakWatcher(proc.pid)
    _, err = proc.communicate()
    took = time.perf_counter() - t0
    watcher.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed ({proc.returncode}):\n{err.decode(errors='replace')}")
    return took, watcher.main, watcher.others


def outputs(case: Case, out: Path) -> list[Path]:
    return [out / f"{p.stem}_gray{case.suffix}" for p in case.inputs]


def tool_argv(tool: str, case: Case, out: Path) -> list[str]:
    pairs = [str(x) for src, dst in zip(case.inputs, outputs(case, out), strict=True) for x in (src, dst)]
    return [sys.executable, "-c", TOOLS[tool], str(case.level), *pairs]


def distgray_argv(case: Case, out: Path, workers: int) -> list[str]:
    common = ["--local-workers", str(workers), "--no-dashboard", "--host", "127.0.0.1", "--port", "0"]
    common += ["--png-level", str(case.level), "--log-level", "warning"]
    if case.folder:
        where = ["--input-dir", str(case.inputs[0].parent), "--output-dir", str(out)]
    else:
        where = ["--image", str(case.inputs[0]), "--output", str(outputs(case, out)[0])]
    return [sys.executable, str(ROOT / "master_server.py"), *where, *common]


class Warm:
    """A running master with N local workers, converting one image after another."""

    def __init__(self, workers: int, level: int) -> None:
        from distgray.cli.local_workers import spawn_local_workers
        from distgray.engines.cluster import ClusterEngine
        from distgray.jobs.service import Service, ServiceOptions
        from distgray.master.server import Master, MasterConfig

        self.master = Master(MasterConfig(host="127.0.0.1", port=0, token=b"bench"))
        port = self.master.start()[1]
        self.procs = spawn_local_workers(workers, port, "bench", "warning", os.environ)
        self.service = Service(ClusterEngine(self.master, self.procs), ServiceOptions(png_level=level, previews=False))
        if not self.master.wait_for_workers(workers, timeout=60):
            raise SystemExit("workers did not join")
        self.watchers = [PeakWatcher(p.pid) for p in self.procs]

    def convert(self, case: Case, out: Path) -> float:
        t0 = time.perf_counter()
        for src, dst in zip(case.inputs, outputs(case, out), strict=True):
            fmt = "PNG" if case.suffix == ".png" else "JPEG"
            self.service.process(self.service.enqueue(src, dst, fmt), quiet=True)
        return time.perf_counter() - t0

    def close(self) -> float:
        from distgray.cli.local_workers import reap

        peaks = [w.main for w in self.watchers]
        for w in self.watchers:
            w.stop()
        self.master.close()
        reap(self.procs)
        return max(peaks)


def pillow_in_process(case: Case, out: Path) -> float:
    t0 = time.perf_counter()
    for src, dst in zip(case.inputs, outputs(case, out), strict=True):
        with Image.open(src) as im:
            gray = im.convert("L")
        gray.save(dst, **({"compress_level": case.level} if case.suffix == ".png" else {"quality": 95}))
    return time.perf_counter() - t0


def compare(case: Case, out: Path, reference: Path) -> str:
    """How the outputs in ``out`` compare with Pillow's in ``reference``: decoded pixels."""
    differ, total = 0, 0
    for mine, theirs in zip(outputs(case, out), outputs(case, reference), strict=True):
        a, b = np.asarray(Image.open(mine).convert("L")), np.asarray(Image.open(theirs))
        if a.shape != b.shape:
            return "wrong size"
        differ += int(np.count_nonzero(a != b))
        total += a.size
    return "= Pillow" if differ == 0 else f"{100 * differ / total:.2f}% px differ"


# --------------------------------------------------------------------------- the sitting
def bench_case(key: str, case: Case, repeat: int, workers: list[int], tmp: Path) -> list[Row]:
    tools = [t for t in TOOLS if t == "Pillow" or _importable(IMPORTS[t])]
    rows = {t: Row(t, "command") for t in tools}
    for n in workers:
        rows[f"distgray {n}"] = Row(f"distgray, {n} worker{'s' * (n > 1)}", "command")
    reference = tmp / f"{key}-Pillow-0"
    for r in range(repeat):
        for name, row in rows.items():
            out = tmp / f"{key}-{name.replace(' ', '')}-{r}"
            out.mkdir()
            if name in TOOLS:
                took, main, others = run_command(tool_argv(name, case, out))
            else:
                took, main, others = run_command(distgray_argv(case, out, int(name.split()[1])))
            row.times.append(took)
            row.peak_main.append(main)
            row.peak_workers.append(others)
            if r == 0:
                row.out_bytes = sum(p.stat().st_size for p in outputs(case, out))
                row.same = "reference" if name == "Pillow" else compare(case, out, reference)
            elif out != reference:
                shutil.rmtree(out)
        print(f"  {key}: run {r + 1}/{repeat} done", file=sys.stderr)
    result = list(rows.values())
    if not case.folder:  # warm: the service case
        pil = Row("Pillow", "in a running process")
        for r in range(repeat):
            out = tmp / f"{key}-warm-pillow-{r}"
            out.mkdir()
            pil.times.append(pillow_in_process(case, out))
            if r == 0:
                pil.out_bytes = sum(p.stat().st_size for p in outputs(case, out))
                pil.same = compare(case, out, reference)
        result.append(pil)
        for n in workers:
            warm = Warm(n, case.level)
            row = Row(f"distgray, {n} worker{'s' * (n > 1)}", "workers already running")
            for r in range(repeat):
                out = tmp / f"{key}-warm-{n}-{r}"
                out.mkdir()
                row.times.append(warm.convert(case, out))
                if r == 0:
                    row.same = compare(case, out, reference)
                    row.out_bytes = sum(p.stat().st_size for p in outputs(case, out))
            row.peak_workers.append(warm.close())
            result.append(row)
    return result


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- reporting
def table(case: Case, rows: list[Row]) -> list[str]:
    base = {r.how: r.median for r in rows if r.tool == "Pillow"}
    base["workers already running"] = base.get("in a running process", 0.0)
    lines = [
        f"### {case.name}",
        "",
        "| tool | run as | median s | speed vs Pillow | output MB | output | peak MB (process)"
        " | peak MB (each worker) |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        ratio = base[r.how] / r.median
        main = f"{max(r.peak_main):.0f}" if r.peak_main else ""
        workers = f"{max(r.peak_workers):.0f}" if r.peak_workers and max(r.peak_workers) else ""
        lines.append(
            f"| {r.tool} | {r.how} | {r.median:.3f} | **{ratio:.2f}x** | {r.out_bytes / 1e6:.1f} | {r.same} "
            f"| {main} | {workers} |"
        )
    return [*lines, ""]


def plot(results: dict[str, tuple[Case, list[Row]]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [c.name for c, _ in results.values()]
    series: dict[str, list[float]] = {}
    for i, (_case, rows) in enumerate(results.values()):
        base = {r.how: r.median for r in rows if r.tool == "Pillow"}
        base["workers already running"] = base.get("in a running process", 0.0)
        for r in rows:
            label = f"{r.tool} ({'warm' if r.how != 'command' else 'cold'})"
            values = series.setdefault(label, [0.0] * len(names))
            values[i] = base[r.how] / r.median
    fig, ax = plt.subplots(figsize=(12, 5.5))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(np.arange(len(names)) + i * width, values, width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(names)) + width * (len(series) - 1) / 2, names)
    ax.set_ylabel("speed vs Pillow (higher is faster)")
    ax.set_title("distgray vs single-process tools, same machine, same sitting (medians)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


CEILING = """
import os, sys, time, zlib
data = bytes(range(256)) * 16384 + os.urandom(1 << 22)
t = time.perf_counter()
for _ in range(4):
    zlib.compress(data, 6)
print(time.perf_counter() - t)
"""


def parallel_ceiling(processes: int, repeat: int = 3) -> float:
    """How much faster this machine does ``processes`` equal CPU-bound jobs at once than one after
    another (zlib in separate processes, no I/O): the most any parallel tool can gain here."""

    def batch(n: int) -> float:
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", CEILING], stdout=subprocess.DEVNULL) for _ in range(n)]
        for p in procs:
            p.wait()
        return time.perf_counter() - t0

    one = statistics.median(batch(1) for _ in range(repeat))
    many = statistics.median(batch(processes) for _ in range(repeat))
    return processes * one / many


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs per tool and case (default 5); medians")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="local workers (default 1 2 4)")
    parser.add_argument("--cases", nargs="+", choices=list(cases()), default=list(cases()), help="default: all")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARK.md", help="the Markdown report")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "benchmark.png", help="the bar chart")
    parser.add_argument(
        "--dask",
        action="store_true",
        help="instead: the built-in engine and the Dask engine (--engine dask) side by side, with Pillow, on the"
        " 8K PNG, the 8K JPEG and the 40-file batch, and Dask's per-task overhead (utils/bench_dask.py; needs"
        " pip install 'distgray[dask]'; writes docs/BENCHMARK_DASK.md; --repeat and the first --workers apply)",
    )
    parser.add_argument(
        "--ops",
        action="store_true",
        help="instead: operations after grayscale (Gaussian blur radius 4, Canny) on the 8K photo, distgray with"
        " each --workers count against Pillow/OpenCV in one process (utils/bench_ops.py; writes"
        " docs/BENCHMARK_OPS.md)",
    )
    args = parser.parse_args(argv)
    if args.ops:
        from tests.conftest import load_utils

        workers = [str(n) for n in args.workers]
        return int(load_utils("bench_ops").main(["--repeat", str(args.repeat), "--workers", *workers]))
    if args.dask:
        from tests.conftest import load_utils

        return int(load_utils("bench_dask").main(["--repeat", str(args.repeat), "--workers", str(args.workers[0])]))
    chosen = {k: v for k, v in cases().items() if k in args.cases}
    missing = [k for k, c in chosen.items() if not c.available()]
    if missing:
        parser.error(f"inputs missing for {missing}: run python utils/make_test_images.py --photo-8k --batch")
    # This machine sets PYTHONDONTWRITEBYTECODE: an editable install would be compiled again in
    # every process, while Pillow's modules were compiled when installed. Compile once.
    compileall.compile_dir(ROOT / "distgray", quiet=1)
    ceilings = {n: parallel_ceiling(n) for n in (2, 4)}
    results: dict[str, tuple[Case, list[Row]]] = {}
    with tempfile.TemporaryDirectory(prefix="distgray-bench-") as tmp:
        for key, case in chosen.items():
            print(f"{case.name}...", file=sys.stderr)
            results[key] = (case, bench_case(key, case, args.repeat, args.workers, Path(tmp)))
    command = "python utils/bench.py" + ("" if argv is None else " " + " ".join(argv))
    lines = [
        "# Benchmark: distgray vs Pillow, OpenCV and libvips",
        "",
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {_versions()}. Medians of {args.repeat} runs.",
        "",
        "*command*: a fresh process per run (interpreter start-up, imports, and for distgray its",
        "workers' start-up included). *in a running process* / *workers already running*: Pillow",
        "called in the benchmark's own process, against a distgray master whose workers are",
        "connected (the status-page previews off), each converting one image after another.",
        "*speed vs Pillow*: Pillow's median / this median, each against Pillow run the same way.",
        "Peak memory: the highest VmHWM seen while it ran (distgray: master; each worker).",
        "",
        "This machine's parallel ceiling, measured in the same sitting: 2 (4) equal CPU-bound processes"
        f" (zlib, no I/O) finish {ceilings[2]:.2f}x ({ceilings[4]:.2f}x) faster together than one after"
        " another. No tool can gain more than that from parallel work here.",
        "",
    ]
    for case, rows in results.values():
        lines += table(case, rows)
    if plot(results, args.plot):
        lines += [f"![speed vs Pillow]({args.plot.name})", ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _versions() -> str:
    parts = [f"Pillow {Image.__version__}", f"NumPy {np.__version__}"]
    for name, module in (("OpenCV", "cv2"), ("pyvips", "pyvips")):
        try:
            mod = __import__(module)
            parts.append(f"{name} {mod.__version__}")
        except ImportError:
            parts.append(f"{name} not installed")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
