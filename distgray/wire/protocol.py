"""The distgray wire protocol, sans-IO: bytes in, messages out. No sockets, clocks or threads.

This module owns framing, limits and the handshake proofs; the per-message header layouts live
in ``fields``, ``control``, ``work`` and ``encoded`` and are re-exported here, so ``protocol``
is the one name callers import.

A frame is a fixed 20-byte prefix, a small binary header and a raw payload::

    offset size field          rule
    0      4    magic          b"DGRY"
    4      1    version        PROTOCOL_VERSION (1)
    5      1    type           one of MessageType
    6      2    flags          0 (reserved)
    8      4    header_len     <= MAX_HEADER_BYTES, exact for fixed-size headers
    12     8    payload_len    0 except TASK/RESULT; <= the receiver's payload limit
    20     ...  header, then payload

All integers are unsigned big-endian. Strings are a u16 byte count and UTF-8 bytes.
Pixels travel raw in the payload (C-order rows, uint8); the header names their shape, and the
shape must account for every payload byte. ``docs/PROTOCOL.md`` is the full specification.

The conversation::

    worker                                     master
      HELLO(worker_id, capabilities)  ------>
                                      <------  CHALLENGE(auth_required, nonce_m)
      AUTH(proof_w, nonce_w)          ------>  checks proof_w in constant time
                                      <------  WELCOME(proof_m, heartbeat, prefetch, id)
                                               (or ERROR(AUTH_FAILED) and close)
      worker checks proof_m
                                      <------  TASK(job, strip, rows, width, channels) + RGB bytes
      RESULT(job, strip, rows, timings) + gray bytes  ------>
      ...                                      (up to `prefetch` TASKs in flight)
      HEARTBEAT                       <----->  HEARTBEAT   when a side has been quiet
                                      <------  BYE(reason)   master is done; worker leaves
      BYE(reason)                     ------>  worker is leaving

The HMAC-SHA256 handshake, as in ``multiprocessing.connection`` but mutual and domain-separated::

    step  who     sends                                      the other side checks
    1     master  nonce_m = 32 random bytes
    2     worker  proof_w = HMAC(token, "distgray/1 worker" + nonce_m + worker_id), nonce_w
    3     master                                             compare_digest(proof_w, expected)
    4     master  proof_m = HMAC(token, "distgray/1 master" + nonce_w)
    5     worker                                             compare_digest(proof_m, expected)

Different prefixes for the two proofs stop a peer reflecting one side's proof back to it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from distgray.errors import NotDistgray, ProtocolError, VersionMismatch
from distgray.wire.control import (
    SHM_PROBE_BYTES,
    Auth,
    Bye,
    Challenge,
    Error,
    Heartbeat,
    Hello,
    ShmAnswer,
    ShmOffer,
    Welcome,
)
from distgray.wire.encoded import (
    CAPABILITY_ALPHA,
    CAPABILITY_JPEG,
    CAPABILITY_PNG,
    CAPABILITY_TIFF,
    JpegResult,
    JpegTask,
    PngResult,
    PngTask,
    TiffResult,
    TiffTask,
)
from distgray.wire.fields import (
    CAPABILITY_LUMA_U8,
    DIGEST_BYTES,
    DTYPE_UINT8,
    MAX_CAPABILITIES,
    MAX_DIMENSION,
    MAX_STRING_BYTES,
    NO_STRIP,
    NONCE_BYTES,
    OP_LUMA,
    ErrorCode,
    MessageType,
)
from distgray.wire.work import (
    CAPABILITY_CANNY,
    CAPABILITY_FILES,
    CAPABILITY_OPS,
    CAPABILITY_SHM,
    FILE_FORMATS,
    FileResult,
    FileStatus,
    FileTask,
    Result,
    Task,
    can_run,
)

Message = (
    Hello
    | Challenge
    | Auth
    | Welcome
    | Task
    | PngTask
    | JpegTask
    | TiffTask
    | Result
    | PngResult
    | JpegResult
    | TiffResult
    | FileTask
    | FileResult
    | Heartbeat
    | ShmOffer
    | ShmAnswer
    | Error
    | Bye
)
DECODERS: dict[MessageType, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Challenge,
        Auth,
        Welcome,
        Task,
        PngTask,
        JpegTask,
        TiffTask,
        Result,
        PngResult,
        JpegResult,
        TiffResult,
        FileTask,
        FileResult,
        Heartbeat,
        ShmOffer,
        ShmAnswer,
        Error,
        Bye,
    )
}
CARRIES_PAYLOAD = frozenset(
    {
        MessageType.TASK,
        MessageType.PNG_TASK,
        MessageType.RESULT,
        MessageType.PNG_RESULT,
        MessageType.JPEG_TASK,
        MessageType.JPEG_RESULT,
        MessageType.TIFF_TASK,
        MessageType.TIFF_RESULT,
        MessageType.FILE_TASK,
        MessageType.FILE_RESULT,
    }
)

__all__ = [
    "CAPABILITY_ALPHA",
    "CAPABILITY_CANNY",
    "CAPABILITY_FILES",
    "CAPABILITY_JPEG",
    "CAPABILITY_LUMA_U8",
    "CAPABILITY_OPS",
    "CAPABILITY_PNG",
    "CAPABILITY_SHM",
    "CAPABILITY_TIFF",
    "DIGEST_BYTES",
    "DTYPE_UINT8",
    "FILE_FORMATS",
    "MAGIC",
    "MAX_CAPABILITIES",
    "MAX_DIMENSION",
    "MAX_HEADER_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_STRING_BYTES",
    "NONCE_BYTES",
    "NO_STRIP",
    "OP_LUMA",
    "PREFIX_BYTES",
    "PROTOCOL_VERSION",
    "SHM_PROBE_BYTES",
    "Auth",
    "Bye",
    "Challenge",
    "Error",
    "ErrorCode",
    "FileResult",
    "FileStatus",
    "FileTask",
    "FrameDecoder",
    "Heartbeat",
    "Hello",
    "JpegResult",
    "JpegTask",
    "Message",
    "MessageType",
    "PngResult",
    "PngTask",
    "Prefix",
    "Result",
    "ShmAnswer",
    "ShmOffer",
    "Task",
    "TiffResult",
    "TiffTask",
    "Welcome",
    "can_run",
    "decode_message",
    "decode_prefix",
    "encode_frame",
    "master_proof",
    "proofs_match",
    "worker_proof",
]

MAGIC = b"DGRY"
PROTOCOL_VERSION = 1
PREFIX = struct.Struct(">4sBBHIQ")
PREFIX_BYTES = PREFIX.size  # 20

MAX_HEADER_BYTES = 4096
#: Hard ceiling on any payload; a receiver passes its own tighter limit to decode_prefix.
MAX_PAYLOAD_BYTES = 1 << 30


@dataclass(frozen=True)
class Prefix:
    type: MessageType
    header_len: int
    payload_len: int


# --------------------------------------------------------------------------- framing


def encode_frame(message: Message, payload_len: int = 0) -> bytes:
    """Prefix and header of one frame; the caller sends ``payload_len`` raw bytes after it."""
    header = message.encode()
    if len(header) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(header)} bytes exceeds {MAX_HEADER_BYTES}")
    return PREFIX.pack(MAGIC, PROTOCOL_VERSION, message.TYPE, 0, len(header), payload_len) + header


def decode_prefix(buf: bytes, max_payload: int = MAX_PAYLOAD_BYTES) -> Prefix:
    """Validate a 20-byte prefix before anything it announces is read or allocated.

    Raises:
        VersionMismatch: the magic is ours but the version is not.
        ProtocolError: wrong magic, unknown type, non-zero flags, or a length over its limit.
    """
    if len(buf) != PREFIX_BYTES:
        raise ValueError(f"a prefix is {PREFIX_BYTES} bytes, got {len(buf)}")
    magic, version, mtype, flags, header_len, payload_len = PREFIX.unpack(buf)
    if magic != MAGIC:
        raise NotDistgray(f"bad magic {bytes(buf[:8])!r}: not a distgray peer", bytes(buf[:16]))
    if version != PROTOCOL_VERSION:
        raise VersionMismatch(f"peer speaks protocol version {version}, this side speaks {PROTOCOL_VERSION}", version)
    try:
        kind = MessageType(mtype)
    except ValueError as exc:
        raise ProtocolError(f"unknown message type 0x{mtype:02x}") from exc
    if flags:
        raise ProtocolError(f"{kind.name}: reserved flags must be 0, got 0x{flags:04x}")
    if header_len > MAX_HEADER_BYTES:
        raise ProtocolError(f"{kind.name}: header_len {header_len} exceeds {MAX_HEADER_BYTES}")
    if kind not in CARRIES_PAYLOAD and payload_len:
        raise ProtocolError(f"{kind.name} carries no payload, got payload_len={payload_len}")
    limit = min(max_payload, MAX_PAYLOAD_BYTES)
    if payload_len > limit:
        raise ProtocolError(f"{kind.name}: payload_len {payload_len} exceeds limit {limit}")
    return Prefix(kind, header_len, payload_len)


def decode_message(prefix: Prefix, header: bytes) -> Message:
    """Parse a header; checks that the payload length matches what the header describes."""
    if len(header) != prefix.header_len:
        raise ValueError("header buffer does not match header_len")
    return DECODERS[prefix.type].decode(header, prefix.payload_len)


class FrameDecoder:
    """Incremental decoder for a byte stream: ``feed`` bytes in any chunks, get whole frames.

    Used where frames are small or a stream arrives piecemeal; the socket transport instead reads
    prefix and header itself and lands the payload with ``recv_into`` where it belongs.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD_BYTES) -> None:
        self._buf = bytearray()
        self._prefix: Prefix | None = None
        self._message: Message | None = None
        self._max_payload = max_payload

    @property
    def mid_frame(self) -> bool:
        """True when some bytes of an unfinished frame are buffered."""
        return bool(self._buf) or self._prefix is not None

    def feed(self, data: bytes) -> list[tuple[Message, bytes]]:
        self._buf += data
        frames: list[tuple[Message, bytes]] = []
        while True:
            if self._prefix is None:
                if len(self._buf) < PREFIX_BYTES:
                    return frames
                self._prefix = decode_prefix(bytes(self._buf[:PREFIX_BYTES]), self._max_payload)
                del self._buf[:PREFIX_BYTES]
            if self._message is None:
                if len(self._buf) < self._prefix.header_len:
                    return frames
                n = self._prefix.header_len
                self._message = decode_message(self._prefix, bytes(self._buf[:n]))
                del self._buf[:n]
            n = self._prefix.payload_len
            if len(self._buf) < n:
                return frames
            frames.append((self._message, bytes(self._buf[:n])))
            del self._buf[:n]
            self._prefix = self._message = None


# --------------------------------------------------------------------------- authentication

_WORKER_DOMAIN = b"distgray/1 worker"
_MASTER_DOMAIN = b"distgray/1 master"


def worker_proof(token: bytes, master_nonce: bytes, worker_id: str) -> bytes:
    return hmac.new(token, _WORKER_DOMAIN + master_nonce + worker_id.encode(), hashlib.sha256).digest()


def master_proof(token: bytes, worker_nonce: bytes) -> bytes:
    return hmac.new(token, _MASTER_DOMAIN + worker_nonce, hashlib.sha256).digest()


def proofs_match(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison, so timing reveals nothing about the expected digest."""
    return hmac.compare_digest(expected, received)
