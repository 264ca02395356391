"""Whole-file work, without sockets: FILE_TASK/FILE_RESULT frames, the file queue, batch
planning (discovery, names, resume checks), and whole-file conversion against Pillow."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from distgray.errors import ImageError, ProtocolError
from distgray.imaging import files, save
from distgray.jobs.batch import BatchOptions, discover, plan
from distgray.scheduling.files import FileQueue, FileUnit, UnitState
from distgray.wire import protocol as P
from tests.conftest import PHOTO

# ------------------------------------------------------------------------------------- frames


def frames(message: P.Message, payload: bytes) -> list[tuple[P.Message, bytes]]:
    decoder = P.FrameDecoder()
    data = P.encode_frame(message, len(payload)) + payload
    out: list[tuple[P.Message, bytes]] = []
    for i in range(0, len(data), 3):
        out += decoder.feed(data[i : i + 3])
    return out


def test_file_task_and_result_round_trip() -> None:
    task = P.FileTask(2, 7, 11, 1000, "PNG", quality=0, png_level=1)
    assert frames(task, b"abcdefghijk") == [(task, b"abcdefghijk")]
    ok = P.FileResult(2, 7, 5, P.FileStatus.OK, 640, 480, 1, 2, 3, mode="RGB")
    assert frames(ok, b"12345") == [(ok, b"12345")]
    bad = P.FileResult(2, 7, 0, P.FileStatus.BAD_INPUT, message="cannot decode image: truncated")
    assert frames(bad, b"") == [(bad, b"")]


FT = struct.Struct(">IIQQBBBB")
FR = struct.Struct(">IIQBBHIIIII")


def _raw(kind: P.MessageType, header: bytes, payload_len: int) -> bytes:
    return P.PREFIX.pack(P.MAGIC, P.PROTOCOL_VERSION, int(kind), 0, len(header), payload_len) + header


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (_raw(P.MessageType.FILE_TASK, FT.pack(1, 1, 10, 9, 0, 6, 1, 0) + b"\x00\x03PNG", 9), "does not match"),
        (_raw(P.MessageType.FILE_TASK, FT.pack(1, 1, 0, 9, 0, 6, 1, 0) + b"\x00\x03PNG", 0), "size 0"),
        (_raw(P.MessageType.FILE_TASK, FT.pack(1, 1, 4, 9, 0, 6, 1, 0) + b"\x00\x03EXE", 4), "unsupported"),
        (_raw(P.MessageType.FILE_TASK, FT.pack(1, 1, 4, 9, 101, 6, 1, 0) + b"\x00\x03PNG", 4), "unsupported"),
        (_raw(P.MessageType.FILE_TASK, FT.pack(1, 1, 4, 9, 0, 10, 1, 0) + b"\x00\x03PNG", 4), "unsupported"),
        (_raw(P.MessageType.FILE_TASK, FT.pack(1, 1, 4, 9, 0, 6, 1, 0) + b"\x00\x40" + b"P" * 64, 4), "exceeds"),
        (_raw(P.MessageType.FILE_RESULT, FR.pack(1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0) + b"\0\0\0\0", 0), "disagree"),
        (_raw(P.MessageType.FILE_RESULT, FR.pack(1, 1, 3, 1, 0, 0, 1, 1, 0, 0, 0) + b"\0\0\0\0", 3), "disagree"),
        (_raw(P.MessageType.FILE_RESULT, FR.pack(1, 1, 3, 0, 0, 0, 1, 1, 0, 0, 0) + b"\0\0\0\0", 4), "disagree"),
        (_raw(P.MessageType.FILE_RESULT, FR.pack(1, 1, 0, 9, 0, 0, 1, 1, 0, 0, 0) + b"\0\0\0\0", 0), "status"),
    ],
)
def test_malformed_file_frames(raw: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        P.FrameDecoder().feed(raw + b"\x00" * 16)


def test_a_file_task_is_bounded_by_the_receivers_limit() -> None:
    raw = P.encode_frame(P.FileTask(1, 1, 2048, 10, "PNG"), 2048)
    with pytest.raises(ProtocolError, match="exceeds"):
        P.FrameDecoder(max_payload=1024).feed(raw)


# ------------------------------------------------------------------------------------- queue


def units(n: int) -> list[FileUnit]:
    return [FileUnit(i, Path(f"{i}.png"), Path(f"{i}_gray.png"), "PNG", 10, 10, 100) for i in range(n)]


def test_queue_hands_out_in_order_and_requeues_a_lost_workers_files() -> None:
    q = FileQueue(1, units(3), max_pixels=1000)
    a, b = q.next_for("w1", 0.0), q.next_for("w1", 0.0)
    assert (a.id, b.id) == (0, 1)  # type: ignore[union-attr]
    assert q.attempt_lost(0, "w1", "gone", 1.0) and q.units[0].state is UnitState.PENDING
    assert q.next_for("w2", 1.0).id == 0  # type: ignore[union-attr]  # lost work first in line
    assert not q.attempt_lost(0, "w1", "late", 1.0)  # no longer w1's
    q.done(0, "w2", 2.0, 50, 0.1)
    q.failed(1, "cannot decode image", 2.0)
    assert not q.finished
    q.done(q.next_for("w2", 3.0).id, "w2", 3.0, 50, 0.1)  # type: ignore[union-attr]
    assert q.finished and [u.state for u in q.units.values()].count(UnitState.DONE) == 2


def test_queue_prefers_a_worker_that_has_not_failed_the_file() -> None:
    q = FileQueue(1, units(2), max_pixels=1000)
    q.next_for("w1", 0.0)
    q.attempt_lost(0, "w1", "gone", 0.0)
    assert q.next_for("w1", 0.0).id == 1  # type: ignore[union-attr]
    assert q.next_for("w2", 0.0).id == 0  # type: ignore[union-attr]


def test_queue_gives_up_after_max_attempts() -> None:
    q = FileQueue(1, units(1), max_pixels=1000, max_attempts=2)
    for w in ("w1", "w2"):
        assert q.next_for(w, 0.0) is not None
        q.attempt_lost(0, w, f"{w} died", 0.0)
    assert q.units[0].state is UnitState.FAILED and "failed on 2 workers (w1, w2); last: w2 died" in str(
        q.units[0].error
    )
    assert q.finished


# ------------------------------------------------------------------------------------- planning


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    im = Image.new("RGB", (40, 30), (10, 200, 30))
    for rel in ("a.jpg", "a.png", "B.JPG", "sub/c.webp", "sub/notes.txt"):
        im.save(root / rel, format="PNG") if rel.endswith(".txt") else im.save(root / rel)
    (root / "folder.png").mkdir()
    os.symlink(root, root / "sub" / "back")  # a directory loop: never followed
    return root


def names(items: list) -> list[str]:  # type: ignore[type-arg]
    return [i.name for i in items]


def test_discovery_recursive_pattern_and_skipping_our_output(folder: Path) -> None:
    out = folder / "results"
    (out / "sub").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(out / "old_gray.png")
    opts = BatchOptions(input_dir=folder, output_dir=out)
    assert names(discover(opts)) == ["B.JPG", "a.jpg", "a.png", "folder.png"]
    recursive = BatchOptions(input_dir=folder, output_dir=out, recursive=True)
    assert names(discover(recursive)) == ["B.JPG", "a.jpg", "a.png", "folder.png", "sub/c.webp"]
    only_jpg = BatchOptions(input_dir=folder, output_dir=out, recursive=True, pattern="*.jpg")
    assert names(discover(only_jpg)) == ["B.JPG", "a.jpg"]


def test_planning_names_outputs_without_collisions_and_checks_inputs(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    opts = BatchOptions(input_dir=folder, output_dir=out, recursive=True, format="PNG")
    items = discover(opts)
    plan(items, opts)
    by_name = {i.name: i for i in items}
    assert by_name["a.jpg"].output == out / "a_gray.png"
    assert by_name["a.png"].output == out / "a-png_gray.png"  # not a second a_gray.png
    assert by_name["sub/c.webp"].output == out / "sub" / "c_gray.png"
    assert by_name["folder.png"].status == "failed" and "is a directory" in by_name["folder.png"].reason
    assert all(i.status == "pending" and (i.width, i.height) == (40, 30) for i in items if i.name != "folder.png")


def test_an_output_that_would_overwrite_its_input_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "x_gray.png"
    Image.new("RGB", (4, 4)).save(src)
    (tmp_path / "x.png").symlink_to(src)  # x.png's output would be x_gray.png: the file itself
    opts = BatchOptions(images=(tmp_path / "x.png",), output_dir=tmp_path)
    items = discover(opts)
    plan(items, opts)
    assert items[0].status == "failed" and "would overwrite the input" in items[0].reason


def test_resume_reuses_only_outputs_the_log_says_came_from_this_input(tmp_path: Path) -> None:
    from distgray.jobs import provenance
    from distgray.jobs.batch import LOG_NAME, output_options

    src = tmp_path / "p.png"
    Image.new("RGB", (50, 20), (1, 2, 3)).save(src)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".p_gray.png.abc123.part"
    stale.write_bytes(b"half")
    opts = BatchOptions(images=(src,), output_dir=out)
    Image.new("L", (50, 20)).save(out / "p_gray.png")  # complete, but nobody says where it came from
    items = discover(opts)
    plan(items, opts)
    assert items[0].status == "pending" and not stale.exists()

    def made_here() -> None:
        fields = provenance.converted(src, out / "p_gray.png", None, output_options("PNG", None, 6))
        provenance.record(
            out / LOG_NAME, {"input": str(src), "output": str(out / "p_gray.png"), "status": "converted", **fields}
        )

    made_here()
    items = discover(opts)
    plan(items, opts)
    assert items[0].status == "skipped"
    assert (
        provenance.up_to_date(provenance.index([out / LOG_NAME]), src, out / "p_gray.png", output_options("PNG", 95, 6))
        is False
    )
    (out / "p_gray.png").write_bytes((out / "p_gray.png").read_bytes()[:40])  # damaged since: redo
    items = discover(opts)
    plan(items, opts)
    assert items[0].status == "pending"
    Image.new("L", (50, 20)).save(out / "p_gray.png")
    made_here()
    Image.new("RGB", (50, 20), (9, 9, 9)).save(src)  # the input changed: redo
    items = discover(opts)
    plan(items, opts)
    assert items[0].status == "pending"
    made_here()
    over = BatchOptions(images=(src,), output_dir=out, overwrite=True)
    items = discover(over)
    plan(items, over)
    assert items[0].status == "pending"


# ------------------------------------------------------------------------------------- conversion

MODES = {
    "RGB": lambda im: im,
    "RGBA": lambda im: im.convert("RGBA"),
    "P": lambda im: im.convert("P", palette=Image.Palette.ADAPTIVE),
    "CMYK": lambda im: im.convert("CMYK"),
    "L": lambda im: im.convert("L"),
    "LA": lambda im: im.convert("LA"),
}


@pytest.fixture(scope="module")
def crop() -> Image.Image:
    with Image.open(PHOTO) as im:
        return im.crop((1000, 600, 1000 + 333, 600 + 201)).convert("RGB")


STORABLE = [  # (format, mode) pairs a real file can hold
    *(("PNG", m) for m in ("RGB", "RGBA", "P", "L", "LA")),
    *(("TIFF", m) for m in ("RGB", "RGBA", "P", "CMYK", "L", "LA")),
    *(("WEBP", m) for m in ("RGB", "RGBA")),
    *(("JPEG", m) for m in ("RGB", "CMYK", "L")),
    *(("BMP", m) for m in ("RGB", "P", "L")),
]


@pytest.mark.parametrize(("fmt", "mode"), STORABLE)
def test_whole_file_conversion_is_pillows(crop: Image.Image, mode: str, fmt: str) -> None:
    src = MODES[mode](crop)
    buf = io.BytesIO()
    src.save(buf, format=fmt)
    options = save.save_options("PNG", None, 6)
    done = files.convert_encoded(buf.getvalue(), "PNG", options)
    with Image.open(io.BytesIO(buf.getvalue())) as decoded:
        expected = np.asarray(ImageOps.exif_transpose(decoded).convert("L"))
    got = Image.open(io.BytesIO(done.data))
    np.testing.assert_array_equal(np.asarray(got.getchannel(0)), expected)
    assert (done.width, done.height) == crop.size


def test_multi_page_tiff_converts_the_first_page(crop: Image.Image) -> None:
    buf = io.BytesIO()
    crop.save(buf, format="TIFF", save_all=True, append_images=[crop.transpose(Image.Transpose.ROTATE_180)])
    done = files.convert_encoded(buf.getvalue(), "PNG", {})
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(done.data))), np.asarray(crop.convert("L")))


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the damaged files: expected
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"]), st.data())
def test_mutated_real_files_only_raise_image_errors(fmt: str, data: st.DataObject) -> None:
    """Flip, cut or splice bytes of a real file: the loader either decodes it or says why, within limits."""
    small = Image.open(PHOTO).crop((0, 0, 96, 64)).convert("RGB")
    buf = io.BytesIO()
    small.save(buf, format=fmt)
    raw = bytearray(buf.getvalue())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "dup"]))
        if action == "flip":
            raw[pos] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[pos:]
            if not raw:
                raw += b"\x00"
        else:
            raw[pos:pos] = raw[pos : pos + data.draw(st.integers(1, 64))]
    try:
        done = files.convert_encoded(bytes(raw), "PNG", {}, max_pixels=10_000_000)
    except ImageError:
        return
    assert done.width * done.height <= 10_000_000


def test_indexed_tasks_share_the_inputs_by_name_whatever_the_listing_order(folder: Path, tmp_path: Path) -> None:
    """Each input in exactly one task's share, the same share whatever order the listing came in
    (each task lists the folder itself), and outputs named as the whole listing would name them."""
    from distgray.jobs.batch import share_of

    names_ = [f"dir{i % 7}/photo_{i:05d}.jpg" for i in range(3000)]
    counts = [sum(1 for n in names_ if share_of(n, 3) == k) for k in range(3)]
    assert sum(counts) == 3000 and min(counts) > 900  # a fair split (the hash), not a lopsided one
    assert [share_of(n, 3) for n in reversed(names_)] == [share_of(n, 3) for n in names_][::-1]
    out = tmp_path / "out"
    whole = BatchOptions(input_dir=folder, output_dir=out, recursive=True, format="PNG")
    everything = discover(whole)
    plan(everything, whole)
    outputs = {i.name: i.output for i in everything}
    seen: list[str] = []
    for index in range(2):
        opts = BatchOptions(
            input_dir=folder, output_dir=out, recursive=True, format="PNG", task_index=index, task_count=2
        )
        shuffled = discover(opts)[::-1]  # another order of the same listing
        plan(shuffled, opts)
        assert all(outputs[i.name] == i.output for i in shuffled)  # a.png is still a-png_gray.png
        seen += [i.name for i in shuffled]
        assert opts.log_name == f"distgray-log-task-{index}-of-2.jsonl"
    assert sorted(seen) == sorted(outputs)
