"""Control messages of the distgray wire protocol: handshake, heartbeat, shared memory, error, bye.

One frozen dataclass per message type.

Each class packs its header to bytes (``encode``) and parses it back (``decode``), checking every
field and that the header's shape accounts for exactly the frame's payload length. Pure: no
sockets, clocks or threads. Framing (the 20-byte prefix) lives in ``protocol``; the byte layouts
are specified in ``docs/PROTOCOL.md``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from distgray.errors import ProtocolError
from distgray.wire.fields import (
    CAPABILITY_LUMA_U8,
    MAX_CAPABILITIES,
    MAX_STRING_BYTES,
    NO_STRIP,
    U16,
    MessageType,
    Reader,
    no_payload,
    pack_string,
)


@dataclass(frozen=True)
class Hello:
    TYPE: ClassVar[MessageType] = MessageType.HELLO
    worker_id: str
    capabilities: tuple[str, ...] = (CAPABILITY_LUMA_U8,)

    def encode(self) -> bytes:
        if not self.worker_id or len(self.capabilities) > MAX_CAPABILITIES:
            raise ValueError("worker_id must be non-empty and capabilities at most 32")
        caps = b"".join(pack_string(c, 64) for c in self.capabilities)
        return pack_string(self.worker_id, 128) + U16.pack(len(self.capabilities)) + caps

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> Hello:
        no_payload("HELLO", payload_len)
        r = Reader(buf, "HELLO")
        worker_id = r.string(128)
        if not worker_id:
            raise ProtocolError("HELLO: empty worker id")
        (n,) = r.unpack(U16)
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
        no_payload("CHALLENGE", payload_len)
        r = Reader(buf, "CHALLENGE")
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
        no_payload("AUTH", payload_len)
        r = Reader(buf, "AUTH")
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
        return fixed + pack_string(self.worker_id, 128)

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> Welcome:
        no_payload("WELCOME", payload_len)
        r = Reader(buf, "WELCOME")
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
        no_payload("HEARTBEAT", payload_len)
        Reader(buf, "HEARTBEAT").end()
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
        return pack_string(self.segment, MAX_SEGMENT_NAME_BYTES)

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> ShmOffer:
        no_payload("SHM_OFFER", payload_len)
        r = Reader(buf, "SHM_OFFER")
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
        no_payload("SHM_ANSWER", payload_len)
        r = Reader(buf, "SHM_ANSWER")
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
        return _ERROR.pack(self.code, self.strip_id) + pack_string(raw)

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> Error:
        no_payload("ERROR", payload_len)
        r = Reader(buf, "ERROR")
        code, strip = r.unpack(_ERROR)
        message = r.string()
        r.end()
        return cls(code, message, strip)


@dataclass(frozen=True)
class Bye:
    TYPE: ClassVar[MessageType] = MessageType.BYE
    reason: str = ""

    def encode(self) -> bytes:
        return pack_string(self.reason[:200])

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> Bye:
        no_payload("BYE", payload_len)
        r = Reader(buf, "BYE")
        reason = r.string()
        r.end()
        return cls(reason)
