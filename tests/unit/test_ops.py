"""Operations in strips with halos equal the operation on the whole image (Pillow's own call),
at every strip size down to one row, at the image's edges, for chains; and the supports are
what it takes: one row less of halo shows a difference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from distgray.imaging import ops
from tests.conftest import PHOTO

SINGLE = [
    *ops.KERNELS,
    "box:1",
    "box:2.5",
    "gaussian:0.5",
    "gaussian:2",
    "gaussian:4",
    "unsharp:2,150,3",
    "median:3",
    "median:5",
]
CHAINS = [["blur", "sharpen"], ["gaussian:2", "find_edges", "median:3"], ["smooth_more", "unsharp:1.5,80,2", "emboss"]]


def in_strips(gray: np.ndarray, chain: list[ops.Op], cuts: list[int], halo_cut: int = 0) -> np.ndarray:
    """The chain strip by strip (cut at ``cuts``), each with its halo (less ``halo_cut`` rows)."""
    height = gray.shape[0]
    bounds = [0, *cuts, height]
    parts = []
    for start, stop in itertools.pairwise(bounds):
        above, below = ops.halo(start, stop, height, chain)
        above, below = max(0, above - halo_cut), max(0, below - halo_cut)
        parts.append(ops.apply_strip(gray[start - above : stop + below], above, below, chain))
    return np.concatenate(parts)


def cuts_every(height: int, rows: int) -> list[int]:
    return list(range(rows, height, rows))


@pytest.mark.parametrize("chain", [[s] for s in SINGLE] + CHAINS, ids=lambda c: "+".join(c))
def test_strips_with_halos_equal_the_whole_image(chain: list[str]) -> None:
    rng = np.random.default_rng(17)
    parsed = [ops.parse(s) for s in chain]
    for height, width in ((41, 73), (57, 200)):
        gray = rng.integers(0, 256, (height, width), dtype=np.uint8)
        whole = ops.apply(gray, parsed)
        assert whole.shape == gray.shape
        for rows in (1, 2, 3, 7, height - 1):  # down to one-row strips
            assert np.array_equal(in_strips(gray, parsed, cuts_every(height, rows)), whole), rows
        for _ in range(5):  # random cuts
            cuts = sorted({int(c) for c in rng.integers(1, height, size=int(rng.integers(1, 8)))})
            assert np.array_equal(in_strips(gray, parsed, cuts), whole), cuts


def test_on_the_real_photo_in_odd_strips() -> None:
    gray = np.asarray(Image.open(PHOTO).convert("L"))[1000:1403, 500:1311]
    for chain in (["gaussian:4"], ["blur", "edge_enhance_more"], ["median:5", "unsharp:3,120,2"]):
        parsed = [ops.parse(s) for s in chain]
        assert np.array_equal(in_strips(gray, parsed, cuts_every(gray.shape[0], 37)), ops.apply(gray, parsed)), chain


@pytest.mark.parametrize("spec", ["blur", "sharpen", "box:3", "median:5", "gaussian:2"])
def test_one_row_less_of_halo_is_not_enough(spec: str) -> None:
    """The supports are tight where stated: the same strips with one row less of context differ."""
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (60, 90), dtype=np.uint8)
    parsed = [ops.parse(spec)]
    whole = ops.apply(gray, parsed)
    assert np.array_equal(in_strips(gray, parsed, cuts_every(60, 6)), whole)
    if spec == "gaussian:2":  # 3 passes of box radius 1 + a: reads 2 rows each way a pass
        assert ops.parse(spec).support == 6
    assert not np.array_equal(in_strips(gray, parsed, cuts_every(60, 6), halo_cut=1), whole)


def test_a_gaussian_needs_more_rows_than_its_radius() -> None:
    rng = np.random.default_rng(4)
    gray = rng.integers(0, 256, (80, 64), dtype=np.uint8)
    parsed = [ops.parse("gaussian:4")]
    assert parsed[0].support == 12
    radius_only = parsed[0].support - 4  # cut the halo down to the radius, 4 rows
    assert not np.array_equal(in_strips(gray, parsed, cuts_every(80, 9), halo_cut=radius_only), ops.apply(gray, parsed))


@pytest.mark.parametrize("spec", ["nosuch", "blur:3", "gaussian", "gaussian:x", "median:4", "unsharp:1,2"])
def test_bad_operations_are_refused_naming_what_exists(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        ops.parse(spec)
    assert spec in str(info.value)
    if "known" in str(info.value):
        assert "gaussian:R" in str(info.value) and "find_edges" in str(info.value)
