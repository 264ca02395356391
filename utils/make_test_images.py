#!/usr/bin/env python3
"""Derive the larger and odd-sized test images from the bundled 4K photo, deterministically.

    python utils/make_test_images.py              # writes test_images/sample_8k.png and sample_8k_odd.png
    python utils/make_test_images.py --batch      # also test_images/batch_4k/photo_00..39.jpg
    python utils/make_test_images.py --photo-8k   # also test_images/photo_8k.png and .jpg (benchmarks)

The 8K image is the 4K photo (test_images/sample_4k.jpg, CC-BY-4.0, Aitzol Berasategi, see
test_images/ATTRIBUTION.md) upscaled 2x with Lanczos; the odd-sized one is the same photo resized
to 7679x4321 (odd width and height, so strips and rows never divide evenly) with a little seeded
noise, so that no two neighbouring rows are alike. ``photo_8k`` is the 4K photo at its own
resolution, mirrored into a 2x2 mosaic of 7680x4320: an 8K image with a real photo's detail (an
upscale is smoother than any camera's 8K and compresses unusually well), saved as PNG (zlib 6,
Pillow's default) and JPEG (quality 95). Same Pillow + NumPy, same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "test_images" / "sample_4k.jpg"
SIZE_8K = (7680, 4320)
SIZE_ODD = (7679, 4321)


def make_8k(source: Path = SOURCE) -> Image.Image:
    with Image.open(source) as im:
        return im.convert("RGB").resize(SIZE_8K, Image.Resampling.LANCZOS)


def make_odd(source: Path = SOURCE, seed: int = 20261122) -> Image.Image:
    with Image.open(source) as im:
        base = np.asarray(im.convert("RGB").resize(SIZE_ODD, Image.Resampling.BILINEAR), dtype=np.int16)
    noise = np.random.default_rng(seed).integers(-3, 4, size=base.shape, dtype=np.int16)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def make_photo_8k(source: Path = SOURCE) -> Image.Image:
    with Image.open(source) as im:
        a = np.asarray(im.convert("RGB"))
    top = np.concatenate([a, a[:, ::-1]], axis=1)
    return Image.fromarray(np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0)), "RGB")


def make_batch(out_dir: Path, count: int = 40, source: Path = SOURCE) -> list[Path]:
    """``count`` different 4K JPEGs from the photo: shifted (wrapping), every other one mirrored,
    at qualities 85-95, so no two files are alike. Kept if already there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as im:
        base = np.asarray(im.convert("RGB"))
    paths = []
    for i in range(count):
        path = out_dir / f"photo_{i:02d}.jpg"
        if not path.exists():
            a = np.roll(base, shift=(i * 37, i * 211), axis=(0, 1))
            Image.fromarray(a[:, ::-1] if i % 2 else a).save(path, quality=85 + i % 11)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "test_images")
    parser.add_argument("--png-level", type=int, default=1, help="zlib level for the PNGs (default 1: fast)")
    parser.add_argument(
        "--batch", action="store_true", help="also test_images/batch_4k/: 40 4K JPEGs (for utils/bench.py)"
    )
    parser.add_argument(
        "--photo-8k", action="store_true", help="also test_images/photo_8k.png and .jpg (for utils/bench.py)"
    )
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.photo_8k:
        photo = make_photo_8k()
        for name, options in (("photo_8k.png", {"compress_level": 6}), ("photo_8k.jpg", {"quality": 95})):
            path = args.out_dir / name
            photo.save(path, **options)
            print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")
    if args.batch:
        paths = make_batch(args.out_dir / "batch_4k")
        print(f"{paths[0].parent}: {len(paths)} JPEGs, {sum(p.stat().st_size for p in paths) / 1e6:.1f} MB")
    for name, make in (("sample_8k.png", make_8k), ("sample_8k_odd.png", make_odd)):
        path = args.out_dir / name
        make().save(path, compress_level=args.png_level)
        print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
