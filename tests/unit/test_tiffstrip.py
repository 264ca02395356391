"""Gray TIFF from deflated strips encoded apart: the file the pieces make is read back by Pillow
(libtiff) and tifffile as exactly the gray rows, whatever the cuts; the messages and checks."""

from __future__ import annotations

import io
import itertools
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from distgray.errors import ImageError, ProtocolError
from distgray.imaging import tiffstrip, verify
from distgray.imaging.encoded import EncodedStrip
from distgray.imaging.kernel import to_grayscale
from distgray.jobs.sinks import TiffSink
from distgray.wire import protocol as P
from tests.conftest import PHOTO


def _rgb(width: int, height: int) -> np.ndarray:
    with Image.open(PHOTO) as im:
        return np.asarray(im.convert("RGB").crop((5, 3, 5 + width, 3 + height)))


def _gray(rgb: np.ndarray) -> np.ndarray:
    out = np.empty(rgb.shape[:2], np.uint8)
    to_grayscale(np.ascontiguousarray(rgb), out)
    return out


def _tiff_of(gray: np.ndarray, per_strip: int, cuts: list[int], level: int = 6) -> bytes:
    """The file a sink writes from workers' pieces cut at ``cuts`` (multiples of ``per_strip``);
    ``gray`` rows x width, or rows x width x 2 for gray + alpha."""
    height, width = gray.shape[:2]
    buf = io.BytesIO()
    with TiffSink(buf, width, height, per_strip, level, alpha=gray.ndim == 3) as sink:
        for top, bottom in itertools.pairwise(cuts):
            sink.add(tiffstrip.encode_strip(gray[top:bottom], level, per_strip))
    return buf.getvalue()


@pytest.mark.parametrize(("width", "height", "per_strip"), [(640, 120, 16), (333, 117, 10), (1, 9, 4), (97, 1, 3)])
def test_pieces_make_a_tiff_pillow_and_tifffile_read_as_the_gray_rows(width: int, height: int, per_strip: int) -> None:
    gray = _gray(_rgb(width, height))
    cuts = sorted({*range(0, height, per_strip * 2), height})
    data = _tiff_of(gray, per_strip, cuts)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "L" and im.info["compression"] == "tiff_adobe_deflate"
        assert np.array_equal(np.asarray(im), gray)
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        assert page.compression == 8 and page.predictor == 2 and page.rowsperstrip == min(per_strip, height)
        assert np.array_equal(page.asarray(), gray)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 70),
    st.integers(1, 70),
    st.integers(1, 9),
    st.lists(st.integers(1, 5), min_size=1, max_size=12),
    st.integers(0, 9),
    st.binary(min_size=64, max_size=64),
)
def test_any_cut_into_whole_tiff_strips_reads_back_exactly(
    width: int, height: int, per_strip: int, steps: list[int], level: int, seed: bytes
) -> None:
    """Random gray (no structure for deflate to lean on), any RowsPerStrip, pieces of any number
    of TIFF strips: the file holds exactly the rows."""
    gray = np.random.default_rng(list(seed)).integers(0, 256, (height, width), dtype=np.uint8)
    cuts, top = [0], 0
    for step in steps:
        top = min(height, top + step * per_strip)
        if top > cuts[-1]:
            cuts.append(top)
    if cuts[-1] != height:
        cuts.append(height)
    with Image.open(io.BytesIO(_tiff_of(gray, per_strip, cuts, level))) as im:
        assert np.array_equal(np.asarray(im), gray)


def test_rows_the_master_deflates_itself_make_the_same_file() -> None:
    """``put`` (the master encoding, --encode-on-master) and ``add`` (the workers' pieces)."""
    gray = _gray(_rgb(300, 101))
    buf = io.BytesIO()
    with TiffSink(buf, 300, 101, 8, 6) as sink:
        assert sink.put(gray, 50) == 48  # whole strips below the frontier only
        assert sink.put(gray, 101) == 101
    assert buf.getvalue() == _tiff_of(gray, 8, [0, 48, 101])


def test_a_sink_missing_rows_is_an_error_and_a_failed_one_stops() -> None:
    gray = _gray(_rgb(50, 30))
    with pytest.raises(ImageError, match="row 16 of 30"), TiffSink(io.BytesIO(), 50, 30, 8, 6) as sink:
        sink.add(tiffstrip.encode_strip(gray[:16], 6, 8))
    with pytest.raises(KeyboardInterrupt), TiffSink(io.BytesIO(), 50, 30, 8, 6) as sink:
        sink.add(tiffstrip.encode_strip(gray[:16], 6, 8))
        raise KeyboardInterrupt


def test_the_predictor_is_what_makes_photos_smaller_and_is_undone_exactly() -> None:
    gray = _gray(_rgb(640, 64))
    assert np.array_equal(tiffstrip.unpredict(tiffstrip.predict(gray)), gray)
    plain = tiffstrip.encode_strip(gray, 6, 64, predictor=1).data
    predicted = tiffstrip.encode_strip(gray, 6, 64).data
    assert len(predicted) < len(plain)
    assert zlib.decompress(tiffstrip.split(plain, 1)[0]) == gray.tobytes()


def test_split_refuses_sizes_that_do_not_account_for_every_byte() -> None:
    data = tiffstrip.pack([b"abc", b"de"])
    assert tiffstrip.split(data, 2) == [b"abc", b"de"]
    for bad, count in ((data + b"x", 2), (data[:-1], 2), (data, 3), (b"\x00", 1)):
        with pytest.raises(ValueError):
            tiffstrip.split(bad, count)


# ---------------------------------------------------------------- the messages
def test_tiff_frames_round_trip_and_refuse_strips_off_the_tiff_strips() -> None:
    task = P.TiffTask(1, 2, 20, 45, 9, 3, level=6, predictor=2, rows_per_strip=10, last=True)
    frame = P.encode_frame(task, task.payload_len) + bytes(task.payload_len)
    assert P.FrameDecoder().feed(frame) == [(task, bytes(task.payload_len))]
    piece = tiffstrip.encode_strip(np.zeros((25, 9), np.uint8), 6, 10)
    result = P.TiffResult(1, 2, 20, 45, 9, 10, len(piece.data), compute_us=7)
    assert P.FrameDecoder().feed(P.encode_frame(result, len(piece.data)) + piece.data) == [(result, piece.data)]
    with pytest.raises(ValueError):
        P.TiffTask(1, 2, 20, 45, 9, 3, rows_per_strip=10).encode()  # 25 rows: not whole strips, not last
    with pytest.raises(ValueError):
        P.TiffTask(1, 2, 20, 40, 9, 3, predictor=3, rows_per_strip=10).encode()
    misaligned = bytearray(P.TiffTask(1, 2, 20, 40, 9, 3, rows_per_strip=10).encode())
    misaligned[8:12] = (15).to_bytes(4, "big")  # row_start 15: inside a TIFF strip
    with pytest.raises(ProtocolError, match="whole TIFF strips"):
        P.TiffTask.decode(bytes(misaligned), 25 * 9 * 3)
    with pytest.raises(ProtocolError, match="bytes for 3 TIFF strips"):
        P.TiffResult.decode(result.encode(), 10**9)  # more than 3 strips of 9 x 10 can deflate to
    with pytest.raises(ProtocolError, match="bytes for 3 TIFF strips"):
        P.TiffResult.decode(result.encode(), 12)  # sizes only, no strip


# ---------------------------------------------------------------- the master's check
def _check(rgb: np.ndarray, piece_data: bytes, start: int, stop: int, per_strip: int) -> str | None:
    return verify.check_tiff(rgb, EncodedStrip(piece_data, 0, stop - start), start, stop, per_strip, stop - start)


def test_the_check_passes_honest_pieces_and_names_what_is_wrong_in_others() -> None:
    rgb = _rgb(120, 60)
    gray = _gray(rgb)
    honest = tiffstrip.encode_strip(gray[20:60], 6, 10).data
    assert _check(rgb, honest, 20, 60, 10) is None
    wrong = gray[20:60].copy()
    wrong[17, 3] ^= 1
    assert "row 37 differs" in (_check(rgb, tiffstrip.encode_strip(wrong, 6, 10).data, 20, 60, 10) or "")
    short = tiffstrip.pack([zlib.compress(tiffstrip.predict(gray[20:30]).tobytes())] * 3 + [zlib.compress(b"x")])
    assert "inflates to 1 bytes" in (_check(rgb, short, 20, 60, 10) or "")
    broken = tiffstrip.pack([b"\x78\x9cnot zlib"] * 4)
    assert "broken" in (_check(rgb, broken, 20, 60, 10) or "")
    unfinished = zlib.compressobj()
    cut = unfinished.compress(tiffstrip.predict(gray[20:30]).tobytes()) + unfinished.flush(zlib.Z_SYNC_FLUSH)
    pieces = [cut, *tiffstrip.split(honest, 4)[1:]]
    assert "does not end" in (_check(rgb, tiffstrip.pack(pieces), 20, 60, 10) or "")
    assert "add up to" in (_check(rgb, honest + b"!", 20, 60, 10) or "")


def test_a_tiff_from_a_file_path_is_what_pillow_saves(tmp_path: Path) -> None:
    """The same pixels whichever way a TIFF is written: the sink's strips or Pillow's own deflate
    (outputs Pillow composes itself, such as a gray image with alpha kept)."""
    gray = _gray(_rgb(200, 90))
    ours = tmp_path / "ours.tif"
    ours.write_bytes(_tiff_of(gray, 7, [0, 21, 42, 90]))
    Image.fromarray(gray).save(tmp_path / "pillow.tif", compression="tiff_adobe_deflate")
    with Image.open(ours) as a, Image.open(tmp_path / "pillow.tif") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_gray_and_alpha_pieces_make_an_la_tiff_and_the_check_covers_the_alpha() -> None:
    rgba = np.dstack([_rgb(90, 40), np.random.default_rng(3).integers(0, 256, (40, 90), dtype=np.uint8)])
    la = np.dstack([_gray(rgba[..., :3]), rgba[..., 3]])
    with Image.open(io.BytesIO(_tiff_of(la, 6, [0, 12, 30, 40]))) as im:
        assert im.mode == "LA" and np.array_equal(np.asarray(im), la)
    piece = tiffstrip.encode_strip(la[12:30], 6, 6)
    assert verify.check_tiff(rgba, piece, 12, 30, 6, 18, alpha=True) is None
    wrong = la[12:30].copy()
    wrong[4, 7, 1] ^= 0x10  # the alpha of one pixel
    bad = tiffstrip.encode_strip(wrong, 6, 6)
    assert "row 16 differs" in (verify.check_tiff(rgba, bad, 12, 30, 6, 18, alpha=True) or "")
    gray_only = tiffstrip.encode_strip(la[12:30, :, 0], 6, 6)  # a worker that ignored ALPHA
    assert "inflates to" in (verify.check_tiff(rgba, gray_only, 12, 30, 6, 18, alpha=True) or "")


def test_alpha_tasks_need_four_channels_on_both_sides() -> None:
    task = P.TiffTask(1, 2, 0, 10, 9, 4, rows_per_strip=5, last=True, alpha=True)
    assert P.FrameDecoder().feed(P.encode_frame(task, task.payload_len) + bytes(task.payload_len))[0][0] == task
    with pytest.raises(ValueError):
        P.TiffTask(1, 2, 0, 10, 9, 3, rows_per_strip=5, alpha=True).encode()
    raw = bytearray(task.encode())
    raw[20] = 3  # channels 3, alpha still set
    with pytest.raises(ProtocolError, match="alpha of 3 channels"):
        P.TiffTask.decode(bytes(raw), 10 * 9 * 3)
