"""Operations after grayscale (``--op``): Pillow's own filters and resizes, OpenCV's Canny, and
how many rows of context each filter needs so that a strip computed with that many extra rows
above and below (its *halo*), then cropped, equals the operation on the whole image.

Each operation is the library's own call (Pillow on an ``L`` image, ``cv2.Canny``), so a strip's
result is that library's arithmetic, not a copy of it; ``tests/unit/test_ops.py`` proves the
supports. Three kinds:

* ``strip`` (the filters): split into strips with halos;
* ``canny``: split too. Each strip, with a halo of 2 rows (Sobel 3x3, then the neighbours'
  magnitudes for non-maximum suppression), is classified by OpenCV itself: ``cv2.Canny`` with
  both thresholds at LOW gives every edge *candidate*, with both at HIGH the *strong* ones
  (non-maximum suppression does not depend on the thresholds, only the gate ``m > LOW`` does).
  The strip's answer is a map (0 none, 1 candidate, 2 strong); the hysteresis, which links
  candidates across any distance, is done once on the joined map (:func:`canny_finish`: the
  8-connected components of the candidates that hold a strong pixel), which is what OpenCV's
  hysteresis computes;
* ``whole`` (resizes): on the whole gray image, in one process (the master for one image, the
  worker converting a file in a batch).

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

A chain's support is the sum of its operations' supports; a chain is split as: its filters up
to the first operation that is not one (plus a Canny there), in strips; the rest on the whole
image.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

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
PARAMETRIC = (
    "box:R",
    "gaussian:R",
    "unsharp:R,PERCENT,THRESHOLD",
    "median:SIZE",
    "canny:LOW,HIGH",
    "resize:WxH",
    "thumbnail:WxH",
    "reduce:N",
)
#: The longest chain written out (``;``-joined specs) a worker accepts: ample for any real chain.
MAX_CHAIN_CHARS = 1024
#: Rows of context a Canny strip needs: Sobel 3x3 (1), then its neighbours' magnitudes (1).
CANNY_SUPPORT = 2
#: The biggest side a resize may ask for, and its most pixels (Pillow's decompression-bomb limit):
#: a chain comes from the page and the API too, and must not be a way to exhaust memory or time.
MAX_SIDE = 1 << 16
MAX_RESIZE_PIXELS = 89_478_485
#: The largest blur radius and median size (a median's cost grows with its size squared).
MAX_RADIUS = 1000
MAX_MEDIAN = 31
Kind = Literal["strip", "canny", "whole"]


@dataclass(frozen=True)
class Op:
    """One operation: its name as written (``gaussian:4``), the rows of context it needs above
    and below (``support``), and Pillow's call on an ``L`` image."""

    spec: str
    support: int
    filter: Callable[[Image.Image], Image.Image]
    kind: Kind = "strip"

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


def known() -> str:
    """What exists, for error messages and ``--help``."""
    return ", ".join([*KERNELS, *PARAMETRIC])


def parse(spec: str) -> Op:
    """``NAME`` or ``NAME:ARGS`` to an Op. ValueError naming what exists for anything else."""
    spec = spec.strip()
    name, _, raw = spec.partition(":")
    name = name.strip().lower()
    if name in ("resize", "thumbnail"):
        return _resize(spec, name, raw)
    args = [a for a in raw.split(",") if a.strip()] if raw else []
    if name in KERNELS:
        if args:
            raise ValueError(f"{spec!r}: {name} takes no arguments (known: {known()})")
        kernel = KERNELS[name]
        size = kernel.filterargs[0][0]
        return Op(spec, size // 2, _with(kernel()))
    try:
        values = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"{spec!r}: arguments must be numbers (known: {known()})") from None
    if name in ("box", "gaussian") and len(values) == 1 and 0 <= values[0] <= MAX_RADIUS:
        r = values[0]
        if name == "box":
            return Op(spec, math.ceil(r), _with(ImageFilter.BoxBlur(r)))
        return Op(spec, gaussian_support(r), _with(ImageFilter.GaussianBlur(r)))
    if name == "unsharp" and len(values) == 3 and 0 <= values[0] <= MAX_RADIUS:
        r, percent, threshold = values[0], int(values[1]), int(values[2])
        return Op(spec, gaussian_support(r), _with(ImageFilter.UnsharpMask(r, percent, threshold)))
    if name == "median" and len(values) == 1 and 1 <= values[0] <= MAX_MEDIAN and values[0] % 2 == 1:
        size = int(values[0])
        return Op(spec, size // 2, _with(ImageFilter.MedianFilter(size)))
    if name == "reduce" and len(values) == 1 and values[0] == int(values[0]) and 1 <= values[0] <= 256:
        factor = int(values[0])
        return Op(spec, 0, lambda image: image.reduce(factor), "whole")
    if name == "canny" and len(values) == 2 and min(values) >= 0:
        low, high = min(values), max(values)  # (OpenCV swaps them too)
        return Op(spec, CANNY_SUPPORT, lambda image: _canny_image(image, low, high), "canny")
    raise ValueError(f"{spec!r}: not an operation with those arguments (known: {known()})")


def _resize(spec: str, name: str, raw: str) -> Op:
    found = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", raw)
    sides = [int(v) for v in found.groups()] if found else []
    if not sides or not all(0 < v <= MAX_SIDE for v in sides) or sides[0] * sides[1] > MAX_RESIZE_PIXELS:
        raise ValueError(
            f"{spec!r}: {name} takes WIDTHxHEIGHT, each 1-{MAX_SIDE}, at most {MAX_RESIZE_PIXELS} pixels"
            f" (known: {known()})"
        )
    size = (sides[0], sides[1])
    if name == "resize":  # Pillow's default filter (bicubic for L) on the whole image
        return Op(spec, 0, lambda image: image.resize(size), "whole")

    def thumbnail(image: Image.Image) -> Image.Image:
        image = image.copy()
        image.thumbnail(size)  # keeps the aspect ratio, never enlarges
        return image

    return Op(spec, 0, thumbnail, "whole")


def parse_chain(specs: Sequence[str]) -> tuple[Op, ...]:
    """Each spec parsed, in order (a spec may itself hold several, ``;``-separated)."""
    chain = tuple(parse(s) for spec in specs for s in spec.split(";") if s.strip())
    if len(spell(chain)) > MAX_CHAIN_CHARS:
        raise ValueError(f"the chain is longer than {MAX_CHAIN_CHARS} characters")
    return chain


@functools.lru_cache(maxsize=64)
def chain_of(spelled: str) -> tuple[Op, ...]:
    """:func:`parse_chain` of a spelled chain, remembered (a worker sees the same one each strip)."""
    return parse_chain([spelled])


def spell(chain: Sequence[Op]) -> str:
    """The chain written out (``blur;gaussian:4``): what the wire, the report and the page carry."""
    return ";".join(op.spec for op in chain)


def split(chain: Sequence[Op]) -> tuple[tuple[Op, ...], tuple[Op, ...]]:
    """(the part run in strips, the part run on the whole image): the filters up to the first
    operation that is not one, plus a Canny there; the rest."""
    for i, op in enumerate(chain):
        if op.kind == "canny":
            return tuple(chain[: i + 1]), tuple(chain[i + 1 :])
        if op.kind == "whole":
            return tuple(chain[:i]), tuple(chain[i:])
    return tuple(chain), ()


def ends_in_canny(chain: Sequence[Op]) -> bool:
    """The strips' answer is a Canny map (0, 1, 2) for :func:`canny_finish`, not gray rows."""
    return bool(chain) and chain[-1].kind == "canny"


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ValueError("canny needs OpenCV: pip install 'distgray[canny]'") from None
    return cv2


def _canny_image(image: Image.Image, low: float, high: float) -> Image.Image:
    """``cv2.Canny`` on a whole ``L`` image (default aperture 3, L1 gradient)."""
    gray = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    return Image.fromarray(_cv2().Canny(gray, low, high), mode="L")


def canny_map(gray: U8Array, op: Op) -> U8Array:
    """A strip's Canny classification: 2 strong, 1 candidate, 0 neither (see the module's notes)."""
    low, high = (float(v) for v in op.spec.partition(":")[2].split(","))
    low, high = min(low, high), max(low, high)
    cv2 = _cv2()
    gray = np.ascontiguousarray(gray)
    candidates = cv2.Canny(gray, low, low)
    strong = cv2.Canny(gray, high, high)
    found: U8Array = (candidates > 0).astype(np.uint8) + (strong > 0).astype(np.uint8)
    return found


def canny_finish(found: U8Array) -> U8Array:
    """The hysteresis on a whole joined map: candidates 8-connected to a strong pixel, as 255."""
    cv2 = _cv2()
    count, labels = cv2.connectedComponents((found > 0).astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    keep = np.zeros(count, dtype=bool)
    keep[np.unique(labels[found == 2])] = True
    keep[0] = False
    return np.where(keep[labels], np.uint8(255), np.uint8(0))


def _with(f: ImageFilter.Filter) -> Callable[[Image.Image], Image.Image]:
    def run(image: Image.Image) -> Image.Image:
        return image.filter(f)

    return run


def support(chain: Sequence[Op]) -> int:
    return sum(op.support for op in chain)


def support_of(spelled: str) -> int:
    """:func:`support` of a spelled chain ("": none)."""
    return support(chain_of(spelled)) if spelled else 0


def apply(gray: U8Array, chain: Sequence[Op]) -> U8Array:
    """The chain on a whole gray image (rows x width), as one process would run it."""
    return np.asarray(apply_image(Image.fromarray(np.ascontiguousarray(gray), mode="L"), chain), dtype=np.uint8)


def apply_image(image: Image.Image, chain: Sequence[Op]) -> Image.Image:
    """The chain on a whole ``L`` image."""
    for op in chain:
        image = op(image)
    return image


def apply_strip(rows: U8Array, above: int, below: int, chain: Sequence[Op]) -> U8Array:
    """The strip part of a chain (:func:`split`) on a strip given with ``above`` and ``below``
    rows of context (fewer only at the image's real edges), cropped to the strip's own rows. A
    chain that ends in a Canny gives the strip's Canny map (for :func:`canny_finish`)."""
    if ends_in_canny(chain):
        before = apply(rows, chain[:-1]) if len(chain) > 1 else np.ascontiguousarray(rows)
        out = canny_map(before, chain[-1])
    else:
        out = apply(rows, chain)
    return out[above : out.shape[0] - below]


def halo(row_start: int, row_stop: int, height: int, chain: Sequence[Op]) -> tuple[int, int]:
    """The rows of context a strip ``[row_start, row_stop)`` of an image ``height`` rows high
    gets above and below: the chain's support, none past the image's edges."""
    return halo_of(support(chain), row_start, row_stop, height)


def halo_of(need: int, row_start: int, row_stop: int, height: int, above: bool = False) -> tuple[int, int]:
    """:func:`halo` for a chain of support ``need``; ``above``: a PNG strip's row above comes
    too, with its own ``need`` rows (the last halo row above is then that row)."""
    return min(need + above, row_start), min(need, height - row_stop)
