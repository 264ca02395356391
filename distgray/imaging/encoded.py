"""Outputs the workers encode strip by strip: what is asked for, and what one strip gives back.

Shared by the PNG, JPEG and TIFF strip codecs, the master that joins the pieces, and the jobs that ask
for them. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Encoding:
    """An output the workers encode strip by strip: PNG at zlib level ``setting`` (0-9), JPEG
    at quality ``setting`` (1-100), or TIFF deflated at zlib level ``setting`` in TIFF strips of
    ``tiff_rows`` rows. ``alpha``: a PNG or TIFF of gray + alpha (the input's 4th channel)."""

    format: str
    setting: int
    tiff_rows: int = 0
    alpha: bool = False

    @property
    def samples(self) -> int:
        """Bytes a pixel of the output: gray, or gray + alpha."""
        return 2 if self.alpha else 1

    @property
    def row_align(self) -> int:
        """Strips start on multiples of this: JPEG on whole MCU rows of one gray component, TIFF
        on whole TIFF strips."""
        return 8 if self.format == "JPEG" else self.tiff_rows if self.format == "TIFF" else 1


@dataclass(frozen=True)
class EncodedStrip:
    """One strip's encoded bytes. PNG: raw deflate, with the Adler-32 and length of the filtered
    bytes in them; JPEG: the strip's scan, ``length`` its rows (``adler`` unused); TIFF: the
    sizes, then the bytes, of its TIFF strips (``imaging.tiffstrip``), ``length`` its rows."""

    data: bytes
    adler: int
    length: int
