"""Batches through the real CLI with real worker subprocesses: good files bit-identical to Pillow,
every bad file reported with its reason, resume, and interruptions that lose nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.conftest import pillow_jpeg_bytes
from tests.integration.conftest import ROOT, TOKEN, WAIT_S, MasterProcess, Workers, wait_until

GOOD = {  # name -> what it is (all derived from the real photo)
    "a.jpg": "the photo, RGB JPEG",
    "sub/b.png": "odd-sized RGB PNG",
    "sub/deeper/c.webp": "lossless WebP",
    "d.tif": "TIFF",
    "e.bmp": "BMP",
    "f.gif": "palette GIF",
    "g_rgba.png": "RGBA PNG",
    "h_cmyk.jpg": "CMYK JPEG",
    "i16.png": "16-bit gray PNG",
    "la.png": "gray + alpha PNG",
    "p_transparent.png": "palette PNG with transparency",
}
BAD = {  # name -> the reason the summary must give
    "notes.jpg": "not an image Pillow can read",
    "empty.png": "empty file",
    "folder.jpg": "is a directory",
    "trunc.jpg": "truncated",
    "corrupt.png": "cannot decode image",
    "loop.jpg": "symbolic link loop",
    "bomb.png": "decompression-bomb limit",
}


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def build_folder(root: Path, photo: Path) -> None:
    im = Image.open(photo).convert("RGB")
    crop = im.crop((100, 50, 100 + 1001, 50 + 777))
    (root / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(photo, root / "a.jpg")
    crop.save(root / "sub" / "b.png")
    crop.save(root / "sub" / "deeper" / "c.webp", lossless=True)
    crop.save(root / "d.tif")
    crop.save(root / "e.bmp")
    crop.convert("P", palette=Image.Palette.ADAPTIVE).save(root / "f.gif")
    rgba = crop.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(crop.size))
    rgba.save(root / "g_rgba.png")
    crop.convert("CMYK").save(root / "h_cmyk.jpg", quality=90)
    Image.fromarray(np.asarray(crop.convert("L"), dtype=np.uint16) * 257).save(root / "i16.png")
    rgba.convert("LA").save(root / "la.png")
    pal = crop.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.info["transparency"] = 0
    pal.save(root / "p_transparent.png", transparency=0)
    (root / "notes.jpg").write_text("this is not a picture\n")
    (root / "empty.png").write_bytes(b"")
    (root / "folder.jpg").mkdir()
    (root / "trunc.jpg").write_bytes(photo.read_bytes()[:20000])
    good_png = (root / "sub" / "b.png").read_bytes()
    broken = bytearray(good_png)
    broken[len(broken) // 2 : len(broken) // 2 + 64] = b"\x00" * 64  # the IDAT stream no longer inflates
    (root / "corrupt.png").write_bytes(bytes(broken))
    os.symlink("loop.jpg", root / "loop.jpg")
    (root / "bomb.png").write_bytes(png_claiming(100_000, 100_000))


def reference(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("L"))


def pillow_jpeg(path: Path, strips: bool = False) -> bytes:
    """What single-process Pillow writes: convert("L"), JPEG quality 95 (distgray's default);
    ``strips``: with restart markers, as distgray writes a JPEG its workers encoded in strips."""
    return pillow_jpeg_bytes(reference(path), strips=strips)


def out_name(rel: str) -> str:
    p = Path(rel)
    return str(p.with_name(f"{p.stem}_gray{p.suffix}"))


def run_batch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "master_server.py"), "--host", "127.0.0.1", "--port", "0", "--no-dashboard", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT_S * 5,
    )


def log_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_folder_of_good_and_bad_files(photo: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    build_folder(src, photo)
    out = src / "results"  # inside the input folder: must not be converted again on the re-run
    args = ("--input-dir", "in", "--recursive", "--output-dir", "in/results", "--local-workers", "2")
    args += ("--whole-file-max-mp", "5")  # the 8.3 MP photo goes in strips, the rest as whole files
    first = run_batch(*args, cwd=tmp_path)
    assert first.returncode == 1, first.stderr  # some inputs failed, the rest were converted
    assert "Traceback" not in first.stderr
    summary = first.stdout
    assert f"{len(GOOD) + len(BAD)} files: {len(GOOD)} converted, 0 skipped, {len(BAD)} failed" in summary
    for name, reason in BAD.items():
        line = next(ln for ln in summary.splitlines() if ln.startswith(f"failed     {name}:"))
        assert reason in line, line
    for rel in GOOD:
        got = Image.open(out / out_name(rel))
        # LA keeps the alpha; WebP has no gray mode (it decodes as RGB with R = G = B = gray);
        # GIF stores gray as a gray palette; 16-bit gray input is already gray: kept as it is.
        pixels = np.asarray(got.getchannel(0) if got.mode == "LA" else got.convert("L") if got.mode in "RGBP" else got)
        expected = np.asarray(Image.open(src / rel)) if rel == "i16.png" else reference(src / rel)
        if got.format != "JPEG":
            np.testing.assert_array_equal(pixels, expected, err_msg=rel)
    # JPEG output: the very bytes Pillow writes for the same gray pixels at the same quality
    # (the photo went in strips, encoded by the workers: Pillow's bytes with restart markers)
    for rel in ("a.jpg", "h_cmyk.jpg"):
        assert (out / out_name(rel)).read_bytes() == pillow_jpeg(src / rel, strips=rel == "a.jpg"), rel
    assert Image.open(out / out_name("g_rgba.png")).mode == "LA"  # alpha kept where the format can hold it
    records = {Path(str(r["input"])).relative_to("in").as_posix(): r for r in log_lines(out / "distgray-log.jsonl")}
    assert set(records) == set(GOOD) | set(BAD)
    assert {records[r]["unit"] for r in GOOD} == {"file", "strips"}
    assert records["a.jpg"]["unit"] == "strips" and records["sub/b.png"]["unit"] == "file"
    assert all(records[r]["status"] == "converted" and records[r]["worker"] for r in GOOD)
    assert all(records[r]["status"] == "failed" and BAD[r] in str(records[r]["error"]) for r in BAD)
    assert not list(out.rglob("*.part"))

    # Re-run: every completed output is checked and skipped; the output folder is not an input.
    second = run_batch(*args, cwd=tmp_path)
    assert second.returncode == 1
    assert f"{len(GOOD)} skipped, {len(BAD)} failed" in second.stdout
    second_records = log_lines(out / "distgray-log.jsonl")[len(records) :]
    assert not any("results" in str(r["input"]) for r in second_records)

    # A damaged output is not "complete": it is converted again.
    damaged = out / out_name("sub/b.png")
    damaged.write_bytes(damaged.read_bytes()[:1000])
    third = run_batch(*args, cwd=tmp_path)
    assert f"1 converted, {len(GOOD) - 1} skipped" in third.stdout
    np.testing.assert_array_equal(np.asarray(Image.open(damaged)), reference(src / "sub/b.png"))


def test_several_images_and_exit_0(photo: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.png"
    Image.open(photo).crop((0, 0, 640, 480)).save(other)
    proc = run_batch(
        "--image", str(photo), "--image", str(other), "--local-workers", "1", "--format", "png", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 files: 2 converted, 0 skipped, 0 failed" in proc.stdout
    for src in (photo, other):
        np.testing.assert_array_equal(
            np.asarray(Image.open(tmp_path / "results" / f"{src.stem}_gray.png")), reference(src)
        )


@pytest.mark.slow
def test_interrupted_batch_then_rerun_loses_nothing(photo: Path, tmp_path: Path, workers: Workers) -> None:
    src = tmp_path / "in"
    src.mkdir()
    im = Image.open(photo)
    names = []
    for i in range(12):  # 12 different 1 MP JPEGs
        name = f"p{i:02d}.jpg"
        im.crop((i * 200, i * 100, i * 200 + 1280, i * 100 + 800)).save(src / name, quality=90)
        names.append(name)
    common = ("--input-dir", "in", "--no-dashboard", "--token", TOKEN, "--host", "127.0.0.1")
    master = MasterProcess([*common, "--port", "0"], cwd=tmp_path)
    port = int(master.worker_command()[master.worker_command().index("--port") + 1])
    for wid in ("w1", "w2"):
        workers.start(port, worker_id=wid, extra=("--throttle", "40"))
    log = tmp_path / "results" / "distgray-log.jsonl"
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, what="two files converted")
    master.proc.kill()  # mid-batch, no goodbye
    for p in workers.procs:
        p.kill()
    master.proc.wait(timeout=WAIT_S)
    done_before = len(log.read_text().splitlines())
    assert done_before < len(names), "the batch finished before it could be interrupted"

    rerun = run_batch("--input-dir", "in", "--local-workers", "2", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    counts = re.search(r"(\d+) files: (\d+) converted, (\d+) skipped, 0 failed", rerun.stdout)
    assert counts, rerun.stdout
    total, converted, skipped = map(int, counts.groups())
    assert total == len(names) and converted + skipped == total and skipped >= done_before  # only the rest
    for name in names:
        assert (tmp_path / "results" / out_name(name)).read_bytes() == pillow_jpeg(src / name), name
    assert not list((tmp_path / "results").glob(".*.part"))


def test_a_worker_killed_mid_file_loses_nothing(photo: Path, tmp_path: Path, workers: Workers) -> None:
    src = tmp_path / "in"
    src.mkdir()
    im = Image.open(photo)
    for i in range(6):
        im.crop((i * 300, 0, i * 300 + 1000, 700)).save(src / f"q{i}.png", compress_level=1)
    args = ["--input-dir", "in", "--no-dashboard", "--token", TOKEN, "--host", "127.0.0.1", "--port", "0"]
    master = MasterProcess([*args, "--log-level", "debug"], cwd=tmp_path)
    port = int(master.worker_command()[master.worker_command().index("--port") + 1])
    doomed = workers.start(port, worker_id="doomed", extra=("--throttle", "200"))
    wait_until(lambda: "worker doomed: file" in master.stderr, what="the doomed worker to get a file")
    workers.start(port, worker_id="steady", extra=("--throttle", "5"))
    wait_until(lambda: "worker steady: joined" in master.stderr, what="the steady worker to join")
    os.kill(doomed.pid, signal.SIGKILL)  # it holds files: throttled 200x, it cannot have finished them
    master.finish(timeout=WAIT_S * 3)
    assert master.proc.returncode == 0, master.stderr
    assert "worker doomed" in master.stderr and "requeued" in master.stderr
    for i in range(6):
        np.testing.assert_array_equal(
            np.asarray(Image.open(tmp_path / "results" / f"q{i}_gray.png")), reference(src / f"q{i}.png")
        )
