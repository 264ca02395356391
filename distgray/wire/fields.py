"""Fields of the distgray wire protocol: message types, error codes, limits, and the header
reader and writers every message uses. Pure: no sockets, clocks or threads.
"""

from __future__ import annotations

import enum
import struct

from distgray.errors import ProtocolError

MAX_DIMENSION = 1 << 20  # rows or columns of one strip
MAX_STRING_BYTES = 1024
MAX_CAPABILITIES = 32
NONCE_BYTES = 32
DIGEST_BYTES = 32
NO_STRIP = 0xFFFFFFFF  # ERROR frames that concern no particular strip

DTYPE_UINT8 = 1
OP_LUMA = 1  # Gray = (19595 R + 38470 G + 7471 B + 32768) >> 16, Pillow's convert("L")
CAPABILITY_LUMA_U8 = "luma-u8"


class MessageType(enum.IntEnum):
    HELLO = 0x01
    CHALLENGE = 0x02
    AUTH = 0x03
    WELCOME = 0x04
    TASK = 0x10
    RESULT = 0x11
    FILE_TASK = 0x12
    FILE_RESULT = 0x13
    PNG_TASK = 0x14
    PNG_RESULT = 0x15
    JPEG_TASK = 0x16
    JPEG_RESULT = 0x17
    TIFF_TASK = 0x18
    TIFF_RESULT = 0x19
    HEARTBEAT = 0x20
    SHM_OFFER = 0x21
    SHM_ANSWER = 0x22
    ERROR = 0x7E
    BYE = 0x7F


class ErrorCode(enum.IntEnum):
    PROTOCOL = 1
    VERSION = 2
    AUTH_FAILED = 3
    BAD_TASK = 4
    BAD_RESULT = 5
    SHUTTING_DOWN = 6
    INTERNAL = 7
    TLS_REQUIRED = 8  # a plaintext connection from another machine: reconnect with TLS
    BUSY = 9  # every handshake slot is taken: retry later


class Reader:
    """Walks a header buffer; every shortfall is the peer's ProtocolError."""

    def __init__(self, buf: bytes, what: str) -> None:
        self.buf = memoryview(buf)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise ProtocolError(f"{self.what} header too short: {bytes(self.buf)[:32]!r}")
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size))

    def string(self, limit: int = MAX_STRING_BYTES) -> str:
        (n,) = self.unpack(U16)
        if n > limit:
            raise ProtocolError(f"{self.what}: string of {n} bytes exceeds limit {limit}")
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{self.what}: string is not UTF-8: {raw[:32]!r}") from exc

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise ProtocolError(f"{self.what}: {len(self.buf) - self.pos} trailing header bytes")


U16 = struct.Struct(">H")


def pack_string(value: str, limit: int = MAX_STRING_BYTES) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > limit:
        raise ValueError(f"string of {len(raw)} bytes exceeds limit {limit}")
    return U16.pack(len(raw)) + raw


def clamp_u32(*values: int) -> tuple[int, ...]:
    """Timings for u32 fields: anything longer than the field holds is sent as its maximum."""
    return tuple(min(v, 0xFFFFFFFF) for v in values)


def no_payload(what: str, payload_len: int) -> None:
    if payload_len:
        raise ProtocolError(f"{what} carries no payload, got payload_len={payload_len}")


def check_strip_bytes(what: str, rows: int, width: int, channels: int, payload_len: int) -> None:
    if not (0 < rows <= MAX_DIMENSION and 0 < width <= MAX_DIMENSION):
        raise ProtocolError(f"{what}: strip shape {rows}x{width} out of range")
    if rows * width * channels != payload_len:
        raise ProtocolError(
            f"{what}: shape {rows}x{width}x{channels} needs {rows * width * channels} bytes,"
            f" payload_len is {payload_len}"
        )
