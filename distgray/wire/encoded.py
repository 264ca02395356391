"""Encoded-strip messages: PNG_TASK / PNG_RESULT, JPEG_TASK / JPEG_RESULT, TIFF_TASK / TIFF_RESULT.

Tasks like TASK (same 24 bytes first, same shared-memory tail) whose workers also encode their
gray strip (``distgray.imaging.pngstrip``, ``jpegstrip``, ``tiffstrip``) and send back the encoded bytes, which
the master joins into one file. Layouts in ``docs/PROTOCOL.md``. Pure, like ``control``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from distgray.errors import ProtocolError
from distgray.wire.fields import MAX_DIMENSION, MessageType, Reader, check_strip_bytes, clamp_u32
from distgray.wire.work import FLAG_ABOVE, FLAG_ALPHA, FLAG_LAST, FLAG_OPS, FLAG_SHM, Task, payload_matches

CAPABILITY_PNG = "png-strip"
#: The worker also takes PNG_TASKs and TIFF_TASKs with the ALPHA flag (gray + alpha output).
CAPABILITY_ALPHA = "strip-alpha"

_PNG_EXTRA = struct.Struct(">BBBB")


@dataclass(frozen=True)
class PngTask(Task):
    """A TASK whose gray strip is also PNG-filtered and deflated by the worker (PNG_RESULT back).

    ``above``: the pixels start with the row above the strip (row_start - 1), so the strip's
    first row can be filtered against it. ``last``: the strip ends the image. ``alpha`` (4
    channels): the PNG is gray + alpha, its rows (gray, alpha) pairs.
    """

    TYPE: ClassVar[MessageType] = MessageType.PNG_TASK
    level: int = 6
    above: bool = False
    last: bool = False
    alpha: bool = False

    @property
    def pixel_rows(self) -> int:  # with a chain, the row above is the last of the halo above
        return super().pixel_rows + (self.above and not self.ops)

    def _flags(self) -> int:
        flags = (FLAG_ABOVE if self.above else 0) | (FLAG_LAST if self.last else 0)
        return super()._flags() | flags | (FLAG_ALPHA if self.alpha else 0)

    def encode(self) -> bytes:
        if not 0 <= self.level <= 9 or (self.above and self.row_start == 0) or (self.alpha and self.channels != 4):
            raise ValueError("PNG_TASK: level 0-9, no row above the first strip, alpha from 4 channels")
        if self.ops and ((self.above and self.halo_above < 1) or self.alpha):
            raise ValueError("PNG_TASK: with a chain, the row above is in the halo and there is no alpha")
        return self._fixed() + _PNG_EXTRA.pack(self.level, 0, 0, 0) + self._trailer()

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> PngTask:
        r = Reader(buf, "PNG_TASK")
        job, strip, start, stop, width, channels, flags = cls._read_fixed(
            r, "PNG_TASK", FLAG_SHM | FLAG_ABOVE | FLAG_LAST | FLAG_ALPHA | FLAG_OPS
        )
        level, *reserved = r.unpack(_PNG_EXTRA)
        segment, offset = cls._read_shm(r, flags)
        extra = cls._read_ops(r, flags, start)
        r.end()
        above, alpha = bool(flags & FLAG_ABOVE), bool(flags & FLAG_ALPHA)
        in_halo = extra and above and int(extra["halo_above"]) < 1  # with a chain, the row above is halo
        if level > 9 or any(reserved) or (above and start == 0) or (alpha and channels != 4) or in_halo:
            raise ProtocolError(
                f"PNG_TASK: level {level}, reserved {reserved}, row above for row {start}, alpha of {channels} channels"
            )
        last = bool(flags & FLAG_LAST)
        task = cls(job, strip, start, stop, width, channels, segment, offset, level, above, last, alpha, **extra)  # type: ignore[arg-type]
        check_strip_bytes("PNG_TASK", task.pixel_rows, width, channels, task.pixel_bytes)
        payload_matches("PNG_TASK", task.payload_len, payload_len)
        return task


_JPEG_EXTRA = struct.Struct(">BBBB")
CAPABILITY_JPEG = "jpeg-strip"


@dataclass(frozen=True)
class JpegTask(Task):
    """A TASK whose gray strip is also JPEG-encoded by the worker (JPEG_RESULT back): baseline,
    ``quality``, a restart interval of one MCU row, markers numbered for the strip's place.
    ``row_start`` is a multiple of 8, and so is the row count unless ``last``."""

    TYPE: ClassVar[MessageType] = MessageType.JPEG_TASK
    quality: int = 95
    last: bool = False

    def _flags(self) -> int:
        return super()._flags() | (FLAG_LAST if self.last else 0)

    def encode(self) -> bytes:
        if not 1 <= self.quality <= 100 or self.row_start % 8 or (not self.last and self.rows % 8):
            raise ValueError("JPEG_TASK: quality 1-100, strips on whole MCU rows")
        return self._fixed() + _JPEG_EXTRA.pack(self.quality, 0, 0, 0) + self._trailer()

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> JpegTask:
        r = Reader(buf, "JPEG_TASK")
        job, strip, start, stop, width, channels, flags = cls._read_fixed(
            r, "JPEG_TASK", FLAG_SHM | FLAG_LAST | FLAG_OPS
        )
        quality, *reserved = r.unpack(_JPEG_EXTRA)
        segment, offset = cls._read_shm(r, flags)
        extra = cls._read_ops(r, flags, start)
        r.end()
        last = bool(flags & FLAG_LAST)
        if not 1 <= quality <= 100 or any(reserved) or start % 8 or (not last and (stop - start) % 8):
            raise ProtocolError(f"JPEG_TASK: quality {quality}, reserved {reserved}, rows [{start}, {stop})")
        task = cls(job, strip, start, stop, width, channels, segment, offset, quality, last, **extra)  # type: ignore[arg-type]
        check_strip_bytes("JPEG_TASK", task.pixel_rows, width, channels, task.pixel_bytes)
        payload_matches("JPEG_TASK", task.payload_len, payload_len)
        return task


_JPEG_RESULT = struct.Struct(">IIIIIIII")


@dataclass(frozen=True)
class JpegResult:
    """A JPEG_TASK's strip: its entropy-coded data (payload), ready to concatenate."""

    TYPE: ClassVar[MessageType] = MessageType.JPEG_RESULT
    job_id: int
    strip_id: int
    row_start: int
    row_stop: int
    width: int
    size: int  # = payload_len
    recv_us: int = 0
    compute_us: int = 0
    send_us: int = 0

    @property
    def payload_len(self) -> int:
        return self.size

    def encode(self) -> bytes:
        return _JPEG_RESULT.pack(
            self.job_id,
            self.strip_id,
            self.row_start,
            self.row_stop,
            self.width,
            *clamp_u32(self.recv_us, self.compute_us, self.send_us),
        )

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> JpegResult:
        r = Reader(buf, "JPEG_RESULT")
        job, strip, start, stop, width, rus, cus, sus = r.unpack(_JPEG_RESULT)
        r.end()
        _check_shape("JPEG_RESULT", start, stop, width)
        if not 0 < payload_len <= jpeg_bound(stop - start, width):
            raise ProtocolError(f"JPEG_RESULT: {payload_len} bytes for {stop - start} x {width} pixels")
        return cls(job, strip, start, stop, width, payload_len, rus, cus, sus)


def _check_shape(what: str, start: int, stop: int, width: int) -> None:
    if stop <= start or not (0 < stop - start <= MAX_DIMENSION and 0 < width <= MAX_DIMENSION):
        raise ProtocolError(f"{what}: bad strip shape rows [{start}, {stop}) x {width}")


def jpeg_bound(rows: int, width: int) -> int:
    """More JPEG bytes than any strip of rows x width gray pixels can take (8 per pixel)."""
    return 8 * (rows + 8) * (width + 8) + 4096


_PNG_RESULT = struct.Struct(">IIIIIIQIII")


@dataclass(frozen=True)
class PngResult:
    """A PNG_TASK's strip: raw deflate bytes (payload) of ``filtered_len`` filtered bytes whose
    Adler-32 is ``adler32``. Ends with a sync flush, or finishes the stream for the LAST strip."""

    TYPE: ClassVar[MessageType] = MessageType.PNG_RESULT
    job_id: int
    strip_id: int
    row_start: int
    row_stop: int
    width: int
    adler32: int
    filtered_len: int
    size: int  # bytes of deflate data = payload_len
    recv_us: int = 0
    compute_us: int = 0
    send_us: int = 0

    @property
    def payload_len(self) -> int:
        return self.size

    def encode(self) -> bytes:
        return _PNG_RESULT.pack(
            self.job_id,
            self.strip_id,
            self.row_start,
            self.row_stop,
            self.width,
            self.adler32,
            self.filtered_len,
            *clamp_u32(self.recv_us, self.compute_us, self.send_us),
        )

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> PngResult:
        r = Reader(buf, "PNG_RESULT")
        job, strip, start, stop, width, adler, flen, rus, cus, sus = r.unpack(_PNG_RESULT)
        r.end()
        _check_shape("PNG_RESULT", start, stop, width)
        if flen not in ((stop - start) * (width + 1), (stop - start) * (2 * width + 1)):
            raise ProtocolError(f"PNG_RESULT: filtered_len {flen} is not rows x (width + 1), or (2 x width + 1)")
        if not 0 < payload_len <= deflate_bound(flen):
            raise ProtocolError(f"PNG_RESULT: {payload_len} deflate bytes for {flen} filtered bytes")
        return cls(job, strip, start, stop, width, adler, flen, payload_len, rus, cus, sus)


def deflate_bound(filtered_len: int) -> int:
    """The most raw deflate bytes ``filtered_len`` bytes can take (stored blocks, a flush)."""
    return filtered_len + 5 * (filtered_len // 16383 + 2) + 16


CAPABILITY_TIFF = "tiff-strip"
#: TIFF_TASK predictors: 1 none, 2 horizontal differencing (the TIFF Predictor tag's values).
TIFF_PREDICTORS = (1, 2)
_TIFF_EXTRA = struct.Struct(">BBHI")


@dataclass(frozen=True)
class TiffTask(Task):
    """A TASK whose gray strip is also cut into TIFF strips of ``rows_per_strip`` rows, each
    deflated by the worker as one zlib stream after ``predictor`` (TIFF_RESULT back). The strip
    starts on a TIFF strip (``row_start`` a multiple of ``rows_per_strip``) and holds whole
    ones, unless ``last``. ``alpha`` (4 channels): the TIFF's pixels are (gray, alpha) pairs."""

    TYPE: ClassVar[MessageType] = MessageType.TIFF_TASK
    level: int = 6
    predictor: int = 2
    rows_per_strip: int = 1
    last: bool = False
    alpha: bool = False

    @property
    def tiff_strips(self) -> int:
        return -(-self.rows // self.rows_per_strip)

    def _flags(self) -> int:
        return super()._flags() | (FLAG_LAST if self.last else 0) | (FLAG_ALPHA if self.alpha else 0)

    def encode(self) -> bytes:
        shape = (self.rows_per_strip, self.row_start, self.rows, self.last)
        if _tiff_task_problem(self.level, self.predictor, *shape) or (self.alpha and self.channels != 4):
            raise ValueError("TIFF_TASK: level 0-9, predictor 1 or 2, whole TIFF strips, alpha from 4 channels")
        extra = _TIFF_EXTRA.pack(self.level, self.predictor, 0, self.rows_per_strip)
        return self._fixed() + extra + self._trailer()

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> TiffTask:
        r = Reader(buf, "TIFF_TASK")
        job, strip, start, stop, width, channels, flags = cls._read_fixed(
            r, "TIFF_TASK", FLAG_SHM | FLAG_LAST | FLAG_ALPHA | FLAG_OPS
        )
        level, predictor, reserved, per_strip = r.unpack(_TIFF_EXTRA)
        segment, offset = cls._read_shm(r, flags)
        extra = cls._read_ops(r, flags, start)
        r.end()
        last, alpha = bool(flags & FLAG_LAST), bool(flags & FLAG_ALPHA)
        problem = _tiff_task_problem(level, predictor, per_strip, start, stop - start, last)
        if alpha and channels != 4:
            problem = f"alpha of {channels} channels"
        if problem or reserved:
            raise ProtocolError(f"TIFF_TASK: {problem or f'reserved {reserved}'}")
        fields = (job, strip, start, stop, width, channels, segment, offset, level, predictor, per_strip, last, alpha)
        task = cls(*fields, **extra)  # type: ignore[arg-type]
        check_strip_bytes("TIFF_TASK", task.pixel_rows, width, channels, task.pixel_bytes)
        payload_matches("TIFF_TASK", task.payload_len, payload_len)
        return task


def _tiff_task_problem(level: int, predictor: int, per_strip: int, start: int, rows: int, last: bool) -> str:
    if not 0 <= level <= 9 or predictor not in TIFF_PREDICTORS:
        return f"level {level}, predictor {predictor}"
    if not 0 < per_strip <= MAX_DIMENSION or start % per_strip or (not last and rows % per_strip):
        return f"rows [{start}, {start + rows}) are not whole TIFF strips of {per_strip} rows"
    return ""


_TIFF_RESULT = struct.Struct(">IIIIIIIII")


@dataclass(frozen=True)
class TiffResult:
    """A TIFF_TASK's strip: ``n = ceil(rows / rows_per_strip)`` sizes (u32 each), then that many
    zlib streams, one per TIFF strip, back to back (the payload)."""

    TYPE: ClassVar[MessageType] = MessageType.TIFF_RESULT
    job_id: int
    strip_id: int
    row_start: int
    row_stop: int
    width: int
    rows_per_strip: int
    size: int  # = payload_len
    recv_us: int = 0
    compute_us: int = 0
    send_us: int = 0

    @property
    def payload_len(self) -> int:
        return self.size

    @property
    def tiff_strips(self) -> int:
        return -(-(self.row_stop - self.row_start) // self.rows_per_strip)

    def encode(self) -> bytes:
        return _TIFF_RESULT.pack(
            self.job_id,
            self.strip_id,
            self.row_start,
            self.row_stop,
            self.width,
            self.rows_per_strip,
            *clamp_u32(self.recv_us, self.compute_us, self.send_us),
        )

    @classmethod
    def decode(cls, buf: bytes, payload_len: int) -> TiffResult:
        r = Reader(buf, "TIFF_RESULT")
        job, strip, start, stop, width, per_strip, rus, cus, sus = r.unpack(_TIFF_RESULT)
        r.end()
        _check_shape("TIFF_RESULT", start, stop, width)
        if not 0 < per_strip <= MAX_DIMENSION:
            raise ProtocolError(f"TIFF_RESULT: rows_per_strip {per_strip}")
        result = cls(job, strip, start, stop, width, per_strip, payload_len, rus, cus, sus)
        n = result.tiff_strips
        # at most 2 samples a pixel (gray + alpha): the master checks the exact sizes after reading
        if not 4 * n < payload_len <= 4 * n + n * zlib_bound(min(per_strip, stop - start) * width * 2):
            raise ProtocolError(f"TIFF_RESULT: {payload_len} bytes for {n} TIFF strips of {stop - start} x {width}")
        return result


def zlib_bound(raw_bytes: int) -> int:
    """The most bytes one zlib stream of ``raw_bytes`` can take (stored blocks, header, Adler-32)."""
    return raw_bytes + 5 * (raw_bytes // 16383 + 2) + 22
