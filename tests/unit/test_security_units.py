"""Pure pieces of the safety work: admission caps, loopback, fingerprints, result checks,
control characters in logs."""

from __future__ import annotations

import logging
import zlib

import numpy as np
import pytest
from PIL import Image

from distgray.cli.common import EscapingFormatter, printable
from distgray.imaging import jpegstrip, pngstrip, verify
from distgray.imaging.encoded import EncodedStrip
from distgray.imaging.kernel import luma_reference
from distgray.master.admission import Admission
from distgray.net import tls


def test_admission_caps_in_all_and_per_address_but_not_loopback() -> None:
    a = Admission(total=5, per_host=2)
    assert a.admit("10.0.0.1") is None and a.admit("10.0.0.1") is None
    assert "from 10.0.0.1" in str(a.admit("10.0.0.1"))
    assert a.admit("10.0.0.2") is None
    assert a.admit("127.0.0.1") is None and a.admit("127.0.0.1") is None  # local workers: no per-host cap
    assert "5 handshakes already pending" in str(a.admit("10.0.0.3"))
    a.release("10.0.0.1")
    assert a.admit("10.0.0.3") is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("localhost", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("master", False),
        ("192.168.1.10", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert tls.is_loopback(host) is loopback


def test_fingerprints_in_either_spelling() -> None:
    ctx = tls.server_context()
    colons = ":".join(ctx.fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    assert tls.normalize_fingerprint(colons) == ctx.fingerprint
    with pytest.raises(ValueError, match="64 hex digits"):
        tls.normalize_fingerprint("abc")


def test_control_characters_are_escaped_in_log_lines() -> None:
    record = logging.LogRecord("x", logging.WARNING, "f", 1, "worker %s: joined", ("a\nb\x1b[2J\x7f\x9b",), None)
    line = EscapingFormatter("%(message)s").format(record)
    assert line == "worker a\\x0ab\\x1b[2J\\x7f\\x9b: joined"
    assert printable("photo é.jpg") == "photo é.jpg"


# ---------------------------------------------------------------- result checks
@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (61, 37, 3), dtype=np.uint8)


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4])
def test_png_filter_is_the_decoders_inverse(kind: int) -> None:
    rng = np.random.default_rng(kind)
    row, above = rng.integers(0, 256, (2, 53), dtype=np.uint8)
    filtered = verify.png_filter(kind, row, above)
    # Decode the one row with Pillow: a 2-row PNG whose second row carries this filter.
    raw = bytes([0]) + above.tobytes() + bytes([kind]) + filtered.tobytes()
    png = pngstrip.PNG_SIGNATURE + pngstrip.chunk(
        b"IHDR", (53).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    )
    png += pngstrip.chunk(b"IDAT", zlib.compress(raw)) + pngstrip.chunk(b"IEND")
    import io

    decoded = np.asarray(Image.open(io.BytesIO(png)))
    assert np.array_equal(decoded[1], row)


def test_png_strips_pass_and_every_kind_of_damage_is_caught(rgb: np.ndarray) -> None:
    gray = luma_reference(rgb)
    for start, stop in ((0, 20), (20, 61)):
        last = stop == 61
        has_above = start > 0
        piece = pngstrip.encode_strip(
            gray[start - has_above : stop], 6, has_above=has_above, first=start == 0, last=last
        )
        assert verify.check_png(rgb, piece, start, stop, last, count=stop - start) is None
        broken = EncodedStrip(piece.data[:-3], piece.adler, piece.length)
        assert verify.check_png(rgb, broken, start, stop, last, 2) is not None
        garbage = EncodedStrip(bytes(reversed(piece.data)), piece.adler, piece.length)
        assert verify.check_png(rgb, garbage, start, stop, last, 2) is not None
        lied = EncodedStrip(piece.data, piece.adler ^ 1, piece.length)
        assert "Adler-32" in str(verify.check_png(rgb, lied, start, stop, last, 2))
    # Wrong pixels, honestly deflated with a matching Adler-32: only the row check can tell.
    wrong = gray.copy()
    wrong[5, 3] ^= 1
    piece = pngstrip.encode_strip(wrong[0:20], 6, has_above=False, first=True, last=False)
    assert verify.check_png(rgb, piece, 0, 20, False, count=20) is not None
    assert verify.check_png(rgb, piece, 0, 20, False, count=0) is None  # (checks off: trusted)


def test_jpeg_strips_pass_and_damage_is_caught(rgb: np.ndarray) -> None:
    gray = luma_reference(rgb)
    cuts = [(0, 24), (24, 61)]
    for start, stop in cuts:
        last = stop == 61
        piece = jpegstrip.encode_strip(gray[start:stop], 90, start, last)
        assert verify.check_jpeg(rgb, piece, start, stop, last, 90, count=8) is None
        assert verify.check_jpeg(rgb, piece, start, stop, last, 80, count=8) is not None  # another quality
        cut = EncodedStrip(piece.data[: len(piece.data) // 2], 0, piece.length)
        assert verify.check_jpeg(rgb, cut, start, stop, last, 90, count=8) is not None
    wrong = gray.copy()
    wrong[30, 10] = 255 - wrong[30, 10]
    piece = jpegstrip.encode_strip(wrong[24:61], 90, 24, True)
    assert "MCU row 3" in str(verify.check_jpeg(rgb, piece, 24, 61, True, 90, count=8))


def test_plain_rows_and_whole_files(rgb: np.ndarray) -> None:
    import io

    gray = luma_reference(rgb)
    assert verify.check_plain(rgb, gray[10:30], 10, count=20) is None
    off = gray[10:30].copy()
    off[7, 0] ^= 4
    assert "row 17" in str(verify.check_plain(rgb, off, 10, count=20))
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "PNG")
    assert verify.check_file(buf.getvalue(), 37, 61) is None
    assert "37x61" in str(verify.check_file(buf.getvalue(), 61, 37))
    assert "does not decode" in str(verify.check_file(buf.getvalue()[:200], 37, 61))
