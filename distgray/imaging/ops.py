"""Operations after grayscale (issue 17's first part): Pillow's own filters, and how many rows of
context each needs so that a strip computed with that many extra rows above and below (its
*halo*), then cropped, equals the operation on the whole image.

Not yet on the command line or the wire: this module is the kernel the strips will run, with
its proofs in ``tests/unit/test_ops.py``. Each operation is Pillow's call on an ``L`` image, so a
strip's result is Pillow's arithmetic, not a copy of it.

Supports, from how Pillow computes each (``libImaging/Filter.c``, ``BoxBlur.c``, ``RankFilter``):

* the 3x3 and 5x5 kernels (``blur``, ``contour``, ...): ``size // 2``. Pillow copies the outer
  ``size // 2`` rows unfiltered; a strip's halo reaches the real edge or is cropped, so the
  copied rows are the same ones either way.
* ``box:R``: ``ceil(R)``: one box pass reaches ``floor(R)`` whole pixels and one more, weighted by
  the fractional part; edges are clamped, which only changes halo rows.
* ``gaussian:R``: Pillow's Gaussian blur is three box passes, each of the box radius
  ``l + a`` that ``_gaussian_blur_radius`` derives from ``R``; a pass reads ``l + 1`` rows each
  way: ``3 * (l + 1)``, more than ``R`` (radius 4: 12 rows).
* ``unsharp:R,PERCENT,THRESHOLD``: the Gaussian blur of radius R inside it.
* ``median:SIZE``: ``SIZE // 2`` (Pillow pads by replicating the edges, again only in the halo).

A chain's support is the sum of its operations' supports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from distgray.imaging.kernel import U8Array

#: Pillow's built-in kernels by the names the command line will use.
KERNELS: dict[str, type[ImageFilter.BuiltinFilter]] = {
    "blur": ImageFilter.BLUR,
    "contour": ImageFilter.CONTOUR,
    "detail": ImageFilter.DETAIL,
    "edge_enhance": ImageFilter.EDGE_ENHANCE,
    "edge_enhance_more": ImageFilter.EDGE_ENHANCE_MORE,
    "emboss": ImageFilter.EMBOSS,
    "find_edges": ImageFilter.FIND_EDGES,
    "sharpen": ImageFilter.SHARPEN,
    "smooth": ImageFilter.SMOOTH,
    "smooth_more": ImageFilter.SMOOTH_MORE,
}
PARAMETRIC = ("box:R", "gaussian:R", "unsharp:R,PERCENT,THRESHOLD", "median:SIZE")


@dataclass(frozen=True)
class Op:
    """One operation: its name as written (``gaussian:4``), the rows of context it needs above
    and below (``support``), and Pillow's call on an ``L`` image."""

    spec: str
    support: int
    filter: Callable[[Image.Image], Image.Image]

    def __call__(self, image: Image.Image) -> Image.Image:
        return self.filter(image)


def gaussian_box_whole(radius: float, passes: int = 3) -> int:
    """The whole part ``l`` of the box radius ``l + a`` (0 <= a < 1) of each of Pillow's
    ``passes`` box blurs for a Gaussian of ``radius`` (``_gaussian_blur_radius`` in Pillow's
    ``BoxBlur.c``), taken in both float and double so that a rounding difference can only make
    it larger."""
    found = 0
    for t in (np.float32, np.float64):
        sigma2 = t(radius) * t(radius) / t(passes)
        found = max(found, int(np.floor((np.sqrt(t(12.0) * sigma2 + t(1.0)) - t(1.0)) / t(2.0))))
    return found


def gaussian_support(radius: float) -> int:
    """Each box pass reads ``l + 1`` rows each way (the last one weighted by ``a``): three passes."""
    return 3 * (gaussian_box_whole(radius) + 1) if radius > 0 else 0


def parse(spec: str) -> Op:
    """``NAME`` or ``NAME:ARGS`` to an Op. ValueError naming what exists for anything else."""
    name, _, raw = spec.partition(":")
    name = name.strip().lower()
    args = [a for a in raw.split(",") if a.strip()] if raw else []
    if name in KERNELS:
        if args:
            raise ValueError(f"{spec!r}: {name} takes no arguments")
        kernel = KERNELS[name]
        size = kernel.filterargs[0][0]
        return Op(spec, size // 2, _with(kernel()))
    try:
        values = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"{spec!r}: arguments must be numbers") from None
    if name in ("box", "gaussian") and len(values) == 1 and values[0] >= 0:
        r = values[0]
        if name == "box":
            return Op(spec, math.ceil(r), _with(ImageFilter.BoxBlur(r)))
        return Op(spec, gaussian_support(r), _with(ImageFilter.GaussianBlur(r)))
    if name == "unsharp" and len(values) == 3 and values[0] >= 0:
        r, percent, threshold = values[0], int(values[1]), int(values[2])
        return Op(spec, gaussian_support(r), _with(ImageFilter.UnsharpMask(r, percent, threshold)))
    if name == "median" and len(values) == 1 and values[0] >= 1 and values[0] % 2 == 1:
        size = int(values[0])
        return Op(spec, size // 2, _with(ImageFilter.MedianFilter(size)))
    known = ", ".join([*KERNELS, *PARAMETRIC])
    raise ValueError(f"{spec!r}: not an operation with those arguments (known: {known})")


def _with(f: ImageFilter.Filter) -> Callable[[Image.Image], Image.Image]:
    def run(image: Image.Image) -> Image.Image:
        return image.filter(f)

    return run


def support(chain: Sequence[Op]) -> int:
    return sum(op.support for op in chain)


def apply(gray: U8Array, chain: Sequence[Op]) -> U8Array:
    """The chain on a whole gray image (rows x width), as one process would run it."""
    image = Image.fromarray(np.ascontiguousarray(gray), mode="L")
    for op in chain:
        image = op(image)
    return np.asarray(image, dtype=np.uint8)


def apply_strip(rows: U8Array, above: int, below: int, chain: Sequence[Op]) -> U8Array:
    """The chain on a strip given with ``above`` and ``below`` rows of context (fewer only at the
    image's real edges), cropped to the strip's own rows."""
    out = apply(rows, chain)
    return out[above : out.shape[0] - below]


def halo(row_start: int, row_stop: int, height: int, chain: Sequence[Op]) -> tuple[int, int]:
    """The rows of context a strip ``[row_start, row_stop)`` of an image ``height`` rows high
    gets above and below: the chain's support, none past the image's edges."""
    need = support(chain)
    return min(need, row_start), min(need, height - row_stop)
