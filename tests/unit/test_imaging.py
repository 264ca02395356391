"""The kernel against Pillow's convert("L"), loading every mode, atomic saving."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from distgray import config, formats
from distgray.errors import ImageError
from distgray.imaging import kernel as luma
from distgray.imaging import load, save

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "test_images" / "sample_4k.jpg"


def pillow_gray(rgb: np.ndarray) -> np.ndarray:
    mode = "RGB" if rgb.shape[2] == 3 else "RGBA"
    return np.asarray(Image.fromarray(rgb, mode).convert("L"))


def kernel(rgb: np.ndarray) -> np.ndarray:
    out = np.empty(rgb.shape[:2], dtype=np.uint8)
    return luma.to_grayscale(np.ascontiguousarray(rgb), out)


@settings(max_examples=150, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 70), st.sampled_from([3, 4]))))
def test_kernel_equals_pillow_on_random_arrays(rgb: np.ndarray) -> None:
    assert np.array_equal(kernel(rgb), pillow_gray(rgb))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7681), (4321, 1), (333, 517), (2, 100_003)])
def test_kernel_odd_shapes(shape: tuple[int, int]) -> None:
    rgb = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert np.array_equal(kernel(rgb), pillow_gray(rgb))


def test_kernel_every_colour_value_extremes() -> None:
    # all 2**24 colours would take long; every (r, g, b) on a 0..255 grid step 5 plus the corners
    v = np.unique(np.r_[np.arange(0, 256, 5), [0, 1, 127, 128, 254, 255]]).astype(np.uint8)
    r, g, b = np.meshgrid(v, v, v, indexing="ij")
    rgb = np.stack([r, g, b], axis=-1).reshape(len(v), -1, 3)
    assert np.array_equal(kernel(rgb), pillow_gray(rgb))
    assert np.array_equal(luma.luma_reference(rgb), pillow_gray(rgb))


def test_kernel_row_by_row_equals_whole_on_real_photo() -> None:
    with Image.open(PHOTO) as im:
        rgb = np.asarray(im.convert("RGB"))
        expected = np.asarray(im.convert("L"))
    out = np.empty(expected.shape, dtype=np.uint8)
    for y in range(0, rgb.shape[0], 97):  # strips that do not divide the height
        luma.to_grayscale(np.ascontiguousarray(rgb[y : y + 97]), out[y : y + 97])
    assert np.array_equal(out, expected)


def test_kernel_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        luma.to_grayscale(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError):
        luma.to_grayscale(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError):
        luma.to_grayscale(np.zeros((2, 4, 3), np.uint8)[:, ::2], np.zeros((2, 2), np.uint8))


# ---------------------------------------------------------------- loading, per mode, on real files
def _photo(size: tuple[int, int] = (301, 203)) -> Image.Image:
    with Image.open(PHOTO) as im:
        return im.convert("RGB").resize(size)


def _save(tmp_path: Path, image: Image.Image, name: str, **kw: object) -> Path:
    path = tmp_path / name
    image.save(path, **kw)
    return path


def _convert_via_kernel(path: Path) -> tuple[load.LoadedImage, np.ndarray]:
    loaded = load.load_image(path)
    assert loaded.kind is load.Kind.COLOR and loaded.pixels is not None
    return loaded, kernel(loaded.pixels)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("rgb.png", lambda im: im),
        ("rgb.jpg", lambda im: im),
        ("rgb.webp", lambda im: im),
        ("rgb.tif", lambda im: im),
        ("rgb.bmp", lambda im: im),
        ("p.png", lambda im: im.convert("P", palette=Image.Palette.ADAPTIVE)),
        ("p.gif", lambda im: im.convert("P")),
        ("cmyk.jpg", lambda im: im.convert("CMYK")),
        ("cmyk.tif", lambda im: im.convert("CMYK")),
    ],
)
def test_colour_inputs_equal_pillow(tmp_path: Path, name: str, make: object) -> None:
    path = _save(tmp_path, make(_photo()), name)  # type: ignore[operator]
    loaded, gray = _convert_via_kernel(path)
    with Image.open(path) as im:
        assert np.array_equal(gray, np.asarray(im.convert("L")))
    assert not loaded.has_alpha


def test_rgba_keeps_alpha_and_png_output_is_la(tmp_path: Path) -> None:
    rgba = _photo().convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    loaded, gray = _convert_via_kernel(_save(tmp_path, rgba, "a.png"))
    assert loaded.has_alpha
    assert np.array_equal(gray, np.asarray(rgba.convert("L")))
    out, notes = load.compose_output(loaded, gray, "PNG")
    assert out.mode == "LA" and not notes
    assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(rgba.getchannel("A")))
    jpeg, notes = load.compose_output(loaded, gray, "JPEG")
    assert jpeg.mode == "L" and "alpha dropped" in notes[0]


def test_palette_with_transparency_keeps_alpha(tmp_path: Path) -> None:
    p = _photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    p.info["transparency"] = 0
    path = _save(tmp_path, p, "pt.png", transparency=0)
    loaded, gray = _convert_via_kernel(path)
    assert loaded.has_alpha
    with Image.open(path) as im:
        assert np.array_equal(gray, np.asarray(im.convert("RGBA").convert("L")))
        assert np.array_equal(gray, np.asarray(im.convert("L")))


@pytest.mark.parametrize(("mode", "name"), [("L", "l.png"), ("LA", "la.png"), ("I;16", "i16.png"), ("L", "l.jpg")])
def test_gray_inputs_are_copied_unchanged(tmp_path: Path, mode: str, name: str) -> None:
    src = _photo().convert("L")
    image = src.convert("LA") if mode == "LA" else src
    if mode == "I;16":
        image = Image.fromarray(np.asarray(src).astype(np.uint16) * 257)
    path = _save(tmp_path, image, name)
    loaded = load.load_image(path)
    assert loaded.kind is load.Kind.GRAY and loaded.gray is not None
    out, _ = load.compose_output(loaded, None, "PNG")
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(out), np.asarray(im))
    if mode == "I;16":
        assert np.asarray(out).max() > 255, "16-bit depth must be kept"


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = _photo((64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(tmp_path, image, "rot.jpg", exif=exif)
    loaded, gray = _convert_via_kernel(path)
    assert (loaded.width, loaded.height) == (32, 64)
    with Image.open(path) as im:
        from PIL import ImageOps

        assert np.array_equal(gray, np.asarray(ImageOps.exif_transpose(im).convert("L")))


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    path = _save(tmp_path, Image.new("RGB", (300, 300)), "bomb.png")
    with pytest.raises(ImageError, match="--max-pixels"):
        load.load_image(path, max_pixels=300 * 300 - 1)
    assert load.load_image(path, max_pixels=300 * 300).width == 300
    assert Image.MAX_IMAGE_PIXELS == config.DEFAULT_MAX_PIXELS  # global restored


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "not an image"), (b"hello, I am text", "not an image"), (None, "no such file")],
)
def test_bad_files_get_clear_errors(tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=match):
        load.load_image(path)


def test_truncated_jpeg_is_an_image_error(tmp_path: Path) -> None:
    data = PHOTO.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="cannot decode"):
        load.load_image(path)


def test_directory_named_like_an_image(tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageError, match="directory"):
        load.load_image(tmp_path / "dir.png")


# ---------------------------------------------------------------- saving
def test_save_atomic_writes_and_leaves_no_temp(tmp_path: Path) -> None:
    image = Image.new("L", (10, 10), 7)
    target = tmp_path / "sub" / "out.png"
    save.save_atomic(image, target, "PNG", {})
    assert np.array_equal(np.asarray(Image.open(target)), np.asarray(image))
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]
    assert target.stat().st_mode & 0o644 == 0o644


def test_failed_save_keeps_the_old_file_and_leaves_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "out.jpg"
    target.write_bytes(b"old")
    with pytest.raises(ImageError, match="cannot write"):
        save.save_atomic(Image.new("LA", (10, 10)), target, "JPEG", {})  # JPEG cannot hold LA
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jpg"]


def test_jpeg_output_is_pillows_encoding_of_the_same_pixels(tmp_path: Path) -> None:
    gray = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 30), dtype=np.uint8))
    save.save_atomic(gray, tmp_path / "g.jpg", "JPEG", save.save_options("JPEG", None, 6))
    ref = io.BytesIO()
    gray.save(ref, format="JPEG", quality=config.DEFAULT_JPEG_QUALITY)
    assert (tmp_path / "g.jpg").read_bytes() == ref.getvalue()


def test_output_format_and_same_file(tmp_path: Path) -> None:
    assert load.output_format(Path("x.JPG")) == "JPEG"
    assert load.output_format(Path("x.tif")) == "TIFF"
    assert load.output_format(Path("x.jpg"), "png") == "PNG"
    assert load.output_format(Path("x"), "jpg") == "JPEG"
    with pytest.raises(ValueError):
        load.output_format(Path("x.nope"))
    with pytest.raises(ValueError):
        load.output_format(Path("x.png"), "nope")
    a = tmp_path / "a.png"
    a.write_bytes(b"")
    (tmp_path / "link.png").symlink_to(a)
    assert formats.same_file(a, tmp_path / "." / "a.png")
    assert formats.same_file(a, tmp_path / "link.png")
    assert not formats.same_file(a, tmp_path / "b.png")
