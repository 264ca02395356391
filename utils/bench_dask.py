#!/usr/bin/env python3
"""The two engines side by side: the built-in cluster and Dask, against Pillow, in one sitting.

    pip install -e '.[test]'                               # Dask (distributed) comes with the test extras
    python utils/make_test_images.py --photo-8k --batch    # once: the inputs
    python utils/bench_dask.py                             # writes docs/BENCHMARK_DASK.md
    python utils/bench.py --dask                           # the same, from the main benchmark

Cases: the 8K photo PNG -> PNG (zlib 1), the 8K photo JPEG -> JPEG (quality 95), a folder of 40
4K JPEGs -> JPEGs (one whole-file task each). Each run is a fresh ``master_server.py`` process,
as a person runs it, in turns (Pillow, built-in, Dask, Pillow, ...), so all see the same machine:

* Pillow: ``convert("L")`` in one process;
* built-in: ``--local-workers N`` (its workers are forked by each run, ready in milliseconds);
* Dask: ``--engine dask --scheduler-address`` of a cluster started once from Dask's command line
  (``dask scheduler`` + N ``dask worker --nthreads 1``), as a Dask user has one running.

Medians of ``--repeat`` runs. Every output is checked against Pillow's pixels. Dask's per-task
overhead is measured on the same cluster: the round trip of a trivial task, and of a task that
receives 4 MB (a strip) by ``scatter(direct=True)``.

A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "test_images"

sys.path.insert(0, str(ROOT))

from tests.conftest import load_utils  # noqa: E402
from tests.daskcli import DaskCLI  # noqa: E402

PILLOW = load_utils("bench").PILLOW  # the same single-process Pillow as utils/bench.py


def cases() -> dict[str, tuple[str, list[Path], str, bool]]:
    batch = sorted((IMAGES / "batch_4k").glob("*.jpg"))
    return {
        "8k-png": ("8K PNG -> PNG zlib 1", [IMAGES / "photo_8k.png"], ".png", False),
        "8k-jpeg": ("8K JPEG -> JPEG q95", [IMAGES / "photo_8k.jpg"], ".jpg", False),
        "folder": (f"{len(batch)} 4K JPEGs -> JPEGs", batch, ".jpg", True),
    }


def outputs(inputs: list[Path], suffix: str, out: Path) -> list[Path]:
    return [out / f"{p.stem}_gray{suffix}" for p in inputs]


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{argv[:4]}... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return took


def master_argv(inputs: list[Path], suffix: str, folder: bool, out: Path, engine: list[str]) -> list[str]:
    where = (
        ["--input-dir", str(inputs[0].parent), "--output-dir", str(out)]
        if folder
        else ["--image", str(inputs[0]), "--output", str(outputs(inputs, suffix, out)[0])]
    )
    common = ["--no-dashboard", "--host", "127.0.0.1", "--port", "0", "--png-level", "1", "--log-level", "warning"]
    return [sys.executable, str(ROOT / "master_server.py"), *where, *common, *engine]


def same_as_pillow(inputs: list[Path], suffix: str, out: Path, reference: Path) -> bool:
    for mine, theirs in zip(outputs(inputs, suffix, out), outputs(inputs, suffix, reference), strict=True):
        if not np.array_equal(np.asarray(Image.open(mine)), np.asarray(Image.open(theirs))):
            return False
    return True


class Cluster(DaskCLI):
    """The cluster of ``tests/daskcli.py``, and Dask's own per-task overhead measured on it."""

    def overhead_ms(self, n: int = 300) -> tuple[float, float]:
        """Median round trip of a trivial task, and of one that gets 4 MB by scatter(direct=True)."""
        from distributed import Client

        def nothing(x: object) -> int:
            return 0

        strip = np.zeros(4 << 20, dtype=np.uint8)
        with Client(self.address, timeout=30) as client:
            trivial, with_data = [], []
            for i in range(n):
                t0 = time.perf_counter()
                client.submit(nothing, i, pure=False).result()
                trivial.append(time.perf_counter() - t0)
            for _ in range(max(20, n // 10)):
                t0 = time.perf_counter()
                data = client.scatter(strip, direct=True, hash=False)
                client.submit(nothing, data, pure=False).result()
                with_data.append(time.perf_counter() - t0)
                del data
        return statistics.median(trivial) * 1e3, statistics.median(with_data) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs per engine and case (default 5); medians")
    parser.add_argument("--workers", type=int, default=2, help="workers of each engine (default 2)")
    parser.add_argument("--cases", nargs="+", choices=list(cases()), default=list(cases()))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARK_DASK.md")
    args = parser.parse_args(argv)
    # As utils/bench.py: with PYTHONDONTWRITEBYTECODE set, compile the editable install once.
    compileall.compile_dir(ROOT / "distgray", quiet=1)
    tmp = Path(tempfile.mkdtemp(prefix="distgray-bench-dask-"))
    cluster = Cluster(tmp, args.workers)
    lines = [
        "# The built-in engine and Dask (utils/bench_dask.py)",
        "",
        f"`python utils/bench_dask.py --repeat {args.repeat} --workers {args.workers}`, {os.cpu_count()} cores,"
        f" {args.workers} workers per engine (Dask: a cluster started once from its CLI, one thread a worker)."
        " Fresh `master_server.py` process per run, in turns; medians.",
        "",
        "| case | Pillow | built-in | Dask | Dask / built-in | outputs = Pillow |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    try:
        for key in args.cases:
            title, inputs, suffix, folder = cases()[key]
            if not inputs or not all(p.exists() for p in inputs):
                print(f"{key}: inputs missing (python utils/make_test_images.py --photo-8k --batch)", file=sys.stderr)
                continue
            times: dict[str, list[float]] = {"Pillow": [], "built-in": [], "Dask": []}
            same = True
            reference = tmp / f"{key}-pillow-ref"
            reference.mkdir()
            pairs = [str(x) for s, d in zip(inputs, outputs(inputs, suffix, reference), strict=True) for x in (s, d)]
            timed([sys.executable, "-c", PILLOW, "1", *pairs])
            for r in range(args.repeat):
                for name in times:
                    out = tmp / f"{key}-{name}-{r}"
                    out.mkdir()
                    if name == "Pillow":
                        pairs = [
                            str(x) for s, d in zip(inputs, outputs(inputs, suffix, out), strict=True) for x in (s, d)
                        ]
                        times[name].append(timed([sys.executable, "-c", PILLOW, "1", *pairs]))
                    else:
                        engine = (
                            ["--local-workers", str(args.workers)]
                            if name == "built-in"
                            else ["--engine", "dask", "--scheduler-address", cluster.address]
                        )
                        times[name].append(timed(master_argv(inputs, suffix, folder, out, engine)))
                        if r == 0:
                            same = same and same_as_pillow(inputs, suffix, out, reference)
                    shutil.rmtree(out)
                print(f"{key}: run {r + 1}/{args.repeat}", {k: round(v[-1], 3) for k, v in times.items()})
            med = {k: statistics.median(v) for k, v in times.items()}
            spread = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in times.items()}
            lines.append(
                f"| {title} | {med['Pillow']:.2f} s ({spread['Pillow']}) | {med['built-in']:.2f} s"
                f" ({spread['built-in']}) | {med['Dask']:.2f} s ({spread['Dask']}) |"
                f" {med['Dask'] / med['built-in']:.2f}x | {'yes' if same else '**NO**'} |"
            )
        trivial, with_data = cluster.overhead_ms()
        lines += [
            "",
            f"Dask's per-task overhead on this cluster: {trivial:.2f} ms for a trivial task's round trip (median"
            f" of 300), {with_data:.2f} ms for one that receives 4 MB by `scatter(direct=True)` first.",
            "",
        ]
    finally:
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
