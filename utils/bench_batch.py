#!/usr/bin/env python3
"""A folder of 4K JPEGs, file in -> grayscale JPEG out: sequential Pillow vs distgray, same run.

    python utils/make_test_images.py --batch && python utils/bench_batch.py [--repeat 3] [--workers 2]

Pillow: one process, for each file open, apply EXIF (in place), convert("L"), save JPEG quality 95;
measured twice: as a loop inside this (already running) process, and as a command (``python -c``,
interpreter start-up and imports included, like distgray's).
distgray: ``master_server.py --input-dir ... --local-workers N`` as a user runs it (a fresh
process each run, start-up and worker start-up included), JPEG quality 95 (its default), each
file sent whole to a worker. Every run writes a fresh output folder; distgray's outputs are
checked byte for byte against Pillow's. Prints medians and the ratio as a Markdown table.
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "test_images" / "batch_4k"


def pillow_sequential(files: list[Path], out: Path) -> float:
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            ImageOps.exif_transpose(im, in_place=True)  # no copy when there is nothing to turn
            im.convert("L").save(out / f"{f.stem}_gray.jpg", quality=95)
    return time.perf_counter() - t0


PILLOW_SCRIPT = """
import sys
from pathlib import Path
from PIL import Image, ImageOps
out = Path(sys.argv[1])
out.mkdir(parents=True)
for name in sys.argv[2:]:
    f = Path(name)
    with Image.open(f) as im:
        ImageOps.exif_transpose(im, in_place=True)
        im.convert("L").save(out / f"{f.stem}_gray.jpg", quality=95)
"""


def pillow_command(files: list[Path], out: Path) -> float:
    """The same loop as a command, as a user would run a Pillow script: interpreter start-up included."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", PILLOW_SCRIPT, str(out), *map(str, files)], check=True)
    return time.perf_counter() - t0


def distgray(folder: Path, out: Path, workers: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [
            *(sys.executable, str(ROOT / "master_server.py"), "--input-dir", str(folder), "--output-dir", str(out)),
            *("--local-workers", str(workers), "--host", "127.0.0.1", "--port", "0", "--no-dashboard"),
            *("--log-level", "warning"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=FOLDER)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    args = parser.parse_args(argv)
    # Python caches compiled modules next to them; where PYTHONDONTWRITEBYTECODE is set (as on the
    # development machine) distgray, installed editable, would be compiled again in every process
    # while Pillow's were compiled at install time. Compile once, as any normal install does.
    compileall.compile_dir(ROOT / "distgray", quiet=1)
    files = sorted(args.folder.glob("*.jpg"))
    if not files:
        parser.error(f"no JPEGs in {args.folder}: run python utils/make_test_images.py --batch")
    mp = sum(Image.open(f).width * Image.open(f).height for f in files) / 1e6
    times: dict[str, list[float]] = {"pillow": [], "pillow-command": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):  # interleaved, so all see the same machine
            times["pillow"].append(pillow_sequential(files, Path(tmp) / f"pillow{r}"))
            times["pillow-command"].append(pillow_command(files, Path(tmp) / f"pillowcmd{r}"))
            for n in args.workers:
                out = Path(tmp) / f"distgray{n}-{r}"
                times.setdefault(f"distgray{n}", []).append(distgray(args.folder, out, n))
                for f in files:  # the same bytes as Pillow's
                    if (out / f"{f.stem}_gray.jpg").read_bytes() != (
                        Path(tmp) / "pillow0" / f"{f.stem}_gray.jpg"
                    ).read_bytes():
                        raise SystemExit(f"{f.name}: distgray's output differs from Pillow's")
    base, base_cmd = statistics.median(times["pillow"]), statistics.median(times["pillow-command"])
    print(f"{len(files)} JPEGs, {mp:.0f} MP in all, from {args.folder}; medians of {args.repeat} runs\n")
    print("| who | s | files/s | MP/s | speed vs Pillow loop | speed vs Pillow command |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    names = {"pillow": "Pillow loop in this process (already imported)", "pillow-command": "Pillow loop as a command"}
    for name, ts in times.items():
        t = statistics.median(ts)
        who = names.get(name, f"distgray command, {name[8:]} local workers")
        print(f"| {who} | {t:.2f} | {len(files) / t:.1f} | {mp / t:.0f} | {base / t:.2f}x | {base_cmd / t:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
