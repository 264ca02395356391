"""Outputs the workers encode strip by strip: what is asked for, and what one strip gives back.

Shared by the PNG and JPEG strip codecs, the master that joins the pieces, and the jobs that ask
for them. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Encoding:
    """An output the workers encode strip by strip: PNG at zlib level ``setting`` (0-9), or
    JPEG at quality ``setting`` (1-100)."""

    format: str
    setting: int

    @property
    def row_align(self) -> int:
        return 8 if self.format == "JPEG" else 1  # JPEG strips: whole MCU rows of one gray component


@dataclass(frozen=True)
class EncodedStrip:
    """One strip's encoded bytes. PNG: raw deflate, with the Adler-32 and length of the filtered
    bytes in them; JPEG: the strip's scan, ``length`` its rows (``adler`` unused)."""

    data: bytes
    adler: int
    length: int
