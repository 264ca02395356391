"""Running one job on the workers, from loaded (or still decoding) pixels to the written file.

A mixin of :class:`distgray.service.Service`. Three ways through:

* the whole output composed and saved here with Pillow (any format; alpha kept where it can be);
* PNG or JPEG encoded by the workers strip by strip and joined here in row order, written as the
  strips come in (``--encode-on-master`` turns this off);
* either of those with the input still decoding: a plain RGB PNG streams band by band, a YCbCr
  JPEG decodes straight into the job's (shared) buffer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from distgray import fileio, imaging, jpegfast, jpegstrip, pngstream, pngstrip
from distgray.errors import ImageError, TaskFailed
from distgray.jobs import JobEntry, JobState, ServiceOptions
from distgray.local_workers import WorkerProcess
from distgray.master import Encoding, Job, Master
from distgray.report import job_report, write_json_atomic
from distgray.shm import Segment
from distgray.streamload import StreamDecode

log = logging.getLogger("distgray")

#: An input decoded while its job runs, rather than loaded first.
Source = pngstream.PngLayout | jpegfast.JpegLayout


class Conversion:
    """Mixin: needs ``self.master``, ``self.options`` and ``self.local_workers``."""

    master: Master
    options: ServiceOptions
    local_workers: list[WorkerProcess]

    def _convert_whole(
        self, entry: JobEntry, loaded: imaging.LoadedImage, quiet: bool, stream: Source | None
    ) -> tuple[Job | None, float]:
        """Convert on the workers (unless already gray), then compose and save the output here."""
        job = None
        if loaded.kind is imaging.Kind.GRAY:
            log.info("%s: already grayscale (%s): copied unchanged, no workers needed", entry.source, loaded.mode)
        else:
            job = self._convert(entry, loaded, quiet, stream=stream)
        if "input" not in entry.thumbnails:
            self._preview(entry, "input", loaded)
        entry.state = JobState.SAVING
        image, notes = imaging.compose_output(loaded, job.output if job is not None else None, entry.format)
        for note in notes:
            log.warning("%s: %s", entry.output, note)
        t_save = time.monotonic()
        options = imaging.save_options(entry.format, self.options.quality, self.options.png_level)
        imaging.save_atomic(image, entry.output, entry.format, options)
        self._preview(entry, "output", image)
        return job, t_save

    def _strip_encoding(self, entry: JobEntry, loaded: imaging.LoadedImage) -> Encoding | None:
        """How the workers can encode this output strip by strip: PNG, or JPEG within its limits
        (gray only: an output keeping alpha is composed here)."""
        if not self.options.strip_encoding or loaded.kind is not imaging.Kind.COLOR:
            return None
        if loaded.has_alpha and entry.format == "PNG":
            return None
        if entry.format == "PNG":
            return Encoding("PNG", self.options.png_level)
        if entry.format == "JPEG" and max(loaded.width, loaded.height) <= jpegstrip.MAX_SIDE:
            if loaded.has_alpha:
                log.warning("%s: JPEG has no alpha channel: alpha dropped", entry.output)
            quality = self.options.quality if self.options.quality is not None else imaging.DEFAULT_JPEG_QUALITY
            return Encoding("JPEG", quality)
        return None

    def _convert_encoded(
        self, entry: JobEntry, loaded: imaging.LoadedImage, quiet: bool, stream: Source | None, encoding: Encoding
    ) -> tuple[Job, float]:
        """An output made of strips the workers encoded, written in row order as they arrive
        (through a temporary file: a failed job leaves nothing behind)."""
        joiner: pngstrip.PngJoiner | jpegstrip.JpegJoiner
        if encoding.format == "PNG":
            joiner = pngstrip.PngJoiner(loaded.width, loaded.height, encoding.setting)
        else:
            joiner = jpegstrip.JpegJoiner(loaded.width, loaded.height, encoding.setting)
        done: list[tuple[Job, float]] = []

        def write(fh: BinaryIO) -> None:
            fh.write(joiner.head())
            row = 0

            def drain(job: Job) -> None:
                nonlocal row
                for stop, piece in self.master.take_encoded(job, row):
                    fh.write(joiner.strip(piece))
                    row = stop

            job = self._convert(entry, loaded, quiet, encoding=encoding, tick=drain, stream=stream)
            done.append((job, time.monotonic()))  # "saving": what is left once the job is done
            entry.state = JobState.SAVING
            drain(job)
            fh.write(joiner.tail())

        imaging.atomic_write(entry.output, write, f" {encoding.format}")
        return done[0]

    def _preview(
        self, entry: JobEntry, which: str, image: Image.Image | imaging.LoadedImage, gray: bool = False
    ) -> None:
        """A thumbnail for the page (of the input, if given a LoadedImage), unless previews are off."""
        if self.options.previews:
            if isinstance(image, imaging.LoadedImage):
                image = fileio.preview_of(image)
            entry.thumbnails[which] = fileio.thumbnail_png(image, gray=gray)

    def _convert(
        self,
        entry: JobEntry,
        loaded: imaging.LoadedImage,
        quiet: bool = False,
        *,
        encoding: Encoding | None = None,
        tick: Callable[[Job], None] | None = None,
        stream: Source | None = None,
    ) -> Job:
        """Run the job on the workers with a progress bar; ``tick(job)`` is called while it runs.

        With ``stream``, ``loaded`` has no pixels yet: they are decoded into a new buffer from
        now on, while the job waits for workers and runs (rows are handed out as they appear)."""
        opts, master = self.options, self.master
        deadline = None if opts.timeout is None else time.monotonic() + opts.timeout
        decode, segment = None, None
        try:
            if stream is not None:
                loaded.pixels, segment = master.pixel_buffer(stream.shape)
                if isinstance(stream, pngstream.PngLayout):
                    decode = StreamDecode(stream, loaded.pixels, master).start()
                elif not jpegfast.decode_into(stream, loaded.pixels):
                    _decode_with_pillow(loaded.pixels, entry.source, opts.max_pixels)
            self._wait_for_workers(entry, deadline)
            if stream is None:
                # In shared memory (if a worker can read ours), the shared copy replaces the original.
                assert loaded.pixels is not None
                loaded.pixels, segment = master.share(loaded.pixels)
            return self._run_job(entry, loaded, segment, quiet, encoding, tick, deadline, decode)
        finally:
            if segment is not None:
                segment.close()  # unlinked now; unmapped when the last array on it goes

    def _wait_for_workers(self, entry: JobEntry, deadline: float | None) -> None:
        opts, master = self.options, self.master
        if len(master.live_workers()) < opts.min_workers:
            entry.state = JobState.WAITING
            log.info("waiting for %d worker(s)...", opts.min_workers)
        procs = self.local_workers
        while not master.wait_for_workers(opts.min_workers, timeout=0.5):
            if procs and all(p.poll() is not None for p in procs) and len(procs) >= opts.min_workers:
                raise TaskFailed(f"local workers exited (codes {[p.returncode for p in procs]}) before joining")
            if deadline is not None and time.monotonic() > deadline:
                raise TaskFailed(f"timed out after {opts.timeout:g} s waiting for {opts.min_workers} worker(s)")

    def _run_job(
        self,
        entry: JobEntry,
        loaded: imaging.LoadedImage,
        segment: Segment | None,
        quiet: bool,
        encoding: Encoding | None,
        tick: Callable[[Job], None] | None,
        deadline: float | None,
        decode: StreamDecode | None,
    ) -> Job:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        opts, master = self.options, self.master
        assert loaded.pixels is not None
        rows_ready = 0 if decode is not None else None
        job = master.submit(loaded.pixels, entry.name, encoding=encoding, segment=segment, rows_ready=rows_ready)
        entry.job, entry.state = job, JobState.RUNNING
        if decode is not None:
            decode.attach(job)
        else:  # the preview is made while the workers convert (the master would only wait)
            self._preview(entry, "input", loaded)
        with (
            logging_redirect_tqdm(),
            tqdm(total=job.height, unit="rows", desc=entry.name, disable=True if quiet else None, leave=False) as bar,
        ):
            waiting = False
            while not job.wait(0.2):
                if tick is not None:
                    tick(job)
                bar.update(job.rows_done - bar.n)
                none_left = not master.live_workers()
                if none_left and not waiting and not quiet:  # once per episode, not every tick
                    log.warning(
                        "no workers connected: the job waits (%d/%d rows done). Start one with:\n    %s",
                        job.rows_done,
                        job.height,
                        opts.worker_command,
                    )
                waiting = none_left
                if deadline is not None and time.monotonic() > deadline:
                    raise TaskFailed(f"timed out after {opts.timeout:g} s ({job.rows_done}/{job.height} rows done)")
            bar.update(job.rows_done - bar.n)
        if decode is not None:
            decode.join()  # raises the decoding's error, if that is why the job failed
            self._preview(entry, "input", loaded)
        if job.failure:
            if opts.report:  # what happened is most useful when it went wrong
                entry.report = job_report(job, master)
                write_json_atomic(entry.report, opts.report)
            raise TaskFailed(f"job failed: {job.failure}")
        return job


def _decode_with_pillow(out: imaging.U8Array, source: Path, max_pixels: int) -> None:
    whole = imaging.load_image(source, max_pixels)
    if whole.pixels is None or whole.pixels.shape != out.shape:
        raise ImageError(f"{source}: decoders disagree about the image's shape")
    np.copyto(out, whole.pixels)
