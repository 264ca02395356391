"""Gray JPEG joined from strips encoded apart: Pillow's own bytes (with restart markers), the
same decoded pixels as Pillow's default file, readable everywhere."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distgray.errors import ImageError, ProtocolError
from distgray.imaging import jpegstrip
from distgray.wire import protocol as P
from tests.conftest import PHOTO, pillow_jpeg_bytes


def _gray(width: int, height: int) -> np.ndarray:
    with Image.open(PHOTO) as im:
        return np.asarray(im.convert("L").crop((3, 7, 3 + width, 7 + height)))


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


LAYOUTS = {
    "one strip": lambda h: [0, h],
    "one MCU row each": lambda h: [*range(0, h, 8), h],
    "uneven, more than 8 strips": lambda h: sorted(
        {c for c in (8, 16, 24, 48, 56, 64, 72, 80, 96, 104) if c < h} | {0, h}
    ),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize(("width", "height"), [(640, 120), (333, 117), (9, 131), (1, 8)])
@pytest.mark.parametrize("quality", [95, 50])
def test_joined_strips_are_pillows_bytes_and_pixels(layout: str, width: int, height: int, quality: int) -> None:
    gray = _gray(width, height)
    cuts = LAYOUTS[layout](height)
    joined = jpegstrip.join(width, height, quality, cuts, gray)
    assert joined == pillow_jpeg_bytes(gray, quality, strips=True)
    assert np.array_equal(_decode(joined), _decode(pillow_jpeg_bytes(gray, quality)))


def test_opens_in_opencv_and_libvips(tmp_path: Path) -> None:
    import cv2  # test extras: other readers of our files
    import pyvips

    gray = _gray(501, 203)
    path = tmp_path / "strips.jpg"
    path.write_bytes(jpegstrip.join(501, 203, 95, [0, 64, 72, 200, 203], gray))
    expected = _decode(pillow_jpeg_bytes(gray))
    assert np.array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), expected)
    vips = pyvips.Image.new_from_file(str(path))
    assert np.array_equal(np.ndarray(buffer=vips.write_to_memory(), dtype=np.uint8, shape=gray.shape), expected)


def test_strips_must_sit_on_mcu_rows() -> None:
    gray = _gray(64, 40)
    with pytest.raises(ValueError, match="MCU rows"):
        jpegstrip.encode_strip(gray[4:20], 95, 4, False)
    with pytest.raises(ValueError, match="MCU rows"):
        jpegstrip.encode_strip(gray[8:20], 95, 8, False)
    assert jpegstrip.encode_strip(gray[8:20], 95, 8, True).length == 12  # the last may be short


def test_a_missing_strip_is_caught() -> None:
    gray = _gray(64, 40)
    joiner = jpegstrip.JpegJoiner(64, 40, 95)
    joiner.head()
    joiner.strip(jpegstrip.encode_strip(gray[:16], 95, 0, False))
    with pytest.raises(ImageError, match="16 rows"):
        joiner.tail()


def test_too_big_for_jpeg() -> None:
    with pytest.raises(ImageError, match="cannot hold"):
        jpegstrip.header(70_000, 10, 95)


def test_jpeg_frames_round_trip_and_refuse_misaligned_strips() -> None:
    task = P.JpegTask(1, 2, 16, 40, 9, 3, quality=80, last=False)
    encoded = P.encode_frame(task, task.payload_len) + bytes(task.payload_len)
    decoder = P.FrameDecoder()
    assert decoder.feed(encoded) == [(task, bytes(task.payload_len))]
    result = P.JpegResult(1, 2, 16, 40, 9, size=5, compute_us=7)
    assert P.FrameDecoder().feed(P.encode_frame(result, 5) + b"12345") == [(result, b"12345")]
    with pytest.raises(ValueError):
        P.JpegTask(1, 2, 4, 40, 9, 3, quality=80).encode()
    misaligned = bytearray(task.encode())
    misaligned[8:12] = (12).to_bytes(4, "big")  # row_start 12: not on an MCU row
    with pytest.raises(ProtocolError, match="JPEG_TASK"):
        P.JpegTask.decode(bytes(misaligned), (40 - 12) * 9 * 3)
    with pytest.raises(ProtocolError, match="bytes for"):
        P.JpegResult.decode(result.encode(), 10**9)
