"""Where an encoded job's strips go: one output file, written in row order as they come in.

* :class:`JoinedFile`: PNG and JPEG, whose strips are pieces of one stream (``pngstrip``,
  ``jpegstrip`` joiners): a head, each strip as it is, a tail.
* :class:`TiffSink`: a gray TIFF (BigTIFF beyond 4 GB) of deflated strips with the horizontal
  predictor, written by tifffile on a thread of its own that pulls strips from a short queue.
  It takes the workers' encoded strips as they are, or gray rows that it deflates itself (a job
  encoded on the master).

Both are context managers: on a clean exit the file is finished (and it is an error if rows are
missing); on an exception nothing more is written, and the caller throws the file away.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import BinaryIO

import numpy as np

from distgray.errors import ImageError
from distgray.imaging import jpegstrip, pngstrip, tiffstrip
from distgray.imaging.encoded import EncodedStrip, Encoding
from distgray.imaging.kernel import U8Array

#: BigTIFF beyond this many bytes of pixels (a classic TIFF's offsets are 32-bit; deflate adds
#: ~0.03% at worst).
BIGTIFF_BYTES = 4_000_000_000


class JoinedFile:
    """A PNG or JPEG written from the workers' strips: head, strips in row order, tail."""

    def __init__(self, fh: BinaryIO, width: int, height: int, encoding: Encoding) -> None:
        self._fh = fh
        self._joiner: pngstrip.PngJoiner | jpegstrip.JpegJoiner
        if encoding.format == "PNG":
            self._joiner = pngstrip.PngJoiner(width, height, encoding.setting, encoding.alpha)
        else:
            self._joiner = jpegstrip.JpegJoiner(width, height, encoding.setting)

    def __enter__(self) -> JoinedFile:
        self._fh.write(self._joiner.head())
        return self

    def add(self, piece: EncodedStrip) -> None:
        self._fh.write(self._joiner.strip(piece))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            self._fh.write(self._joiner.tail())


class TiffSink:
    """A gray TIFF written in deflated strips of ``strip_rows`` rows (the last may be shorter);
    ``alpha``: gray + unassociated alpha, two samples a pixel.

    :meth:`add` takes a worker's piece (whole TIFF strips, already deflated); :meth:`put` takes
    gray rows converted so far and deflates them on the writer thread. Either way strips must come
    in row order, and memory holds at most a few strips (the queue is short)."""

    def __init__(self, fh: BinaryIO, width: int, height: int, strip_rows: int, level: int, alpha: bool = False) -> None:
        self.width, self.height = width, height
        self.strip_rows, self.level, self.alpha = strip_rows, level, alpha
        self.row = 0  # rows handed to the writer
        self._strips: queue.Queue[bytes | U8Array | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._fh = fh
        self._thread = threading.Thread(target=self._write, name="distgray-tiff", daemon=True)
        self._thread.start()

    def add(self, piece: EncodedStrip) -> None:
        """A worker's piece: its TIFF strips, written as they are."""
        for strip in tiffstrip.split(piece.data, tiffstrip.strip_count(piece.length, self.strip_rows)):
            self._send(strip)
        self.row += piece.length

    def put(self, output: U8Array, frontier: int, source: U8Array | None = None) -> int:
        """Hand over the whole strips of ``output`` (gray rows; with the alpha of ``source``'s 4th
        channel for an ``alpha`` TIFF) below ``frontier`` (all of it at the bottom), copied: their
        memory can go once they are handed over. Returns the rows handed over so far."""
        if self.alpha and source is None:
            raise ValueError("a TIFF with alpha needs the source's alpha")
        while True:
            stop = min(self.height, self.row + self.strip_rows)
            if stop > frontier or self.row >= self.height:
                return self.row
            rows = output[self.row : stop]
            if source is not None and self.alpha:
                self._send(np.stack([rows, source[self.row : stop, :, 3]], axis=-1))
            else:
                self._send(np.array(rows))
            self.row = stop

    def _send(self, strip: bytes | U8Array | None) -> None:
        while self._thread.is_alive():
            try:
                self._strips.put(strip, timeout=0.5)
                return
            except queue.Full:
                continue
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise ImageError(f"cannot write TIFF: {self._error}") from self._error

    def _items(self) -> Iterator[bytes]:
        while (strip := self._strips.get()) is not None:
            yield strip if isinstance(strip, bytes) else tiffstrip.encode_rows(strip, self.level)

    def _write(self) -> None:
        import tifffile

        try:
            # named: tifffile takes a stream's name for a path, and an fdopen'd file's name is its fd
            handle = tifffile.FileHandle(self._fh, mode="wb", name="output.tif")
            samples = 2 if self.alpha else 1
            big = self.width * self.height * samples > BIGTIFF_BYTES
            with tifffile.TiffWriter(handle, bigtiff=big) as tif:
                tif.write(
                    self._items(),  # bytes: written as they are, under the tags below
                    shape=(self.height, self.width, 2) if self.alpha else (self.height, self.width),
                    dtype="uint8",
                    photometric="minisblack",
                    extrasamples=["unassalpha"] if self.alpha else None,
                    planarconfig="contig",
                    rowsperstrip=self.strip_rows,
                    compression="zlib",
                    predictor=tiffstrip.PREDICTOR_HORIZONTAL,
                    metadata=None,
                )
        except BaseException as exc:
            self._error = exc

    def __enter__(self) -> TiffSink:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None and self.row < self.height:
            raise ImageError(f"TIFF output ended at row {self.row} of {self.height}")
        if exc is None:
            self._send(None)
            self._thread.join()
            self._raise()
        else:  # the job failed: let the writer go (its file is thrown away)
            self._error = self._error or exc
            while self._thread.is_alive():
                try:
                    self._strips.put_nowait(None)
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self._strips.get_nowait()
                self._thread.join(timeout=0.1)
