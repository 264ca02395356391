"""The grayscale kernel: Pillow's own ``convert("L")`` over cache-sized blocks of a strip.

Pure NumPy/Pillow; no sockets, threads or clocks. Everything the master distributes is a
C-contiguous ``uint8`` array of shape (height, width, 3 or 4), so a horizontal strip is one
contiguous slice of memory that can go to a socket as a memoryview.

The kernel is ITU-R 601-2 luma in 16-bit fixed point, Pillow's formula::

    L = (19595 * R + 38470 * G + 7471 * B + 32768) >> 16        (0.299, 0.587, 0.114 scaled by 2**16)

that is, round-half-up of the weighted sum. ``to_grayscale`` runs Pillow's C conversion over
cache-sized blocks of a zero-copy view, which measured fastest here (see ``utils/bench.py``);
``luma_reference`` is the same formula in NumPy, kept as the executable specification.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

U8Array = npt.NDArray[np.uint8]

#: Rows converted per Pillow call: a few hundred KB keeps source and result in cache.
KERNEL_BLOCK_BYTES = 1 << 19


def luma_reference(rgb: npt.NDArray[np.uint8]) -> U8Array:
    """The specification of the kernel in plain NumPy (slow; used by tests)."""
    px = rgb.astype(np.uint32)
    acc = px[..., 0] * 19595 + px[..., 1] * 38470 + px[..., 2] * 7471 + 32768
    return (acc >> 16).astype(np.uint8)


def to_grayscale(src: U8Array, out: U8Array) -> U8Array:
    """Convert (rows, width, 3|4) uint8 ``src`` into (rows, width) uint8 ``out``; alpha is ignored.

    Bit-identical to ``Image.convert("L")``. ``src`` must be C-contiguous (a strip received off the
    wire, or a row slice of a loaded image); ``out`` may be any writable C-contiguous buffer view.
    """
    if src.ndim != 3 or src.shape[2] not in (3, 4) or src.dtype != np.uint8:
        raise ValueError(f"expected (rows, width, 3|4) uint8, got {src.shape} {src.dtype}")
    rows, width, channels = src.shape
    if out.shape != (rows, width) or out.dtype != np.uint8:
        raise ValueError(f"output must be ({rows}, {width}) uint8, got {out.shape} {out.dtype}")
    if not src.flags.c_contiguous:
        raise ValueError("source strip must be C-contiguous")
    mode = "RGB" if channels == 3 else "RGBA"
    step = max(1, KERNEL_BLOCK_BYTES // max(1, width * channels))
    for y in range(0, rows, step):
        block = src[y : y + step]
        n = block.shape[0]
        image = Image.frombuffer(mode, (width, n), block, "raw", mode, 0, 1)
        out[y : y + n] = np.asarray(image.convert("L"))
    return out
