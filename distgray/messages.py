"""Message headers of the distgray wire protocol: one frozen dataclass per message type.

Each class packs its header to bytes (``encode``) and parses it back (``decode``), checking every
field and that the header's shape accounts for exactly the frame's payload length. Pure: no
sockets, clocks or threads. Framing (the 20-byte prefix) lives in ``protocol``; the byte layouts
are specified in ``docs/PROTOCOL.md``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar

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


# --------------------------------------------------------------------------- header helpers


class _Reader:
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
        (n,) = self.unpack(_U16)
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


_U16 = struct.Struct(">H")


def _string(value: str, limit: int = MAX_STRING_BYTES) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > limit:
        raise ValueError(f"string of {len(raw)} bytes exceeds limit {limit}")
    return _U16.pack(len(raw)) + raw


def _u32(*values: int) -> tuple[int, ...]:
    """Timings for u32 fields: anything longer than the field holds is sent as its maximum."""
    return tuple(min(v, 0xFFFFFFFF) for v in values)


def _no_payload(what: str, payload_len: int) -> None:
    if payload_len:
        raise ProtocolError(f"{what} carries no payload, got payload_len={payload_len}")


def _strip_bytes(what: str, rows: int, width: int, channels: int, payload_len: int) -> None:
    if not (0 < rows <= MAX_DIMENSION and 0 < width <= MAX_DIMENSION):
        raise ProtocolError(f"{what}: strip shape {rows}x{width} out of range")
    if rows * width * channels != payload_len:
        raise ProtocolError(
            f"{what}: shape {rows}x{width}x{channels} needs {rows * width * channels} bytes,"
            f" payload_len is {payload_len}"
        )


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Hello:
    TYPE: ClassVar[MessageType] = MessageType.HELLO
    worker_id: str
    capabilities: tuple[str, ...] = (CAPABILITY_LUMA_U8,)

    def encode(self) -> bytes:
        if not self.worker_id or len(self.capabilities) > MAX_CAPABILITIES:
            raise ValueError("worker_id must be non-empty and capabilities at most 32")
        caps = b"".join(_string(c, 64) for c in self.capabilities)
        return _string(self.worker_id, 128) + _U16.pack(len(self.capabilities)) + caps

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> Hello:
        _no_payload("HELLO", payload_len)
        r = _Reader(buf, "HELLO")
        worker_id = r.string(128)
        if not worker_id:
            raise ProtocolError("HELLO: empty worker id")
        (n,) = r.unpack(_U16)
        if n > MAX_CAPABILITIES:
            raise ProtocolError(f"HELLO: {n} capabilities exceeds limit {MAX_CAPABILITIES}")
        caps = tuple(r.string(64) for _ in range(n))
        r.end()
        return cls(worker_id, caps)


_CHALLENGE = struct.Struct(">B32s")


@dataclass(frozen=True)
class Challenge:
    TYPE: ClassVar[MessageType] = MessageType.CHALLENGE
    auth_required: bool
    nonce: bytes

    def encode(self) -> bytes:
        return _CHALLENGE.pack(int(self.auth_required), self.nonce)

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> Challenge:
        _no_payload("CHALLENGE", payload_len)
        r = _Reader(buf, "CHALLENGE")
        flag, nonce = r.unpack(_CHALLENGE)
        r.end()
        if flag not in (0, 1):
            raise ProtocolError(f"CHALLENGE: auth_required must be 0 or 1, got {flag}")
        return cls(bool(flag), bytes(nonce))


_AUTH = struct.Struct(">32s32s")


@dataclass(frozen=True)
class Auth:
    TYPE: ClassVar[MessageType] = MessageType.AUTH
    proof: bytes
    nonce: bytes

    def encode(self) -> bytes:
        return _AUTH.pack(self.proof, self.nonce)

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> Auth:
        _no_payload("AUTH", payload_len)
        r = _Reader(buf, "AUTH")
        proof, nonce = r.unpack(_AUTH)
        r.end()
        return cls(bytes(proof), bytes(nonce))


_WELCOME = struct.Struct(">32sIIH")


@dataclass(frozen=True)
class Welcome:
    TYPE: ClassVar[MessageType] = MessageType.WELCOME
    proof: bytes
    heartbeat_interval_ms: int
    heartbeat_timeout_ms: int
    prefetch: int
    worker_id: str

    def encode(self) -> bytes:
        fixed = _WELCOME.pack(self.proof, self.heartbeat_interval_ms, self.heartbeat_timeout_ms, self.prefetch)
        return fixed + _string(self.worker_id, 128)

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> Welcome:
        _no_payload("WELCOME", payload_len)
        r = _Reader(buf, "WELCOME")
        proof, interval, timeout, prefetch = r.unpack(_WELCOME)
        worker_id = r.string(128)
        r.end()
        if not (0 < interval <= timeout) or not 0 < prefetch <= 64:
            raise ProtocolError(f"WELCOME: bad heartbeat {interval}/{timeout} ms or prefetch {prefetch}")
        return cls(bytes(proof), interval, timeout, prefetch, worker_id)


@dataclass(frozen=True)
class Heartbeat:
    TYPE: ClassVar[MessageType] = MessageType.HEARTBEAT

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> Heartbeat:
        _no_payload("HEARTBEAT", payload_len)
        _Reader(buf, "HEARTBEAT").end()
        return cls()


SHM_PROBE_BYTES = 16
MAX_SEGMENT_NAME_BYTES = 64


@dataclass(frozen=True)
class ShmOffer:
    """Master -> worker: can you read shared-memory segment ``segment``? Its first 16 bytes are
    ``probe``; a worker that reads them back proves it shares the master's memory."""

    TYPE: ClassVar[MessageType] = MessageType.SHM_OFFER
    segment: str

    def encode(self) -> bytes:
        return _string(self.segment, MAX_SEGMENT_NAME_BYTES)

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> ShmOffer:
        _no_payload("SHM_OFFER", payload_len)
        r = _Reader(buf, "SHM_OFFER")
        segment = r.string(MAX_SEGMENT_NAME_BYTES)
        r.end()
        return cls(segment)


_SHM_ANSWER = struct.Struct(">B")


@dataclass(frozen=True)
class ShmAnswer:
    """Worker -> master: the 16 bytes read from the offered segment (``ok`` 1), or ``ok`` 0."""

    TYPE: ClassVar[MessageType] = MessageType.SHM_ANSWER
    ok: bool
    probe: bytes = bytes(SHM_PROBE_BYTES)

    def encode(self) -> bytes:
        if len(self.probe) != SHM_PROBE_BYTES:
            raise ValueError("SHM_ANSWER: probe must be 16 bytes")
        return _SHM_ANSWER.pack(1 if self.ok else 0) + self.probe

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> ShmAnswer:
        _no_payload("SHM_ANSWER", payload_len)
        r = _Reader(buf, "SHM_ANSWER")
        (ok,) = r.unpack(_SHM_ANSWER)
        probe = r.take(SHM_PROBE_BYTES)
        r.end()
        if ok > 1:
            raise ProtocolError(f"SHM_ANSWER: ok must be 0 or 1, got {ok}")
        return cls(bool(ok), probe)


_ERROR = struct.Struct(">HI")


@dataclass(frozen=True)
class Error:
    TYPE: ClassVar[MessageType] = MessageType.ERROR
    code: int
    message: str
    strip_id: int = NO_STRIP

    def encode(self) -> bytes:
        raw = self.message.encode("utf-8")[:MAX_STRING_BYTES].decode("utf-8", "ignore")
        return _ERROR.pack(self.code, self.strip_id) + _string(raw)

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> Error:
        _no_payload("ERROR", payload_len)
        r = _Reader(buf, "ERROR")
        code, strip = r.unpack(_ERROR)
        message = r.string()
        r.end()
        return cls(code, message, strip)


@dataclass(frozen=True)
class Bye:
    TYPE: ClassVar[MessageType] = MessageType.BYE
    reason: str = ""

    def encode(self) -> bytes:
        return _string(self.reason[:200])

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> Bye:
        _no_payload("BYE", payload_len)
        r = _Reader(buf, "BYE")
        reason = r.string()
        r.end()
        return cls(reason)
