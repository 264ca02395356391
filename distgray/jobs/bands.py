"""Images of any size: which inputs stream through a window, and how many rows it holds.

An image whose pixels (RGB in, gray out) fit ``--window-mb`` is loaded whole, as always. A larger
one *streams*: the master reads it in bands (PNG: :mod:`~distgray.imaging.pngstream`, TIFF and
BigTIFF: :mod:`~distgray.imaging.tiffbands`) into a sparse buffer, hands the rows to the workers
as they arrive, writes the output in row order (the workers' encoded strips, through
:mod:`~distgray.jobs.sinks`) and gives each band's memory back once its rows are in the file. The
rows decoded and not yet written never exceed the window, so memory stays flat whatever the
image's size; a strip whose worker is lost is redone from rows still held.

Inputs that cannot be read in bands, or outputs that cannot be written in bands, are refused up
front when the image does not fit the budget, with what would work instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

from distgray.config import DEFAULT_MAX_PIXELS, THUMBNAIL_SIDE
from distgray.engines.base import Engine, PixelBuffer
from distgray.errors import ImageError
from distgray.imaging import files, jpegbands, jpegfast, jpegstrip, load, pngstream, tiffbands, tiffstrip
from distgray.imaging.encoded import Encoding
from distgray.imaging.kernel import U8Array
from distgray.jobs.entries import JobEntry, ServiceOptions
from distgray.jobs.streamload import Reader, StreamDecode

Layout = pngstream.PngLayout | jpegfast.JpegLayout | tiffbands.TiffLayout | jpegbands.JpegBands

#: Bytes of memory one pixel of a job costs the master: RGB in, gray out (RGBA in: one more).
BYTES_PER_PIXEL = 4
#: Images up to Pillow's own pixel limit load whole whatever the window (as they always have).
WHOLE_BUDGET_BYTES = DEFAULT_MAX_PIXELS * BYTES_PER_PIXEL


def format_of(layout: Layout) -> str:
    return (
        "PNG"
        if isinstance(layout, pngstream.PngLayout)
        else "TIFF"
        if isinstance(layout, tiffbands.TiffLayout)
        else "JPEG"
    )


def mode_of(layout: Layout) -> str:
    """The input's own mode, as the summary and the page show it."""
    return layout.mode if isinstance(layout, pngstream.PngLayout) else "RGB"


def streams(layout: Layout, opts: ServiceOptions) -> bool:
    """Whether this input streams through the window (too big to hold, and readable in bands)."""
    return not isinstance(layout, jpegfast.JpegLayout) and _layout_bytes(layout) > opts.window_bytes


def plan(entry: JobEntry, opts: ServiceOptions) -> Layout | None:
    """How ``entry``'s input is read: a layout to decode while the job runs (and to stream, if it
    does not fit the window), or None to load it whole. Raises ImageError, up front, for an image
    beyond ``--max-pixels`` or one that does not fit and cannot be read or written in bands."""
    src = entry.source
    layout: Layout | None
    if not isinstance(src, Path):  # behind a URL: a TIFF read by ranges (the rest is copied first)
        layout = tiffbands.probe(src)
        if layout is None:
            raise ImageError(f"{src}: cannot be read in bands from its store")
    else:
        layout = pngstream.probe(src, sys.maxsize) or tiffbands.probe(src)
        fits = layout is not None and _layout_bytes(layout) <= opts.window_bytes
        if fits and (
            isinstance(layout, tiffbands.TiffLayout)
            or (isinstance(layout, pngstream.PngLayout) and layout.mode in load.GRAY_MODES)
        ):
            layout = None  # fits: Pillow loads it whole, as any TIFF (and a gray PNG is copied as it is)
        header = _header(src) if layout is None else None
        if header is not None and header[0] == "JPEG" and _bytes(*header[1:]) > opts.window_bytes:
            layout = jpegbands.probe(src)  # too big to hold: libvips reads it in bands, if it can
        if layout is None:
            if header is not None:  # loaded whole: refused first if it does not fit
                _check_whole(entry, opts, *header)
            return jpegfast.probe(src, opts.max_pixels)
    width, height = layout.width, layout.height
    if width * height > opts.max_pixels:
        why = (
            f"it would stream through the {opts.window_bytes >> 20} MB window, so the guard is about disk"
            f" (~{width * height / 1e9:.1f} GB of gray output uncompressed) and time, not memory"
            if streams(layout, opts)
            else "a guard against decompression bombs"
        )
        raise ImageError(
            f"{src}: {width}x{height} = {width * height:,} pixels exceeds --max-pixels {opts.max_pixels:,}"
            f" ({why}); raise it with --max-pixels {width * height}"
        )
    if streams(layout, opts):
        _check_output(entry, opts, width, height)
    return layout


def _bytes(width: int, height: int) -> int:
    return width * height * BYTES_PER_PIXEL


def _row_bytes(layout: Layout) -> int:
    """What one row of ``layout`` costs the master: its pixels in (3 or 4 bytes a pixel), gray out."""
    return layout.width * (layout.shape[2] + 1)


def _layout_bytes(layout: Layout) -> int:
    return _row_bytes(layout) * layout.height


def _header(path: Path) -> tuple[str, int, int] | None:
    """(format, width, height) from the file's header, whatever its size (--max-pixels is applied
    later); None if Pillow cannot tell (loading it then says what is wrong)."""
    try:
        return files.probe_file(path, sys.maxsize)
    except ImageError:
        return None


def _check_whole(entry: JobEntry, opts: ServiceOptions, fmt: str, width: int, height: int) -> None:
    """An input loaded whole: refused if it does not fit the budget."""
    need = _bytes(width, height)
    if width * height <= opts.max_pixels and need > max(opts.window_bytes, WHOLE_BUDGET_BYTES):
        how = "PNG not interlaced, without tRNS, other than 16-bit gray; 8-bit RGB TIFF/BigTIFF in strips"
        how += " or tiles, lossless"
        if jpegbands.agrees_with_pillow():
            how += "; YCbCr JPEG"
        raise ImageError(
            f"{entry.source}: a {fmt} of {width}x{height} needs {need >> 20:,} MB in memory, more than"
            f" --window-mb {opts.window_bytes >> 20}, and cannot be read in bands (only {how} can);"
            f" convert it to one of those, or raise --window-mb to {-(-need >> 20)} to load it whole"
        )


def _check_output(entry: JobEntry, opts: ServiceOptions, width: int, height: int) -> None:
    """A streamed job's output must be written in bands: PNG or JPEG (encoded by the workers) or TIFF."""
    fmt = entry.format
    if fmt in ("PNG", "JPEG") and not opts.strip_encoding:
        reason = "--encode-on-master encodes the whole output at once"
    elif fmt == "JPEG" and max(width, height) > jpegstrip.MAX_SIDE:
        reason = f"JPEG cannot hold more than {jpegstrip.MAX_SIDE:,} pixels a side"
    elif fmt in ("PNG", "JPEG", "TIFF"):
        return
    else:
        reason = f"{fmt} cannot be written in bands"
    raise ImageError(
        f"{entry.source}: {width}x{height} does not fit --window-mb {opts.window_bytes >> 20} and streams,"
        f" but its {fmt} output cannot ({reason}); write PNG or TIFF (or JPEG up to {jpegstrip.MAX_SIDE:,}"
        " a side), or raise --window-mb"
    )


def reader(layout: Layout) -> Reader:
    """The band reader of a PNG or TIFF layout."""
    if isinstance(layout, pngstream.PngLayout):
        png = layout
        return lambda out, ready: pngstream.decode_into(png, out, ready)
    if isinstance(layout, tiffbands.TiffLayout):
        tiff = layout
        return lambda out, ready: tiffbands.decode_into(tiff, out, ready)
    if isinstance(layout, jpegbands.JpegBands):
        jpeg = layout
        return lambda out, ready: jpegbands.decode_into(jpeg, out, ready)
    raise TypeError(f"no band reader for {layout!r}")


def band_rows(layout: Layout) -> int:
    """Rows the reader decodes at a time (and so commits at a time); a JPEG decoded whole by
    simplejpeg has no bands."""
    return layout.height if isinstance(layout, jpegfast.JpegLayout) else layout.band_rows


def tiff_rows(width: int, opts: ServiceOptions) -> int:
    """RowsPerStrip of a TIFF output: ~1 MB of gray, but a quarter of the window at most, so that a
    streamed job's window holds a few whole TIFF strips (the workers' strips are made of them)."""
    return tiffstrip.rows_per_strip(width, opts.window_bytes // (width * BYTES_PER_PIXEL) // 4)


def window_rows(layout: Layout, opts: ServiceOptions, encoding: Encoding | None) -> int:
    """Rows decoded and not yet written, at most: the window in rows, but always room for a band
    being decoded, one being converted, a strip of ``--strip-rows`` and the JPEG alignment."""
    rows = opts.window_bytes // _row_bytes(layout)
    align = encoding.row_align if encoding is not None else 1
    return max(rows, 2 * band_rows(layout) + (opts.strip_rows or 0) + 2 * align + 2)


def decoder(
    layout: Layout,
    out: U8Array,
    engine: Engine,
    buffer: PixelBuffer | None,
    opts: ServiceOptions,
    encoding: Encoding | None,
) -> StreamDecode:
    """The background decoding of ``layout`` into ``out``: for a streamed job held to its window
    (with a sample kept for the previews), else free to run ahead into the whole buffer."""
    if not streams(layout, opts):
        return StreamDecode(layout.path, reader(layout), out, engine, band_rows=band_rows(layout))
    return StreamDecode(
        layout.path,
        reader(layout),
        out,
        engine,
        buffer=buffer,
        window_rows=window_rows(layout, opts, encoding),
        band_rows=band_rows(layout),
        preview_side=2 * THUMBNAIL_SIDE if opts.previews else 0,
    )
