"""The sans-IO protocol: round trips, byte-at-a-time decoding, every malformed frame, auth proofs."""

from __future__ import annotations

import contextlib
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distgray.errors import ProtocolError, VersionMismatch
from distgray.imaging import kernel
from distgray.wire import protocol as P

MESSAGES: list[P.Message] = [
    P.Hello("host-1234", ("luma-u8", "future-thing")),
    P.Challenge(True, bytes(range(32))),
    P.Challenge(False, b"\x00" * 32),
    P.Auth(b"\x11" * 32, b"\x22" * 32),
    P.Welcome(b"\x33" * 32, 2000, 20000, 2, "host-1234#2"),
    P.Heartbeat(),
    P.Error(P.ErrorCode.AUTH_FAILED, "authentication failed: wrong token"),
    P.Error(P.ErrorCode.BAD_TASK, "bad strip", strip_id=7),
    P.Bye("job finished"),
    P.Bye(""),
    P.ShmOffer("distgray-123-probe1-0a1b2c3d"),
    P.ShmAnswer(True, bytes(range(16))),
    P.ShmAnswer(False),
    P.Task(1, 2, 0, 64, 7680, 3, "distgray-123-job2-0a1b2c3d", 7680 * 3 * 64),
]


def frame(message: P.Message, payload: bytes = b"") -> bytes:
    return P.encode_frame(message, len(payload)) + payload


def decode_all(data: bytes, chunk: int = 1, **kw: int) -> list[tuple[P.Message, bytes]]:
    decoder = P.FrameDecoder(**kw)
    out: list[tuple[P.Message, bytes]] = []
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i : i + chunk])
    assert not decoder.mid_frame
    return out


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_byte_at_a_time(message: P.Message) -> None:
    assert decode_all(frame(message)) == [(message, b"")]


def test_task_and_result_carry_exact_payloads() -> None:
    task = P.Task(job_id=3, strip_id=9, row_start=10, row_stop=13, width=5, channels=3)
    result = P.Result(3, 9, 10, 13, 5, recv_us=11, compute_us=22, send_us=33)
    rgb = bytes(range(45))
    gray = bytes(range(15))
    stream = frame(task, rgb) + frame(result, gray) + frame(P.Heartbeat())
    for chunk in (1, 7, 64, len(stream)):
        assert decode_all(stream, chunk) == [(task, rgb), (result, gray), (P.Heartbeat(), b"")]


def test_png_task_and_result_carry_exact_payloads() -> None:
    task = P.PngTask(4, 1, 10, 12, 5, 3, level=6, above=True, last=True)
    pixels = bytes(range(45))  # 3 rows: the row above + 2
    assert task.payload_len == 45
    deflated = b"\x01\x02\x03"
    result = P.PngResult(4, 1, 10, 12, 5, adler32=0x12345678, filtered_len=12, size=3, recv_us=5)
    stream = frame(task, pixels) + frame(result, deflated)
    for chunk in (1, 9, len(stream)):
        assert decode_all(stream, chunk) == [(task, pixels), (result, deflated)]
    by_reference = P.PngTask(4, 1, 10, 12, 5, 3, "distgray-1-job1-00ff00ff", 123, level=1)
    assert decode_all(frame(by_reference)) == [(by_reference, b"")]


def test_prefix_layout_is_big_endian_and_20_bytes() -> None:
    raw = P.encode_frame(P.Task(1, 2, 0, 1, 4), 12)
    assert len(raw) == P.PREFIX_BYTES + 24
    assert raw[:4] == b"DGRY" and raw[4] == 1 and raw[5] == 0x10 and raw[6:8] == b"\0\0"
    assert struct.unpack(">I", raw[8:12]) == (24,)
    assert struct.unpack(">Q", raw[12:20]) == (12,)


def test_partial_frame_is_reported_mid_frame() -> None:
    decoder = P.FrameDecoder()
    data = frame(P.Bye("x"))
    assert decoder.feed(data[:-1]) == []
    assert decoder.mid_frame
    assert decoder.feed(data[-1:]) == [(P.Bye("x"), b"")]
    assert not decoder.mid_frame


def _prefix(
    magic: bytes = b"DGRY",
    version: int = 1,
    mtype: int = 0x20,
    flags: int = 0,
    header_len: int = 0,
    payload_len: int = 0,
) -> bytes:
    return struct.pack(">4sBBHIQ", magic, version, mtype, flags, header_len, payload_len)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (_prefix(magic=b"GET "), "bad magic"),
        (_prefix(mtype=0x55), "unknown message type"),
        (_prefix(flags=1), "reserved flags"),
        (_prefix(header_len=P.MAX_HEADER_BYTES + 1), "header_len"),
        (_prefix(mtype=0x20, payload_len=1), "carries no payload"),
        (_prefix(mtype=0x10, header_len=24, payload_len=P.MAX_PAYLOAD_BYTES + 1), "exceeds limit"),
        (_prefix(mtype=0x11, header_len=32, payload_len=2**64 - 1), "exceeds limit"),
    ],
)
def test_bad_prefixes_fail_before_anything_is_allocated(raw: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        P.FrameDecoder().feed(raw)


def test_receiver_limit_is_tighter_than_the_protocol_limit() -> None:
    raw = _prefix(mtype=0x10, header_len=24, payload_len=1001)
    with pytest.raises(ProtocolError, match="exceeds limit 1000"):
        P.decode_prefix(raw, max_payload=1000)


def test_wrong_version_is_its_own_error() -> None:
    with pytest.raises(VersionMismatch) as info:
        P.decode_prefix(_prefix(version=2))
    assert info.value.version == 2
    assert "version 2" in str(info.value)


def _with_header(mtype: P.MessageType, header: bytes, payload_len: int = 0) -> bytes:
    return _prefix(mtype=mtype, header_len=len(header), payload_len=payload_len) + header


TASK_FMT = struct.Struct(">IIIIIBBBB")
RESULT_FMT = struct.Struct(">IIIIIBBHIII")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (_with_header(P.MessageType.TASK, TASK_FMT.pack(1, 1, 0, 2, 4, 3, 1, 1, 0), 23), "needs 24 bytes"),
        (_with_header(P.MessageType.TASK, TASK_FMT.pack(1, 1, 5, 5, 4, 3, 1, 1, 0), 0), "empty or reversed"),
        (_with_header(P.MessageType.TASK, TASK_FMT.pack(1, 1, 0, 1, 4, 2, 1, 1, 0), 8), "unsupported"),
        (_with_header(P.MessageType.TASK, TASK_FMT.pack(1, 1, 0, 1, 4, 3, 2, 1, 0), 12), "unsupported"),
        (_with_header(P.MessageType.TASK, TASK_FMT.pack(1, 1, 0, 1, 0, 3, 1, 1, 0), 0), "out of range"),
        (_with_header(P.MessageType.TASK, TASK_FMT.pack(1, 1, 0, 1, 4, 3, 1, 1, 0)[:-1], 12), "too short"),
        (_with_header(P.MessageType.TASK, TASK_FMT.pack(1, 1, 0, 1, 4, 3, 1, 1, 0) + b"x", 12), "trailing"),
        (_with_header(P.MessageType.RESULT, RESULT_FMT.pack(1, 1, 0, 2, 4, 1, 1, 0, 0, 0, 0), 9), "needs 8"),
        (_with_header(P.MessageType.RESULT, RESULT_FMT.pack(1, 1, 0, 2, 4, 3, 1, 0, 0, 0, 0), 8), "unsupported"),
        (_with_header(P.MessageType.HELLO, b"\x00\x00\x00\x00"), "empty worker id"),
        (_with_header(P.MessageType.HELLO, b"\x00\x02\xff\xfe\x00\x00"), "not UTF-8"),
        (_with_header(P.MessageType.HELLO, b"\x01\x00" + b"a" * 256 + b"\x00\x00"), "exceeds limit 128"),
        (_with_header(P.MessageType.HELLO, b"\x00\x01a\x00\x21"), "capabilities exceeds"),
        (_with_header(P.MessageType.CHALLENGE, b"\x02" + b"n" * 32), "auth_required"),
        (_with_header(P.MessageType.AUTH, b"p" * 63), "too short"),
        (_with_header(P.MessageType.WELCOME, b"p" * 32 + struct.pack(">IIH", 0, 1, 1) + b"\0\1w"), "heartbeat"),
        (_with_header(P.MessageType.HEARTBEAT, b"?"), "trailing"),
        (_with_header(P.MessageType.ERROR, b"\x00\x01"), "too short"),
        (_with_header(P.MessageType.BYE, b"\x00\x05abc"), "too short"),
    ],
)
def test_malformed_headers(raw: bytes, match: str) -> None:
    decoder = P.FrameDecoder()
    with pytest.raises(ProtocolError, match=match):
        for byte in raw:
            decoder.feed(bytes([byte]))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_protocol_errors(data: bytes) -> None:
    decoder = P.FrameDecoder(max_payload=1 << 16)
    with contextlib.suppress(ProtocolError):
        decoder.feed(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=60), st.integers(0, 400))
def test_mutated_valid_frames_only_raise_protocol_errors(junk: bytes, pos: int) -> None:
    good = frame(P.Task(1, 2, 0, 2, 3), bytes(18)) + frame(P.Hello("w", ("luma-u8",)))
    pos %= len(good)
    data = good[:pos] + junk + good[pos + len(junk) :]
    with contextlib.suppress(ProtocolError):
        P.FrameDecoder(max_payload=1 << 16).feed(data)


@given(st.text(min_size=1, max_size=40), st.lists(st.text(max_size=20), max_size=5))
def test_hello_round_trips_any_text(worker_id: str, caps: list[str]) -> None:
    hello = P.Hello(worker_id, tuple(caps))
    if len(worker_id.encode()) > 128 or any(len(c.encode()) > 64 for c in caps):
        with pytest.raises(ValueError):
            hello.encode()
    else:
        assert decode_all(frame(hello), chunk=3) == [(hello, b"")]


def test_auth_proofs() -> None:
    token, nonce_m, nonce_w = b"s3cret", b"m" * 32, b"w" * 32
    proof = P.worker_proof(token, nonce_m, "w1")
    assert len(proof) == 32
    assert P.proofs_match(P.worker_proof(token, nonce_m, "w1"), proof)
    assert not P.proofs_match(P.worker_proof(b"wrong", nonce_m, "w1"), proof)
    assert not P.proofs_match(P.worker_proof(token, b"x" * 32, "w1"), proof)
    assert not P.proofs_match(P.worker_proof(token, nonce_m, "w2"), proof)
    assert P.proofs_match(P.master_proof(token, nonce_w), P.master_proof(token, nonce_w))
    assert not P.proofs_match(P.master_proof(b"wrong", nonce_w), P.master_proof(token, nonce_w))
    # The two directions are domain-separated: a reflected proof never verifies.
    assert P.master_proof(token, nonce_m) != P.worker_proof(token, nonce_m, "")


def _doc_hex_blocks(section: str = "## Worked example\n") -> list[bytes]:
    """The hex dumps in one of docs/PROTOCOL.md's worked examples (leading 2-digit tokens of each line)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md").read_text()
    example = text[text.index(section) :]
    example = example[: example.index("\n## ", 1)]
    blocks = []
    for block in re.findall(r"```\n(.*?)```", example, re.S):
        data = bytearray()
        for line in block.splitlines():
            for token in line.split():
                if not re.fullmatch(r"[0-9a-f]{2}", token):
                    break
                data.append(int(token, 16))
        blocks.append(bytes(data))
    return blocks


def test_documented_example_is_what_the_code_does() -> None:
    """docs/PROTOCOL.md's worked example, byte for byte, decoded and recomputed."""
    task_frame, result_frame = _doc_hex_blocks()
    ((task, rgb),) = decode_all(task_frame, chunk=5)
    assert task == P.Task(job_id=1, strip_id=0, row_start=0, row_stop=2, width=3, channels=3)
    gray = kernel.to_grayscale(np.frombuffer(rgb, np.uint8).reshape(2, 3, 3), np.empty((2, 3), np.uint8))
    result = P.Result(1, 0, 0, 2, 3, recv_us=250, compute_us=40, send_us=0)
    assert P.encode_frame(result, result.payload_len) + gray.tobytes() == result_frame
    assert gray.tolist() == [[76, 150, 29], [255, 128, 0]]
    heartbeat = "44 47 52 59 01 20 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    assert heartbeat in (Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md").read_text()
    assert P.encode_frame(P.Heartbeat()).hex(" ") == heartbeat


PNG_TASK_FMT = struct.Struct(">IIIIIBBBBBBBB")
PNG_RESULT_FMT = struct.Struct(">IIIIIIQIII")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (_with_header(P.MessageType.PNG_TASK, PNG_TASK_FMT.pack(1, 1, 0, 2, 4, 3, 1, 1, 0, 10, 0, 0, 0), 24), "level"),
        (_with_header(P.MessageType.PNG_TASK, PNG_TASK_FMT.pack(1, 1, 0, 2, 4, 3, 1, 1, 2, 6, 0, 0, 0), 36), "above"),
        (
            _with_header(P.MessageType.PNG_TASK, PNG_TASK_FMT.pack(1, 1, 5, 7, 4, 3, 1, 1, 2, 6, 0, 0, 0), 24),
            "needs 36",
        ),
        (_with_header(P.MessageType.PNG_TASK, PNG_TASK_FMT.pack(1, 1, 0, 2, 4, 3, 1, 1, 32, 6, 0, 0, 0), 24), "flags"),
        (
            _with_header(P.MessageType.PNG_TASK, PNG_TASK_FMT.pack(1, 1, 0, 2, 4, 3, 1, 1, 8, 6, 0, 0, 0), 24),
            "alpha of 3 channels",
        ),
        (
            _with_header(P.MessageType.PNG_TASK, PNG_TASK_FMT.pack(1, 1, 0, 2, 4, 3, 1, 1, 0, 6, 1, 0, 0), 24),
            "reserved",
        ),
        (_with_header(P.MessageType.PNG_RESULT, PNG_RESULT_FMT.pack(1, 1, 0, 2, 4, 0, 11, 0, 0, 0), 5), "filtered_len"),
        (_with_header(P.MessageType.PNG_RESULT, PNG_RESULT_FMT.pack(1, 1, 0, 2, 4, 0, 10, 0, 0, 0), 0), "0 deflate"),
        (_with_header(P.MessageType.PNG_RESULT, PNG_RESULT_FMT.pack(1, 1, 0, 2, 4, 0, 10, 0, 0, 0), 10**6), "deflate"),
        (
            _with_header(P.MessageType.TASK, TASK_FMT.pack(1, 1, 0, 1, 4, 3, 1, 1, 1) + b"\x00\x05../.." + bytes(8), 0),
            "segment",
        ),
        (
            _with_header(P.MessageType.TASK, TASK_FMT.pack(1, 1, 0, 1, 4, 3, 1, 1, 1) + b"\x00\x01a" + bytes(8), 12),
            "needs 0",
        ),
        (_with_header(P.MessageType.TASK, TASK_FMT.pack(1, 1, 0, 1, 4, 3, 1, 1, 2), 12), "flags"),
        (_with_header(P.MessageType.SHM_ANSWER, b"\x02" + bytes(16)), "ok must be"),
        (_with_header(P.MessageType.SHM_ANSWER, b"\x01" + bytes(15)), "too short"),
        (_with_header(P.MessageType.SHM_OFFER, b"\x00\x41" + b"a" * 65), "exceeds limit 64"),
    ],
)
def test_malformed_new_headers(raw: bytes, match: str) -> None:
    decoder = P.FrameDecoder()
    with pytest.raises(ProtocolError, match=match):
        for byte in raw:
            decoder.feed(bytes([byte]))


def test_documented_tiff_strip_example_is_what_the_code_does() -> None:
    """docs/PROTOCOL.md's TIFF strip example: the task and the worker's answer, byte for byte."""
    from distgray.imaging import tiffstrip

    task_frame, result_frame = _doc_hex_blocks("## Worked example: a TIFF strip")
    ((task, rgb),) = decode_all(task_frame, chunk=3)
    assert task == P.TiffTask(1, 0, 0, 2, 3, 3, level=0, predictor=2, rows_per_strip=1, last=True)
    gray = kernel.to_grayscale(np.frombuffer(rgb, np.uint8).reshape(2, 3, 3), np.empty((2, 3), np.uint8))
    piece = tiffstrip.encode_strip(gray, task.level, task.rows_per_strip, task.predictor)
    result = P.TiffResult(1, 0, 0, 2, 3, 1, len(piece.data), 250, 40, 0)
    assert P.encode_frame(result, result.payload_len) + piece.data == result_frame
    ((decoded, payload),) = decode_all(result_frame, chunk=5)
    assert decoded == result and tiffstrip.split(payload, 2) == tiffstrip.split(piece.data, 2)


def test_documented_png_strip_example_is_what_the_code_does() -> None:
    """docs/PROTOCOL.md's PNG strip example: the task, the worker's answer, the joined file."""
    from distgray.imaging import pngstrip

    task_frame, result_frame, png = _doc_hex_blocks("## Worked example: a PNG strip")
    ((task, rgb),) = decode_all(task_frame, chunk=3)
    assert task == P.PngTask(1, 0, 0, 2, 3, 3, level=0, above=False, last=True)
    gray = kernel.to_grayscale(np.frombuffer(rgb, np.uint8).reshape(2, 3, 3), np.empty((2, 3), np.uint8))
    piece = pngstrip.encode_strip(gray, 0, has_above=False, first=True, last=True)
    result = P.PngResult(1, 0, 0, 2, 3, piece.adler, piece.length, len(piece.data), 250, 40, 0)
    assert P.encode_frame(result, result.payload_len) + piece.data == result_frame
    assert pngstrip.join(3, 2, 0, [piece]) == png


# ---------------------------------------------------------------- the document against the code
def _documented_sizes() -> dict[str, str]:
    """Each message's header size as docs/PROTOCOL.md states it, in the table and in its section."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md").read_text()
    sizes: dict[str, str] = {}
    for name, size in re.findall(r"\| `0x[0-9A-F]{2}` \| (\w+) \| [^|]+\| see below \((\d+) bytes", doc):
        sizes[f"table {name}"] = size
    for name, size in re.findall(r"^### (\w+) header \((\d+) bytes", doc, flags=re.M):
        sizes[f"section {name}"] = size
    for name, size in re.findall(r"prefix: DGRY v1 (\w+), header (\d+)", doc):
        sizes[f"example {name}"] = size
    return sizes


def test_the_protocol_document_states_the_header_sizes_the_code_writes() -> None:
    fixed = {  # each message's fixed header, as encoded (no optional shared-memory tail, empty strings)
        "TASK": len(P.Task(1, 0, 0, 2, 3).encode()),
        "RESULT": len(P.Result(1, 0, 0, 2, 3).encode()),
        "PNG_TASK": len(P.PngTask(1, 0, 0, 2, 3).encode()),
        "PNG_RESULT": len(P.PngResult(1, 0, 0, 2, 3, 1, 8, 13).encode()),
        "JPEG_TASK": len(P.JpegTask(1, 0, 0, 8, 3).encode()),
        "JPEG_RESULT": len(P.JpegResult(1, 0, 0, 8, 3, 10).encode()),
        "TIFF_TASK": len(P.TiffTask(1, 0, 0, 8, 3).encode()),
        "TIFF_RESULT": len(P.TiffResult(1, 0, 0, 8, 3, 8, 20).encode()),
        "FILE_TASK": len(P.FileTask(1, 0, 10, 100, "PNG").encode()) - 2 - 3,  # "28 bytes + string"
        "FILE_RESULT": len(P.FileResult(1, 0, 0, P.FileStatus.OK).encode()) - 4,  # "40 bytes + two strings"
    }
    documented = _documented_sizes()
    for name, size in fixed.items():
        places = {k: v for k, v in documented.items() if k.split(" ", 1)[1] == name}
        assert places, f"{name}: no size in docs/PROTOCOL.md"
        assert all(int(v) == size for v in places.values()), (name, size, places)
    assert set(fixed) <= {k.split(" ", 1)[1] for k in documented if k.startswith("section")}


def test_the_protocol_document_lists_every_error_code() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md").read_text()
    for code in P.ErrorCode:
        assert f"| {int(code)} | {code.name} |" in doc, code


# ---------------------------------------------------------------------------------- operation chains
OPS_TASKS: list[P.Message] = [
    P.Task(1, 2, 10, 14, 5, 3, ops="gaussian:4;canny:10,30", halo_above=10, halo_below=7),
    P.Task(1, 2, 0, 4, 5, 3, "distgray-1-job1-00ff00ff", 0, ops="blur", halo_above=0, halo_below=2),
    P.PngTask(1, 3, 8, 12, 5, 3, level=6, above=True, last=False, ops="median:3", halo_above=2, halo_below=1),
    P.JpegTask(1, 4, 8, 16, 5, 3, quality=90, ops="sharpen", halo_above=1, halo_below=1),
    P.TiffTask(1, 5, 0, 16, 5, 3, level=6, predictor=2, rows_per_strip=16, ops="box:2", halo_above=0, halo_below=2),
    P.FileTask(1, 6, 100, 1000, "PNG", 0, 6, "thumbnail:64x64"),
]


@pytest.mark.parametrize("message", OPS_TASKS, ids=lambda m: type(m).__name__)
def test_tasks_with_a_chain_round_trip_with_their_halo(message: P.Message) -> None:
    payload = b"\x07" * message.payload_len
    assert decode_all(frame(message, payload), chunk=3) == [(message, payload)]


def test_a_chain_task_carries_its_halo_rows() -> None:
    task = P.Task(1, 2, 10, 14, 5, 3, ops="gaussian:4", halo_above=10, halo_below=7)
    assert task.pixel_rows == 10 + 4 + 7 and task.payload_len == 21 * 5 * 3
    assert task.result_len == 4 * 5  # the answer is the strip's own rows
    png = P.PngTask(1, 3, 8, 12, 5, 3, level=6, above=True, ops="median:3", halo_above=2, halo_below=1)
    assert png.pixel_rows == 2 + 4 + 1  # the row above is the last halo row, not one more


@pytest.mark.parametrize(
    ("task", "why"),
    [
        (P.Task(1, 2, 3, 5, 4, 3, ops="blur", halo_above=4), "halo 4 above row 3"),
        (P.Task(1, 2, 3, 5, 4, 3, ops="blur$rm", halo_above=1), "bad chain"),
        (P.Task(1, 2, 3, 5, 4, 3, halo_above=1), "halo without"),
        (P.PngTask(1, 2, 3, 5, 4, 3, level=6, above=True, ops="blur", halo_above=0), "row above is in the halo"),
    ],
)
def test_bad_chain_tasks_cannot_be_encoded(task: P.Task, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        task.encode()


def _raw_ops_task(halo_above: int, chain: bytes, row_start: int = 3, payload_len: int | None = None) -> bytes:
    fixed = struct.pack(">IIIIIBBBB", 1, 2, row_start, row_start + 2, 4, 3, 1, 1, 0x10)
    tail = struct.pack(">II", halo_above, 1) + struct.pack(">H", len(chain)) + chain
    rows = halo_above + 2 + 1
    return _with_header(P.MessageType.TASK, fixed + tail, rows * 12 if payload_len is None else payload_len)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (_raw_ops_task(4, b"blur"), "halo"),  # more rows above than the image has
        (_raw_ops_task(1, b"blur;$(reboot)"), "bad chain"),
        (_raw_ops_task(1, b""), "bad chain"),
        (_raw_ops_task(1, b"x" * 1025), "exceeds limit"),
        (_raw_ops_task(1, b"blur", payload_len=2 * 12), "needs"),  # the halo's rows missing from the payload
    ],
)
def test_malformed_chain_tasks_are_protocol_errors(raw: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        P.FrameDecoder().feed(raw)


def test_workers_are_matched_to_chains_by_what_they_offer() -> None:
    assert P.can_run((), "")
    assert not P.can_run(("luma-u8",), "blur")
    assert P.can_run(("ops",), "blur;gaussian:4")
    assert not P.can_run(("ops",), "blur;canny:1,2")
    assert P.can_run(("ops", "ops-canny"), "blur;Canny:1,2")


def test_documented_chain_example_is_what_the_code_does() -> None:
    """docs/PROTOCOL.md's strip with an operation chain: decoded, computed as a worker does, and
    equal to the chain on the whole 5-row image (row 2)."""
    from distgray.imaging import ops, stripcodec

    task_frame, result_frame = _doc_hex_blocks("## Worked example: a strip with an operation chain\n")
    ((task, rgb),) = decode_all(task_frame, chunk=7)
    assert task == P.Task(7, 1, 2, 3, 3, 3, ops="smooth", halo_above=1, halo_below=1)
    pixels = np.frombuffer(rgb, np.uint8).reshape(3, 3, 3)
    row = stripcodec.gray_with_ops(pixels, task.ops, task.halo_above, task.halo_below)
    result = P.Result(7, 1, 2, 3, 3)
    assert P.encode_frame(result, result.payload_len) + row.tobytes() == result_frame
    whole = np.concatenate([np.zeros((1, 3, 3), np.uint8), pixels, np.full((1, 3, 3), 9, np.uint8)])
    assert np.array_equal(ops.apply(stripcodec.gray_of(whole), ops.parse_chain(["smooth"]))[2], row[0])
