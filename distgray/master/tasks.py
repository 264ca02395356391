"""Which message gives a strip to a worker, and what becomes of a plain result in an encoded job.

Pure functions of the books (no sockets, threads or clocks):

* PNG, JPEG or TIFF output: workers that offer ``png-strip`` (``jpeg-strip``, ``tiff-strip``)
  get PNG_TASKs (JPEG_TASKs, TIFF_TASKs) and return encoded strips (PNG: with the row above,
  unless ``png_row_above`` is off); a worker without it gets a plain TASK and the master encodes
  its gray rows itself, so any worker can take part in any job.
* Shared memory: a worker that read back the probe (SHM_OFFER / SHM_ANSWER) gets tasks that name
  the job's segment instead of carrying pixels, when the job's pixels are in one.
"""

from __future__ import annotations

import numpy as np

from distgray.imaging import ops, stripcodec, tiffstrip
from distgray.imaging.encoded import EncodedStrip
from distgray.master.books import Job, WorkerBook
from distgray.scheduling.strips import Strip
from distgray.wire import protocol as P

StripResult = P.Result | P.PngResult | P.JpegResult | P.TiffResult

#: What a worker must answer each kind of strip task with.
ANSWERS = {
    P.MessageType.TASK: P.MessageType.RESULT,
    P.MessageType.PNG_TASK: P.MessageType.PNG_RESULT,
    P.MessageType.JPEG_TASK: P.MessageType.JPEG_RESULT,
    P.MessageType.TIFF_TASK: P.MessageType.TIFF_RESULT,
}


def task_for(w: WorkerBook, job: Job, strip: Strip, png_row_above: bool) -> tuple[P.Task, memoryview | None]:
    """The task that gives ``strip`` to ``w``, and the payload to send with it (or None)."""
    enc = job.encoding
    # gray + alpha only to workers that said they make it; the others' rows are encoded here
    able = enc is not None and (not enc.alpha or P.CAPABILITY_ALPHA in w.capabilities)
    png = able and enc is not None and enc.format == "PNG" and P.CAPABILITY_PNG in w.capabilities
    jpeg = able and enc is not None and enc.format == "JPEG" and P.CAPABILITY_JPEG in w.capabilities
    tiff = able and enc is not None and enc.format == "TIFF" and P.CAPABILITY_TIFF in w.capabilities
    above = png and png_row_above and strip.row_start > 0
    # With an operation chain, the strip comes with its halo: the chain's support each way (the
    # row above a PNG strip needs its own), none past the image's edges.
    halo_above, halo_below = (
        ops.halo_of(job.support, strip.row_start, strip.row_stop, job.height, above) if job.ops else (0, 0)
    )
    first = strip.row_start - (halo_above if job.ops else above)
    segment, offset = "", 0
    if job.segment is not None and w.shm:
        segment, offset = job.segment.name, first * job.width * job.channels
    common = (job.id, strip.id, strip.row_start, strip.row_stop, job.width, job.channels, segment, offset)
    task: P.Task
    last = strip.row_stop == job.height
    halo = {"ops": job.ops, "halo_above": halo_above, "halo_below": halo_below}
    if png and enc is not None:
        task = P.PngTask(*common, enc.setting, above, last, enc.alpha, **halo)  # type: ignore[arg-type]
    elif jpeg and enc is not None:
        task = P.JpegTask(*common, enc.setting, last, **halo)  # type: ignore[arg-type]
    elif tiff and enc is not None:
        task = P.TiffTask(
            *common,
            enc.setting,
            tiffstrip.PREDICTOR_HORIZONTAL,
            enc.tiff_rows,
            last,
            enc.alpha,
            **halo,  # type: ignore[arg-type]
        )
    else:
        task = P.Task(*common, **halo)  # type: ignore[arg-type]
    payload = None if segment else job.pixels[first : strip.row_stop + halo_below].data
    return task, payload


def encode_here(job: Job, result: P.Result) -> EncodedStrip | None:
    """A plain RESULT for an encoded job (a worker that cannot encode strips): its gray rows, which
    landed in the job's output, encoded here. None for a job that is not encoded."""
    if job.encoding is None:
        return None
    rows = job.output[result.row_start : result.row_stop]
    enc = job.encoding
    if enc.alpha:  # gray + alpha pairs, the alpha from the source
        rows = np.stack([rows, job.pixels[result.row_start : result.row_stop, :, 3]], axis=-1)
    last = result.row_stop == job.height
    return stripcodec.encode(
        rows, enc.format, enc.setting, row_start=result.row_start, last=last, tiff_rows=enc.tiff_rows
    )


def piece_of(result: StripResult, payload: memoryview | None) -> EncodedStrip | None:
    """The encoded strip a PNG_, JPEG_ or TIFF_RESULT carries; None for a plain RESULT."""
    if isinstance(result, P.PngResult) and payload is not None:
        return EncodedStrip(payload.tobytes(), result.adler32, result.filtered_len)
    if isinstance(result, P.JpegResult | P.TiffResult) and payload is not None:
        return EncodedStrip(payload.tobytes(), 0, result.row_stop - result.row_start)
    return None
