"""Images larger than the window stream through the cluster: bands in, strips out, flat memory.

Small images with a small ``--window-mb`` (so the window really is smaller than the image: the
job must stream) rather than giant files; real masters and workers from the command line.
"""

from __future__ import annotations

import json
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from distgray.imaging.pngstrip import PNG_SIGNATURE
from tests.bigimages import Mosaic, gray_of, photo_tile, write_png, write_tiff
from tests.conftest import decoded, pillow_reference, pngcheck
from tests.integration.conftest import TOKEN, WAIT_S, MasterProcess, Workers, flag_of, wait_until

#: A 1/4-scale photo tile (1920x1080), so a mosaic of a few tiles is a few MB.
TILE = photo_tile(0.25)
GRAY_TILE = gray_of(TILE)


def mosaic(width: int, height: int) -> Mosaic:
    return Mosaic(TILE, width, height)


def expected(m: Mosaic) -> np.ndarray:
    return m.gray_rows(0, m.height, GRAY_TILE)


def run(args: list[str], cwd: Path, timeout: float = 300, page: bool = False) -> tuple[int, str, str]:
    """The master as a user runs it (``page``: with its status page, so previews are made)."""
    shown = ["--dashboard-port", "0"] if page else ["--no-dashboard"]
    master = MasterProcess(["--local-workers", "2", *shown, "--port", "0", "--log-level", "info", *args], cwd=cwd)
    out = master.finish(timeout)
    return master.proc.returncode, out, master.stderr


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("stream")
    odd = mosaic(2501, 1999)  # 20 MB of pixels (RGB + gray): 10x the 2 MB window below
    return {
        "png": write_png(d / "odd.png", odd),
        "tiled": write_tiff(d / "odd_tiled.tif", odd, tile=128, compression="zlib"),
        "strips": write_tiff(d / "odd_strips.tif", odd, tile=None),
        "truncated": write_png(d / "cut.png", odd, truncate_at=0.6),
        "jpeg": _jpeg(d / "odd.jpg", odd),
    }


def _jpeg(path: Path, m: Mosaic, cut: float | None = None) -> Path:
    Image.fromarray(m.rows(0, m.height)).save(path, quality=93)
    if cut is not None:
        with open(path, "r+b") as fh:
            fh.truncate(int(path.stat().st_size * cut))
    return path


ODD = mosaic(2501, 1999)


@pytest.mark.parametrize(
    ("source", "output", "extra"),
    [
        ("png", "out.png", []),
        ("png", "out.tif", []),
        ("tiled", "out.png", []),
        ("tiled", "out.tif", []),
        ("strips", "out.tif", []),
        ("strips", "out.tif", ["--encode-on-master"]),
    ],
)
def test_a_streamed_job_is_bit_identical(
    images: dict[str, Path], tmp_path: Path, source: str, output: str, extra: list[str]
) -> None:
    report = tmp_path / "report.json"
    code, _, err = run(
        ["--image", str(images[source]), "--output", output, "--window-mb", "2", "--report", str(report), *extra],
        tmp_path,
    )
    assert code == 0, err
    assert np.array_equal(decoded(tmp_path / output), expected(ODD))
    if output.endswith(".png"):
        pngcheck(tmp_path / output)
    else:  # deflated strips (by the workers, or here with --encode-on-master), a few to the window
        with tifffile.TiffFile(tmp_path / output) as tif:
            page = tif.pages[0]
            assert (page.compression, page.predictor) == (8, 2)
            assert page.rowsperstrip <= (2 << 20) // (ODD.width * 4) // 4
    # It really streamed: many strips, none bigger than the window (in rows: 2 MB, but at least
    # two bands of the reader and the two rows of slack, see bands.window_rows).
    strips = json.loads(report.read_text())["strip_log"]
    assert len(strips) > 10
    assert max(s["row_stop"] - s["row_start"] for s in strips) <= max((2 << 20) // (ODD.width * 4), 2 * 128 + 4)


@pytest.mark.parametrize("output", ["out.tif", "out.png"])
def test_a_jpeg_too_big_for_the_window_streams_through_libvips_exactly(
    images: dict[str, Path], tmp_path: Path, output: str
) -> None:
    """A JPEG read in bands by libvips: the output equals Pillow's convert("L") of the whole file."""
    report = tmp_path / "report.json"
    code, _, err = run(
        ["--image", str(images["jpeg"]), "--output", output, "--window-mb", "2", "--report", str(report)], tmp_path
    )
    assert code == 0, err
    assert np.array_equal(decoded(tmp_path / output), pillow_reference(images["jpeg"]))
    assert len(json.loads(report.read_text())["strip_log"]) > 10  # it streamed


def test_a_jpeg_cut_mid_stream_fails_cleanly(tmp_path: Path) -> None:
    cut = _jpeg(tmp_path / "cut.jpg", ODD, cut=0.5)
    code, _, err = run(["--image", str(cut), "--output", "out.tif", "--window-mb", "2"], tmp_path)
    assert code == 1, err
    assert "cut.jpg" in err and "Traceback" not in err
    assert not (tmp_path / "out.tif").exists() and list(tmp_path.glob(".out.tif.*")) == []


@pytest.mark.parametrize("kind", ["L", "P16", "1"])
def test_gray_and_palette_pngs_stream_to_pillows_gray(tmp_path: Path, kind: str) -> None:
    """An 8-bit gray, a 4-bit palette and a 1-bit PNG too big for the window: what Pillow's
    convert("L") makes of the whole file (for gray, the file's own pixels)."""
    rgb = Image.fromarray(ODD.rows(0, ODD.height))
    image = rgb.quantize(16) if kind == "P16" else rgb.convert(kind)
    source = tmp_path / f"in_{kind}.png"
    image.save(source, compress_level=1)
    report = tmp_path / "report.json"
    code, _, err = run(
        ["--image", str(source), "--output", "out.tif", "--window-mb", "2", "--report", str(report)], tmp_path
    )
    assert code == 0, err
    assert np.array_equal(decoded(tmp_path / "out.tif"), pillow_reference(source))
    assert len(json.loads(report.read_text())["strip_log"]) > 10  # it streamed


def _with_alpha(kind: str) -> Image.Image:
    """The odd mosaic with an alpha that varies along rows and columns: RGBA or gray + alpha, 8 or 16 bits."""
    rgb = ODD.rows(0, ODD.height)
    alpha = ((np.arange(ODD.height)[:, None] * 7 + np.arange(ODD.width)[None, :] * 3) % 256).astype(np.uint8)
    if kind == "RGBA":
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    if kind == "LA":
        return Image.merge("LA", (Image.fromarray(rgb).convert("L"), Image.fromarray(alpha)))
    raise ValueError(kind)


def _png16(path: Path, image: Image.Image) -> None:
    """``image`` (RGBA or LA) as a 16-bit PNG whose low bytes are noise (Pillow keeps the high byte)."""
    arr = np.asarray(image).astype(np.uint16) << 8
    arr |= np.random.default_rng(5).integers(0, 256, arr.shape, dtype=np.uint16)
    color = 6 if image.mode == "RGBA" else 4
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in arr)
    ihdr = struct.pack(">IIBBBBB", image.width, image.height, 16, color, 0, 0, 0)
    path.write_bytes(PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 1)) + _chunk(b"IEND"))


def _chunk(kind: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.mark.parametrize(
    ("kind", "depth", "output"),
    [
        ("RGBA", 8, "out.png"),
        ("RGBA", 8, "out.tif"),
        ("LA", 8, "out.png"),
        ("RGBA", 16, "out.tif"),
        ("LA", 16, "out.png"),
    ],
)
def test_pngs_with_alpha_stream_and_keep_it(tmp_path: Path, kind: str, depth: int, output: str) -> None:
    """RGBA and gray + alpha PNGs (8 and 16 bits) too big for the window stream, and the output
    keeps the alpha as gray + alpha, as for an image held whole: the gray Pillow's convert("L")
    (for gray + alpha, the file's own gray), the alpha the file's (16 bits: its high byte)."""
    image = _with_alpha(kind)
    source = tmp_path / f"in_{kind}{depth}.png"
    if depth == 8:
        image.save(source, compress_level=1)
    else:
        _png16(source, image)
    report = tmp_path / "report.json"
    args = ["--image", str(source), "--output", output, "--window-mb", "2", "--report", str(report)]
    code, _, err = run(args, tmp_path)
    assert code == 0, err
    with Image.open(source) as im:
        gray = np.asarray(im.convert("L")) if kind == "RGBA" or depth == 16 else np.asarray(im.getchannel("L"))
        alpha = np.asarray(im.getchannel("A"))
    with Image.open(tmp_path / output) as out:
        assert out.mode == "LA"
        assert np.array_equal(np.asarray(out), np.dstack([gray, alpha]))
    if output.endswith(".png"):
        pngcheck(tmp_path / output)
    assert len(json.loads(report.read_text())["strip_log"]) > 10  # it streamed


def test_a_streamed_jpeg_is_what_the_whole_image_path_writes(images: dict[str, Path], tmp_path: Path) -> None:
    """JPEG output in strips: byte for byte the file of the same job with the image in memory."""
    code, _, err = run(["--image", str(images["png"]), "--output", "streamed.jpg", "--window-mb", "2"], tmp_path)
    assert code == 0, err
    code, _, err = run(["--image", str(images["png"]), "--output", "whole.jpg"], tmp_path)
    assert code == 0, err
    assert (tmp_path / "streamed.jpg").read_bytes() == (tmp_path / "whole.jpg").read_bytes()


def test_every_strip_size_down_to_a_few_rows(images: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = run(
        ["--image", str(images["tiled"]), "--output", "out.png", "--window-mb", "1", "--strip-rows", "7"], tmp_path
    )
    assert code == 0, err
    assert np.array_equal(decoded(tmp_path / "out.png"), expected(ODD))


def test_an_input_cut_mid_stream_fails_cleanly(images: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = run(["--image", str(images["truncated"]), "--output", "out.png", "--window-mb", "2"], tmp_path)
    assert code == 1, err
    assert "cut.png" in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()
    assert list(tmp_path.glob(".out.png.*")) == []  # no temporary file left either


def test_a_worker_killed_mid_stream_costs_time_not_pixels(
    images: dict[str, Path], tmp_path: Path, workers: Workers
) -> None:
    master = MasterProcess(
        [
            *("--image", str(images["png"]), "--output", "out.tif", "--window-mb", "2", "--token", TOKEN),
            *("--port", "0", "--no-dashboard", "--min-workers", "2", "--heartbeat", "0.5"),
            *("--heartbeat-timeout", "3", "--strip-rows", "16", "--log-level", "debug"),
        ],
        cwd=tmp_path,
    )
    port = int(flag_of(master.worker_command(), "--port"))
    workers.start(port, worker_id="steady", extra=("--throttle", "3"))
    doomed = workers.start(port, worker_id="doomed", extra=("--throttle", "3"))
    # Once the doomed worker has done a few strips (the job is well under way), kill it.
    wait_until(lambda: master.stderr.count("worker doomed: strip") >= 4, what="the doomed worker to take strips")
    doomed.send_signal(signal.SIGKILL)
    master.finish(WAIT_S * 5)
    assert master.proc.returncode == 0, master.stderr
    assert "doomed" in master.stderr
    assert np.array_equal(decoded(tmp_path / "out.tif"), expected(ODD))


def test_an_image_that_cannot_stream_and_does_not_fit_is_refused_up_front(tmp_path: Path) -> None:
    """A 16-bit gray PNG is not read in bands: beyond the window (and Pillow's own 89.5 MP), refused."""
    big = tmp_path / "gray16.png"
    Image.new("I;16", (10000, 9000), 1234).save(big, compress_level=1)
    code, _, err = run(["--image", str(big), "--window-mb", "64", "--max-pixels", "100000000"], tmp_path)
    assert code == 1
    assert "cannot be read in bands" in err and "--window-mb" in err and "Traceback" not in err


def test_a_streamed_output_format_that_cannot_be_written_in_bands_is_refused(
    images: dict[str, Path], tmp_path: Path
) -> None:
    code, _, err = run(["--image", str(images["png"]), "--output", "out.webp", "--window-mb", "2"], tmp_path)
    assert code == 1
    assert "WEBP cannot be written in bands" in err
    assert not (tmp_path / "out.webp").exists()


def test_max_pixels_on_a_streamed_image_says_the_guard_is_disk_and_time(
    images: dict[str, Path], tmp_path: Path
) -> None:
    code, _, err = run(["--image", str(images["png"]), "--window-mb", "2", "--max-pixels", "1000000"], tmp_path)
    assert code == 1
    assert "exceeds --max-pixels" in err and "disk" in err and "--max-pixels 4999499" in err


def test_master_memory_stays_flat_while_the_image_streams(tmp_path: Path) -> None:
    """Peak memory from /proc (VmHWM, the report's ``master_peak_rss_mb``) with a 4 MB window: the
    job adds far less than the image's 192 MB of pixels to what a tiny job costs the same command
    (measured: ~37 MB, the reader's bands and the allocator's arenas; the whole image in memory
    adds ~190 MB, so the bound bites)."""
    small = write_png(tmp_path / "small.png", mosaic(64, 64))
    big = write_png(tmp_path / "big.png", mosaic(8000, 6000))  # 144 MB RGB + 48 MB gray

    def peaks(image: Path, output: str) -> tuple[float, float]:
        report = tmp_path / f"{output}.json"
        code, _, err = run(
            ["--image", str(image), "--output", output, "--window-mb", "4", "--report", str(report)],
            tmp_path,
            page=True,  # the page on: no preview may read the whole (sparse) image back
        )
        assert code == 0, err
        r = json.loads(report.read_text())
        return r["master_peak_rss_mb"], r["local_worker_peak_rss_mb"]

    base_master, base_worker = peaks(small, "small.tif")
    for output in ("big.tif", "big_gray.png"):
        master, worker = peaks(big, output)
        assert master - base_master < 64, (output, master, base_master)
        assert worker - base_worker < 64, (output, worker, base_worker)
    assert np.array_equal(decoded(tmp_path / "big.tif"), expected(mosaic(8000, 6000)))
