"""Work messages: strips (TASK, RESULT) and whole files (FILE_TASK, FILE_RESULT).

The frames that carry payloads; layouts in ``docs/PROTOCOL.md``. Pure, like ``control``.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from distgray import formats
from distgray.errors import ProtocolError
from distgray.wire.fields import (
    DTYPE_UINT8,
    MAX_DIMENSION,
    OP_LUMA,
    MessageType,
    Reader,
    check_strip_bytes,
    clamp_u32,
    pack_string,
)

#: Output formats a FILE_TASK may ask for (Pillow's names).
FILE_FORMATS = formats.COMMON
MAX_FORMAT_BYTES = 16
CAPABILITY_FILES = "file-gray"


_TASK = struct.Struct(">IIIIIBBBB")
_U64 = struct.Struct(">Q")

#: TASK/PNG_TASK flags. SHM: the pixels are in a shared-memory segment named in the header, not in
#: the payload. ABOVE (PNG_TASK): the pixels start with the row above the strip. LAST (PNG_TASK):
#: the strip ends the image, so its deflate stream is finished. ALPHA (PNG_TASK, TIFF_TASK, with
#: 4 channels): the encoded rows are gray + alpha pairs, the alpha taken from the 4th channel.
#: OPS: after the gray conversion the worker runs the operation chain named in the header on the
#: strip and its halo (``halo_above`` rows before it, ``halo_below`` after it in the pixels), then
#: crops the halo: the answer covers the strip's rows only (PNG_TASK with ABOVE: and the row above,
#: which is then the last halo row above).
FLAG_SHM = 0x01
FLAG_ABOVE = 0x02
FLAG_LAST = 0x04
FLAG_ALPHA = 0x08
FLAG_OPS = 0x10
MAX_SEGMENT_BYTES = 64
_SEGMENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
CAPABILITY_SHM = "shm"
#: The worker runs operation chains (FLAG_OPS, FILE_TASK's OPS flag) as ``imaging.ops`` spells them.
CAPABILITY_OPS = "ops"
#: ... and Canny among them (it has OpenCV).
CAPABILITY_CANNY = "ops-canny"


def can_run(capabilities: tuple[str, ...] | list[str] | set[str], chain: str) -> bool:
    """Whether a worker offering ``capabilities`` runs the spelled ``chain`` ("" : any worker)."""
    if not chain:
        return True
    needs_canny = any(op.partition(":")[0].strip().lower() == "canny" for op in chain.split(";"))
    return CAPABILITY_OPS in capabilities and (not needs_canny or CAPABILITY_CANNY in capabilities)


MAX_CHAIN_BYTES = 1024
_CHAIN = re.compile(rf"[A-Za-z0-9_.:,;]{{1,{MAX_CHAIN_BYTES}}}")
_HALO = struct.Struct(">II")


@dataclass(frozen=True)
class Task:
    """Convert rows [row_start, row_stop) of a width x channels uint8 image; payload = those rows.

    With ``shm_segment``, the rows are read from that shared-memory segment at ``shm_offset``
    instead (payload empty; only for workers that passed the SHM_OFFER check).
    """

    TYPE: ClassVar[MessageType] = MessageType.TASK
    job_id: int
    strip_id: int
    row_start: int
    row_stop: int
    width: int
    channels: int = 3
    shm_segment: str = ""
    shm_offset: int = 0
    #: the operation chain (``imaging.ops.spell``), and the rows of context around the strip
    ops: str = field(default="", kw_only=True)
    halo_above: int = field(default=0, kw_only=True)
    halo_below: int = field(default=0, kw_only=True)

    @property
    def rows(self) -> int:
        return self.row_stop - self.row_start

    @property
    def pixel_rows(self) -> int:
        """Rows of pixels the task carries (with its halo; PNG_TASK adds the row above)."""
        return self.halo_above + self.rows + self.halo_below

    @property
    def pixel_bytes(self) -> int:
        return self.pixel_rows * self.width * self.channels

    @property
    def payload_len(self) -> int:
        return 0 if self.shm_segment else self.pixel_bytes

    @property
    def result_len(self) -> int:
        return self.rows * self.width

    def _flags(self) -> int:
        return (FLAG_SHM if self.shm_segment else 0) | (FLAG_OPS if self.ops else 0)

    def _fixed(self) -> bytes:
        return _TASK.pack(
            self.job_id,
            self.strip_id,
            self.row_start,
            self.row_stop,
            self.width,
            self.channels,
            DTYPE_UINT8,
            OP_LUMA,
            self._flags(),
        )

    def _trailer(self) -> bytes:
        shm = pack_string(self.shm_segment, MAX_SEGMENT_BYTES) + _U64.pack(self.shm_offset) if self.shm_segment else b""
        if not self.ops:
            if self.halo_above or self.halo_below:
                raise ValueError("a halo without an operation chain")
            return shm
        if not _CHAIN.fullmatch(self.ops) or self.halo_above > self.row_start:
            raise ValueError(f"bad chain {self.ops!r} or halo {self.halo_above} above row {self.row_start}")
        return shm + _HALO.pack(self.halo_above, self.halo_below) + pack_string(self.ops, MAX_CHAIN_BYTES)

    def encode(self) -> bytes:
        return self._fixed() + self._trailer()

    @staticmethod
    def _read_fixed(r: Reader, what: str, allowed_flags: int) -> tuple[int, ...]:
        job, strip, start, stop, width, channels, dtype, op, flags = r.unpack(_TASK)
        if channels not in (3, 4) or dtype != DTYPE_UINT8 or op != OP_LUMA or flags & ~allowed_flags:
            raise ProtocolError(f"{what}: unsupported channels={channels} dtype={dtype} op={op} flags={flags}")
        if stop <= start:
            raise ProtocolError(f"{what}: empty or reversed row range [{start}, {stop})")
        return job, strip, start, stop, width, channels, flags

    @staticmethod
    def _read_shm(r: Reader, flags: int) -> tuple[str, int]:
        if not flags & FLAG_SHM:
            return "", 0
        segment = r.string(MAX_SEGMENT_BYTES)
        (offset,) = r.unpack(_U64)
        if not _SEGMENT_NAME.fullmatch(segment):
            raise ProtocolError(f"bad shared-memory segment name {segment!r}")
        return segment, offset

    @staticmethod
    def _read_ops(r: Reader, flags: int, row_start: int) -> dict[str, int | str]:
        """The OPS tail: the halo and the chain (checked for its characters here; the worker
        parses it)."""
        if not flags & FLAG_OPS:
            return {}
        above, below = r.unpack(_HALO)
        chain = r.string(MAX_CHAIN_BYTES)
        if not _CHAIN.fullmatch(chain) or above > row_start or above > MAX_DIMENSION or below > MAX_DIMENSION:
            raise ProtocolError(f"{r.what}: bad chain {chain[:40]!r} or halo ({above}, {below}) at row {row_start}")
        return {"ops": chain, "halo_above": above, "halo_below": below}

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> Task:
        r = Reader(buf, "TASK")
        job, strip, start, stop, width, channels, flags = cls._read_fixed(r, "TASK", FLAG_SHM | FLAG_OPS)
        segment, offset = cls._read_shm(r, flags)
        extra = cls._read_ops(r, flags, start)
        r.end()
        task = cls(job, strip, start, stop, width, channels, segment, offset, **extra)  # type: ignore[arg-type]
        check_strip_bytes("TASK", task.pixel_rows, width, channels, task.pixel_bytes)
        payload_matches("TASK", task.payload_len, payload_len)
        return task


def payload_matches(what: str, expected: int, payload_len: int) -> None:
    if expected != payload_len:
        raise ProtocolError(f"{what}: the header needs {expected} bytes of payload, payload_len is {payload_len}")


_RESULT = struct.Struct(">IIIIIBBHIII")


@dataclass(frozen=True)
class Result:
    """Gray rows [row_start, row_stop) of a strip; payload = rows x width uint8.

    Timings in microseconds: ``recv_us`` receiving the task, ``compute_us`` converting it,
    ``send_us`` sending this worker's *previous* result (a send cannot time itself).
    """

    TYPE: ClassVar[MessageType] = MessageType.RESULT
    job_id: int
    strip_id: int
    row_start: int
    row_stop: int
    width: int
    recv_us: int = 0
    compute_us: int = 0
    send_us: int = 0

    @property
    def payload_len(self) -> int:
        return (self.row_stop - self.row_start) * self.width

    def encode(self) -> bytes:
        return _RESULT.pack(
            self.job_id,
            self.strip_id,
            self.row_start,
            self.row_stop,
            self.width,
            1,
            DTYPE_UINT8,
            0,
            *clamp_u32(self.recv_us, self.compute_us, self.send_us),
        )

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> Result:
        r = Reader(buf, "RESULT")
        job, strip, start, stop, width, channels, dtype, reserved, rus, cus, sus = r.unpack(_RESULT)
        r.end()
        if channels != 1 or dtype != DTYPE_UINT8 or reserved:
            raise ProtocolError(f"RESULT: unsupported channels={channels} dtype={dtype}")
        if stop <= start:
            raise ProtocolError(f"RESULT: empty or reversed row range [{start}, {stop})")
        check_strip_bytes("RESULT", stop - start, width, 1, payload_len)
        return cls(job, strip, start, stop, width, rus, cus, sus)


class FileStatus(enum.IntEnum):
    OK = 0
    BAD_INPUT = 1  # the file could not be decoded or encoded; retrying elsewhere will not help


_FILE_TASK = struct.Struct(">IIQQBBBB")
#: FILE_TASK flags (its last header byte): OPS, the chain follows the format.
FILE_FLAG_OPS = 0x01


@dataclass(frozen=True)
class FileTask:
    """Decode the payload (a whole image file), convert it to gray, encode it as ``format``.

    ``quality`` 0 means the format's default (JPEG 95, WebP lossless); ``png_level`` is the zlib
    level for PNG; images over ``max_pixels`` must be refused (a decompression-bomb guard).
    """

    TYPE: ClassVar[MessageType] = MessageType.FILE_TASK
    job_id: int
    task_id: int
    size: int  # bytes of the file = payload_len
    max_pixels: int
    format: str
    quality: int = 0
    png_level: int = 6
    ops: str = ""  # the operation chain after gray (FILE_FLAG_OPS), as ``imaging.ops.spell`` writes it

    @property
    def payload_len(self) -> int:
        return self.size

    def encode(self) -> bytes:
        if self.format not in FILE_FORMATS or not (0 <= self.quality <= 100 and 0 <= self.png_level <= 9):
            raise ValueError(f"FILE_TASK: bad format {self.format!r}, quality or png_level")
        if self.ops and not _CHAIN.fullmatch(self.ops):
            raise ValueError(f"FILE_TASK: bad chain {self.ops!r}")
        flags = FILE_FLAG_OPS if self.ops else 0
        fixed = _FILE_TASK.pack(
            self.job_id, self.task_id, self.size, self.max_pixels, self.quality, self.png_level, OP_LUMA, flags
        )
        chain = pack_string(self.ops, MAX_CHAIN_BYTES) if self.ops else b""
        return fixed + pack_string(self.format, MAX_FORMAT_BYTES) + chain

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> FileTask:
        r = Reader(buf, "FILE_TASK")
        job, task, size, max_pixels, quality, level, op, flags = r.unpack(_FILE_TASK)
        fmt = r.string(MAX_FORMAT_BYTES)
        chain = r.string(MAX_CHAIN_BYTES) if flags & FILE_FLAG_OPS else ""
        r.end()
        if op != OP_LUMA or flags & ~FILE_FLAG_OPS or quality > 100 or level > 9 or fmt not in FILE_FORMATS:
            raise ProtocolError(f"FILE_TASK: unsupported format={fmt!r} quality={quality} png_level={level} op={op}")
        if flags & FILE_FLAG_OPS and not _CHAIN.fullmatch(chain):
            raise ProtocolError(f"FILE_TASK: bad chain {chain[:40]!r}")
        if size != payload_len or size == 0:
            raise ProtocolError(f"FILE_TASK: size {size} does not match payload_len {payload_len}")
        return cls(job, task, size, max_pixels, fmt, quality, level, chain)


_FILE_RESULT = struct.Struct(">IIQBBHIIIII")


@dataclass(frozen=True)
class FileResult:
    """The encoded gray file (payload), or BAD_INPUT with a one-line ``message`` and no payload.

    ``width``/``height`` are the decoded image's; times in microseconds.
    """

    TYPE: ClassVar[MessageType] = MessageType.FILE_RESULT
    job_id: int
    task_id: int
    size: int  # bytes of the encoded output = payload_len
    status: FileStatus = FileStatus.OK
    width: int = 0
    height: int = 0
    decode_us: int = 0
    compute_us: int = 0
    encode_us: int = 0
    mode: str = ""
    message: str = ""

    @property
    def payload_len(self) -> int:
        return self.size

    def encode(self) -> bytes:
        fixed = _FILE_RESULT.pack(
            self.job_id,
            self.task_id,
            self.size,
            int(self.status),
            0,
            0,
            self.width,
            self.height,
            *clamp_u32(self.decode_us, self.compute_us, self.encode_us),
        )
        return fixed + pack_string(self.mode, MAX_FORMAT_BYTES) + pack_string(self.message)

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> FileResult:
        r = Reader(buf, "FILE_RESULT")
        job, task, size, status, r1, r2, width, height, dus, cus, eus = r.unpack(_FILE_RESULT)
        mode = r.string(MAX_FORMAT_BYTES)
        message = r.string()
        r.end()
        if status not in (FileStatus.OK, FileStatus.BAD_INPUT) or r1 or r2:
            raise ProtocolError(f"FILE_RESULT: unknown status {status}")
        if size != payload_len or (status == FileStatus.OK) != (size > 0):
            raise ProtocolError(f"FILE_RESULT: size {size}, payload_len {payload_len}, status {status} disagree")
        return cls(job, task, size, FileStatus(status), width, height, dus, cus, eus, mode, message)
