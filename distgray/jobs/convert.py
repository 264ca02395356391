"""Running one job on an engine, from the input file to the written output.

:class:`Converter` takes a queued :class:`JobEntry` end to end: load (or start decoding), wait
for workers, convert, save atomically, previews and the report. Three ways through:

* the whole output composed and saved here with Pillow (any format; alpha kept where it can be);
* PNG or JPEG encoded by the workers strip by strip and joined here in row order, written as the
  strips come in (``--encode-on-master`` turns this off);
* either of those with the input still decoding: a plain RGB PNG streams band by band, a YCbCr
  JPEG decodes straight into the job's (shared) buffer;
* *streamed* (an image whose pixels do not fit ``--window-mb``): read in bands (PNG, TIFF) into a
  sparse buffer, converted, and written in row order (PNG and JPEG encoded by the workers, TIFF
  written here in strips), each band's memory given back once its rows are in the file; neither
  the whole input nor the whole output is ever in memory (:mod:`distgray.jobs.bands`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from distgray.config import DEFAULT_JPEG_QUALITY
from distgray.engines.base import Engine, PixelBuffer, RunningJob
from distgray.errors import ImageError, TaskFailed
from distgray.imaging import files, jpegfast, jpegstrip, load, ops, save
from distgray.imaging.encoded import Encoding
from distgray.imaging.kernel import U8Array
from distgray.jobs import bands, sinks
from distgray.jobs.entries import JobEntry, JobState, ServiceOptions
from distgray.jobs.report import format_summary, silent, write_json_atomic
from distgray.jobs.streamload import StreamDecode

log = logging.getLogger(__name__)

#: An input decoded while its job runs, rather than loaded first.
Source = bands.Layout


class Converter:
    """Runs queued entries on ``engine``, one at a time, with the run's ``options``."""

    def __init__(self, engine: Engine, options: ServiceOptions, say: Callable[[str], None] = silent) -> None:
        self.engine = engine
        self.options = options
        self.say = say  # the summary for the person at the terminal (the command line prints it)

    def process(self, entry: JobEntry, quiet: bool = False) -> None:
        """Convert one queued image end to end. Raises on failure, after marking the entry failed.

        ``quiet`` (batches): no progress bar or summary table of its own."""
        opts = self.options
        t0 = time.monotonic()
        entry.started_at, entry.state = time.time(), JobState.LOADING
        try:
            # A plain RGB PNG is decoded band by band while the workers start on it, a YCbCr JPEG
            # straight into the job's buffer (both in _convert); an image too big for the window
            # streams through it (PNG, TIFF); anything else is loaded here.
            stream = bands.plan(entry, opts)
            if stream is not None:
                height, width, channels = stream.shape
                fmt, mode = bands.format_of(stream), bands.mode_of(stream)
                loaded = load.LoadedImage(entry.source, fmt, mode, load.Kind.COLOR, width, height, channels=channels)
            elif isinstance(entry.source, Path):
                loaded = load.load_image(entry.source, opts.max_pixels)
            else:  # behind a URL, only what streams by ranges comes here (the rest is copied first)
                raise ImageError(f"{entry.source}: cannot be read in bands from its store")
            t_loaded = time.monotonic()
            entry.width, entry.height, entry.mode = loaded.width, loaded.height, loaded.mode
            for note in loaded.notes:
                log.info("%s: %s", entry.source, note)
            job: RunningJob | None
            chain = ops.chain_of(entry.ops) if entry.ops else ()
            in_strips, on_whole = ops.split(chain)
            # Strips encoded by the workers only when the strips' rows are the output's.
            plain = not on_whole and not ops.ends_in_canny(in_strips)
            encoding = self._strip_encoding(entry, loaded, alpha=not chain) if plain else None
            streamed = stream is not None and bands.streams(stream, opts)
            if streamed and not plain:
                raise ImageError(
                    f"{entry.source}: {ops.spell(on_whole or in_strips[-1:])} needs the whole gray image in memory,"
                    f" which is over the window (--window-mb {opts.window_bytes >> 20})"
                )
            if streamed and encoding is None:  # TIFF encoded here: written in strips as rows come in
                assert stream is not None
                job, t_save = self._convert_tiff(entry, loaded, quiet, stream)
            elif encoding is not None:
                # Encoded by the workers strip by strip and written as the strips come in.
                job, t_save = self._convert_encoded(entry, loaded, quiet, stream, encoding)
                if not streamed and entry.ops and self.options.previews and isinstance(entry.output, Path):
                    with Image.open(entry.output) as written:  # the chain's result, as written
                        self._preview(entry, "output", written)
                elif not streamed:  # a streamed job's rows are gone by now
                    self._preview(entry, "output", loaded, gray=True)
            else:
                job, t_save = self._convert_whole(entry, loaded, quiet, stream, chain)
            t_saved = time.monotonic()
            self._finish_report(entry, job, t0, t_loaded, t_save, t_saved, quiet, streamed)
            entry.state = JobState.DONE
        except BaseException as exc:
            entry.state = JobState.FAILED
            entry.error = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            raise
        finally:
            entry.finished_at = time.time()
            if entry.job is not None:
                entry.job.release()

    def _finish_report(
        self,
        entry: JobEntry,
        job: RunningJob | None,
        t0: float,
        t_loaded: float,
        t_save: float,
        t_saved: float,
        quiet: bool,
        streamed: bool = False,
    ) -> None:
        total = t_saved - t0
        if job is None:
            if not quiet:
                self.say(f"{entry.output}: written ({entry.width}x{entry.height}, {entry.mode}) in {total:.3f} s")
            return
        report = self.engine.report(job)
        report.update(
            output=str(entry.output),
            input=str(entry.source),
            ops=entry.ops or None,
            streamed=streamed,  # through the --window-mb window, never whole in memory
            total_s=round(total, 4),
            load_s=round(t_loaded - t0, 4),
            save_s=round(t_saved - t_save, 4),
        )
        entry.report = report
        if not quiet:
            self.say(format_summary(report))
        if self.options.report:
            write_json_atomic(report, self.options.report)

    def _convert_whole(
        self,
        entry: JobEntry,
        loaded: load.LoadedImage,
        quiet: bool,
        stream: Source | None,
        chain: tuple[ops.Op, ...] = (),
    ) -> tuple[RunningJob | None, float]:
        """Convert on the workers (unless already gray), then compose and save the output here.
        With an operation ``chain``: its filters (and a Canny's classification) run in the
        workers' strips with halos; a Canny's hysteresis and the resizes run here on the whole
        gray image (an input already gray: the whole chain here)."""
        job = None
        in_strips, on_whole = ops.split(chain)
        if loaded.kind is load.Kind.GRAY:
            if chain:
                log.info("%s: already grayscale (%s): %s run here", entry.source, loaded.mode, entry.ops)
                on_whole = chain
            else:
                log.info("%s: already grayscale (%s): copied unchanged, no workers needed", entry.source, loaded.mode)
        else:
            job = self._convert(entry, loaded, quiet, stream=stream, ops_in_strips=ops.spell(in_strips))
        if "input" not in entry.thumbnails:
            self._preview(entry, "input", loaded)
        entry.state = JobState.SAVING
        gray = job.output if job is not None else None
        if gray is not None and ops.ends_in_canny(in_strips):
            gray = ops.canny_finish(gray)  # the hysteresis, across the strips' joined maps
        image, notes = load.compose_output(loaded, gray, entry.format, on_whole if chain else None)
        for note in notes:
            log.warning("%s: %s", entry.output, note)
        t_save = time.monotonic()
        options = save.save_options(entry.format, self.options.quality, self.options.png_level)
        save.save_atomic(image, entry.output, entry.format, options)
        self._preview(entry, "output", image)
        return job, t_save

    def _strip_encoding(self, entry: JobEntry, loaded: load.LoadedImage, alpha: bool = True) -> Encoding | None:
        """How the workers can encode this output strip by strip: PNG or TIFF (gray + alpha when
        the input has alpha, unless ``alpha`` is off: an operation chain drops it), or JPEG
        within its limits (alpha dropped)."""
        if not self.options.strip_encoding or loaded.kind is not load.Kind.COLOR:
            return None
        alpha = alpha and loaded.has_alpha
        if entry.format == "PNG":
            return Encoding("PNG", self.options.png_level, alpha=alpha)
        if entry.format == "TIFF":
            rows = bands.tiff_rows(loaded.width, self.options)
            return Encoding("TIFF", self.options.png_level, rows, alpha=alpha)
        if entry.format == "JPEG" and max(loaded.width, loaded.height) <= jpegstrip.MAX_SIDE:
            if alpha:
                log.warning("%s: JPEG has no alpha channel: alpha dropped", entry.output)
            quality = self.options.quality if self.options.quality is not None else DEFAULT_JPEG_QUALITY
            return Encoding("JPEG", quality)
        return None

    def _convert_encoded(
        self, entry: JobEntry, loaded: load.LoadedImage, quiet: bool, stream: Source | None, encoding: Encoding
    ) -> tuple[RunningJob, float]:
        """An output made of strips the workers encoded, written in row order as they arrive
        (through a temporary file: a failed job leaves nothing behind)."""
        done: list[tuple[RunningJob, float]] = []

        def write(fh: BinaryIO) -> None:
            sink: sinks.JoinedFile | sinks.TiffSink
            if encoding.format == "TIFF":
                rows = encoding.tiff_rows
                sink = sinks.TiffSink(fh, loaded.width, loaded.height, rows, encoding.setting, encoding.alpha)
            else:
                sink = sinks.JoinedFile(fh, loaded.width, loaded.height, encoding)
            with sink:
                row = 0

                def drain(job: RunningJob, decode: StreamDecode | None) -> None:
                    nonlocal row
                    for stop, piece in self.engine.take_encoded(job, row):
                        sink.add(piece)
                        row = stop
                    self._written(job, decode, row)

                job = self._convert(
                    entry, loaded, quiet, encoding=encoding, tick=drain, stream=stream, ops_in_strips=entry.ops
                )
                done.append((job, time.monotonic()))  # "saving": what is left once the job is done
                entry.state = JobState.SAVING
                drain(job, None)

        save.atomic_write(entry.output, write, f" {encoding.format}")
        return done[0]

    def _convert_tiff(
        self, entry: JobEntry, loaded: load.LoadedImage, quiet: bool, stream: Source
    ) -> tuple[RunningJob, float]:
        """A streamed job's TIFF output encoded here (``--encode-on-master``): gray rows deflated
        and written in strips, in row order, as the strips before them are converted."""
        done: list[tuple[RunningJob, float]] = []

        def write(fh: BinaryIO) -> None:
            rows, alpha = bands.tiff_rows(loaded.width, self.options), loaded.has_alpha and not entry.ops
            with sinks.TiffSink(fh, loaded.width, loaded.height, rows, self.options.png_level, alpha) as sink:

                def drain(job: RunningJob, decode: StreamDecode | None) -> None:
                    frontier = self.engine.rows_converted(job)
                    row = sink.put(job.output, frontier, loaded.pixels)
                    self._written(job, decode, row)

                job = self._convert(entry, loaded, quiet, tick=drain, stream=stream, ops_in_strips=entry.ops)
                done.append((job, time.monotonic()))
                entry.state = JobState.SAVING
                drain(job, None)

        save.atomic_write(entry.output, write, " TIFF")
        return done[0]

    def _written(self, job: RunningJob, decode: StreamDecode | None, row: int) -> None:
        """Rows [0, row) are in the output file: a streamed job's window moves on."""
        self.engine.written(job, row)
        if decode is not None:
            decode.written(row)

    def _preview(self, entry: JobEntry, which: str, image: Image.Image | load.LoadedImage, gray: bool = False) -> None:
        """A thumbnail for the page (of the input, if given a LoadedImage), unless previews are off."""
        if self.options.previews:
            if isinstance(image, load.LoadedImage):
                image = files.preview_of(image)
            entry.thumbnails[which] = files.thumbnail_png(image, gray=gray)

    def _convert(
        self,
        entry: JobEntry,
        loaded: load.LoadedImage,
        quiet: bool = False,
        *,
        encoding: Encoding | None = None,
        tick: Callable[[RunningJob, StreamDecode | None], None] | None = None,
        stream: Source | None = None,
        ops_in_strips: str = "",
    ) -> RunningJob:
        """Run the job on the workers with a progress bar; ``tick(job, decode)`` is called while
        it runs; ``ops_in_strips``: the operation chain the workers run on each strip.

        With ``stream``, ``loaded`` has no pixels yet: they are decoded into a new buffer from
        now on, while the job waits for workers and runs (rows are handed out as they appear).
        A streamed job's buffer is sparse, and its decoding waits for room in the window."""
        opts, engine = self.options, self.engine
        deadline = None if opts.timeout is None else time.monotonic() + opts.timeout
        decode: StreamDecode | None = None
        segment: PixelBuffer | None = None
        streamed = stream is not None and bands.streams(stream, opts)
        try:
            if stream is not None:
                loaded.pixels, segment = engine.pixel_buffer(stream.shape, sparse=streamed)
                if not isinstance(stream, jpegfast.JpegLayout):  # bands, in the background
                    decode = bands.decoder(stream, loaded.pixels, engine, segment, opts, encoding).start()
                elif not jpegfast.decode_into(stream, loaded.pixels):
                    _decode_with_pillow(loaded.pixels, stream.path, opts.max_pixels)
            self._wait_for_workers(entry, deadline)
            if stream is None:
                # In shared memory (if a worker can read ours), the shared copy replaces the original.
                assert loaded.pixels is not None
                loaded.pixels, segment = engine.share(loaded.pixels)
            return self._run_job(
                entry, loaded, segment, quiet, encoding, tick, deadline, decode, streamed, ops_in_strips
            )
        finally:
            if decode is not None:
                decode.stop()
            if segment is not None:
                segment.close()  # unlinked now; unmapped when the last array on it goes

    def _wait_for_workers(self, entry: JobEntry, deadline: float | None) -> None:
        opts, engine = self.options, self.engine
        if engine.live_workers() < opts.min_workers:
            entry.state = JobState.WAITING
            log.info("waiting for %d worker(s)...", opts.min_workers)
        while not engine.wait_for_workers(opts.min_workers, timeout=0.5):
            if (why := engine.workers_exited()) is not None:
                raise TaskFailed(why)
            if deadline is not None and time.monotonic() > deadline:
                raise TaskFailed(f"timed out after {opts.timeout:g} s waiting for {opts.min_workers} worker(s)")

    def _run_job(
        self,
        entry: JobEntry,
        loaded: load.LoadedImage,
        segment: PixelBuffer | None,
        quiet: bool,
        encoding: Encoding | None,
        tick: Callable[[RunningJob, StreamDecode | None], None] | None,
        deadline: float | None,
        decode: StreamDecode | None,
        streamed: bool = False,
        ops_in_strips: str = "",
    ) -> RunningJob:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        opts, engine = self.options, self.engine
        assert loaded.pixels is not None
        rows_ready = 0 if decode is not None else None
        job = engine.submit(
            loaded.pixels,
            entry.name,
            encoding=encoding,
            buffer=segment,
            rows_ready=rows_ready,
            streamed=streamed,
            ops=ops_in_strips,
        )
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
                    tick(job, decode)
                bar.update(job.rows_done - bar.n)
                none_left = not engine.live_workers()
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
            if job.failure:
                decode.stop()
            decode.join()  # raises the decoding's error, if that is why the job failed
            if not streamed:
                self._preview(entry, "input", loaded)
            elif decode.preview is not None and opts.previews:  # its rows are gone: the sample kept
                sample = Image.fromarray(decode.preview)
                entry.thumbnails["input"] = files.thumbnail_png(sample)
                entry.thumbnails["output"] = files.thumbnail_png(sample, gray=True)
        if job.failure:
            if opts.report:  # what happened is most useful when it went wrong
                entry.report = engine.report(job)
                write_json_atomic(entry.report, opts.report)
            raise TaskFailed(f"job failed: {job.failure}")
        return job


def _decode_with_pillow(out: U8Array, source: Path, max_pixels: int) -> None:
    whole = load.load_image(source, max_pixels)
    if whole.pixels is None or whole.pixels.shape != out.shape:
        raise ImageError(f"{source}: decoders disagree about the image's shape")
    np.copyto(out, whole.pixels)
