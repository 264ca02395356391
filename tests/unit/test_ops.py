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


# ---------------------------------------------------------------------------------- Canny
CANNY = ["canny:50,150", "canny:10,30", "canny:100,100", "canny:0,0", "canny:200,40"]


def canny_in_strips(gray: np.ndarray, chain: list[ops.Op], cuts: list[int], halo_cut: int = 0) -> np.ndarray:
    """The strips' Canny maps joined, then the one hysteresis pass."""
    return ops.canny_finish(in_strips(gray, chain, cuts, halo_cut))


def canny_reference(gray: np.ndarray, spec: str) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    low, high = (float(v) for v in spec.split(":")[1].split(","))
    return cv2.Canny(np.ascontiguousarray(gray), low, high)


@pytest.mark.parametrize("spec", CANNY)
def test_canny_in_strips_equals_opencv_on_the_whole_image(spec: str) -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(11)
    noise = rng.integers(0, 256, (67, 91), dtype=np.uint8)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (120, 150), dtype=np.uint8), (5, 5), 2)
    photo = np.asarray(Image.open(PHOTO).convert("L"))[700:961, 900:1377]
    chain = [ops.parse(spec)]
    for gray in (noise, smooth, photo):
        want = canny_reference(gray, spec)
        height = gray.shape[0]
        for rows in (1, 2, 5, 33, height):
            assert np.array_equal(canny_in_strips(gray, chain, cuts_every(height, rows)), want), (spec, rows)
        for _ in range(3):
            cuts = sorted({int(c) for c in rng.integers(1, height, size=int(rng.integers(1, 9)))})
            assert np.array_equal(canny_in_strips(gray, chain, cuts), want), (spec, cuts)


def test_canny_hysteresis_joins_edges_across_many_strips() -> None:
    """A long weak edge that reaches a strong pixel only several strips away is kept whole: the
    join is global, not per strip."""
    pytest.importorskip("cv2")
    gray = np.zeros((60, 40), dtype=np.uint8)
    gray[:, 20:] = 20  # a weak vertical edge the whole height (Sobel: 80) ...
    gray[50:, 20:] = 250  # ... strong only near the bottom
    spec = "canny:20,200"
    want = canny_reference(gray, spec)
    assert want[5].any()  # the top of the weak edge is an edge in OpenCV's answer
    chain = [ops.parse(spec)]
    assert np.array_equal(canny_in_strips(gray, chain, cuts_every(60, 4)), want)
    # per-strip hysteresis would lose it: each 4-row strip alone has no strong pixel at the top
    alone = np.concatenate([canny_reference(gray[s : s + 4], spec) for s in range(0, 60, 4)])
    assert not np.array_equal(alone, want)


def test_canny_needs_two_rows_of_halo() -> None:
    pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    gray = rng.integers(0, 256, (50, 70), dtype=np.uint8)
    chain = [ops.parse("canny:40,120")]
    assert chain[0].support == ops.CANNY_SUPPORT == 2
    want = canny_reference(gray, "canny:40,120")
    assert np.array_equal(canny_in_strips(gray, chain, cuts_every(50, 5)), want)
    assert not np.array_equal(canny_in_strips(gray, chain, cuts_every(50, 5), halo_cut=1), want)


def test_a_filter_then_canny_in_strips() -> None:
    pytest.importorskip("cv2")
    rng = np.random.default_rng(8)
    gray = rng.integers(0, 256, (71, 64), dtype=np.uint8)
    chain = ops.parse_chain(["gaussian:1.5", "canny:30,90"])
    blurred = ops.apply(gray, chain[:1])
    want = canny_reference(blurred, "canny:30,90")
    for rows in (1, 3, 10):
        assert np.array_equal(canny_in_strips(gray, list(chain), cuts_every(71, rows)), want), rows


# ---------------------------------------------------------------------------------- chains, resizes
def test_chains_split_into_strips_and_whole_image_parts() -> None:
    chain = ops.parse_chain(["blur;gaussian:2", "resize:30x20", "sharpen"])
    in_strips_, on_whole = ops.split(chain)
    assert ops.spell(in_strips_) == "blur;gaussian:2" and ops.spell(on_whole) == "resize:30x20;sharpen"
    chain = ops.parse_chain(["median:3", "canny:1,2", "blur"])
    assert [ops.spell(p) for p in ops.split(chain)] == ["median:3;canny:1,2", "blur"]
    assert [ops.spell(p) for p in ops.split(ops.parse_chain(["thumbnail:9x9"]))] == ["", "thumbnail:9x9"]
    assert ops.support(ops.parse_chain(["blur", "gaussian:4", "median:5"])) == 2 + 12 + 2  # (BLUR is a 5x5 kernel)


@pytest.mark.parametrize("spec", ["resize:123x45", "thumbnail:100x100", "thumbnail:500x500", "reduce:3", "reduce:1"])
def test_resizes_are_pillows_own_calls(spec: str) -> None:
    gray = np.asarray(Image.open(PHOTO).convert("L"))[:301, :457]
    image = Image.fromarray(gray)
    name, _, arg = spec.partition(":")
    if name == "resize":
        want = image.resize(tuple(int(v) for v in arg.split("x")))  # type: ignore[arg-type]
    elif name == "thumbnail":
        want = image.copy()
        want.thumbnail(tuple(int(v) for v in arg.split("x")))  # type: ignore[arg-type]
    else:
        want = image.reduce(int(arg))
    got = ops.apply(gray, ops.parse_chain([spec]))
    assert got.shape == (want.height, want.width)
    assert np.array_equal(got, np.asarray(want))


@pytest.mark.parametrize(
    "spec",
    [
        "resize:0x5",
        "resize:12",
        "thumbnail:axb",
        "reduce:0",
        "reduce:1.5",
        "canny:1",
        "resize:65536x65536",  # 4 GB of gray from one line of an upload form: refused
        "median:33",  # a median's cost grows with its size squared
        "gaussian:1001",
        "unsharp:5000,100,2",
    ],
)
def test_bad_resizes_and_canny_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="known"):
        ops.parse(spec)


def test_the_chain_as_spelled_round_trips() -> None:
    spelled = ops.spell(ops.parse_chain(["blur", "gaussian:4;canny:10,20", "thumbnail:64x64"]))
    assert spelled == "blur;gaussian:4;canny:10,20;thumbnail:64x64"
    assert ops.spell(ops.chain_of(spelled)) == spelled
