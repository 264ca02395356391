"""Batches: many images (a folder, or several ``--image``) converted with nothing lost.

Planning is pure file-system work in this process: find the inputs, name their outputs (keeping
sub-folders, never colliding, never the input itself), skip outputs a previous run completed
(checked by decoding them), and read each input's header (bad files fail here, with the reason,
before any worker sees them). Then:

- images up to ``whole_file_max_pixels`` go to workers as whole files (FILE_TASK): the worker
  decodes, converts and encodes, so the expensive parts run in parallel and only encoded bytes
  cross the network;
- bigger ones go through the strip path one at a time (``Service.process``), alongside.

Every file ends converted, skipped or failed; each gets a line in ``distgray-log.jsonl`` in the
output folder, and the summary lists every failure with its reason.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from distgray import __version__, config, formats
from distgray.engines.base import Engine
from distgray.errors import DistgrayError, ImageError
from distgray.imaging import load, save, tiffbands
from distgray.imaging.files import probe_file
from distgray.jobs import provenance
from distgray.jobs.entries import JobEntry, JobState
from distgray.jobs.report import silent
from distgray.jobs.service import Service
from distgray.scheduling.files import FileQueue, FileUnit, UnitState
from distgray.storage import places
from distgray.storage.places import Place
from distgray.storage.remote import Remote

log = logging.getLogger(__name__)

LOG_NAME = provenance.LOG_NAME
#: Headers read at once from a store behind a URL (each a round trip).
REMOTE_CHECKS = 8


@dataclass(frozen=True)
class BatchOptions:
    images: tuple[Place, ...] = ()
    input_dir: Place | None = None
    recursive: bool = False
    pattern: str | None = None
    output_dir: Place = Path(config.DEFAULT_OUTPUT_DIR)
    format: str | None = None
    overwrite: bool = False
    whole_file_max_pixels: int = config.WHOLE_FILE_MAX_PIXELS
    quality: int | None = None
    png_level: int = config.DEFAULT_PNG_LEVEL
    max_pixels: int = config.DEFAULT_MAX_PIXELS
    task_index: int = 0  # indexed tasks: this task converts the inputs of share task_index ...
    task_count: int = 1  # ... of task_count (see share_of)
    ops: str = ""  # the operation chain after gray (``imaging.ops.spell``)

    @property
    def log_name(self) -> str:
        return provenance.task_log_name(self.task_index, self.task_count)


@dataclass
class Item:
    """One input of the batch and what became of it."""

    source: Place
    name: str  # relative path shown to people
    rel: PurePath | None = None  # path inside --input-dir, kept under the output folder
    output: Place | None = None
    format: str = ""
    status: str = "pending"  # converted, skipped, failed
    reason: str = ""
    unit: str = ""  # "file" or "strips"
    width: int = 0
    height: int = 0
    worker: str = ""
    seconds: float = 0.0  # on the workers: sent -> written (strips: load -> save)
    entry: JobEntry | None = None
    options: dict[str, Any] = field(default_factory=dict)  # what shapes its output (the log keeps it)
    before: dict[str, Any] | None = None  # its input's size and time when planned

    @property
    def pixels(self) -> int:
        return self.width * self.height


# ---------------------------------------------------------------------------------- planning
def discover(opts: BatchOptions) -> list[Item]:
    """The batch's inputs, in a stable order: the ``--image`` paths, then the folder's matches.

    Directories are not followed through symbolic links (no loops). A directory whose name looks
    like an image is listed (it will fail with that reason) rather than silently ignored. The
    output folder is skipped when it lies inside the input folder.
    """
    items = [Item(p, str(p)) for p in opts.images]
    if opts.input_dir is None:
        return items
    root = opts.input_dir
    if isinstance(root, Remote):
        return items + _discover_remote(root, opts)
    assert isinstance(opts.output_dir, Path)
    skip = opts.output_dir.resolve()

    found: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() != skip)
        found += [here / n for n in [*files, *dirs] if wanted_name(n, opts)]
        if not opts.recursive:
            break
    return items + [Item(p, str(p.relative_to(root)), p.relative_to(root)) for p in sorted(found)]


def _discover_remote(root: Remote, opts: BatchOptions) -> list[Item]:
    """A folder behind a URL: its objects (and, with --recursive, those below), by name; the
    output folder left out when it lies inside."""
    out = str(opts.output_dir).rstrip("/") + "/"
    try:
        listing = list(root.files(opts.recursive))
    except OSError as exc:
        raise DistgrayError(f"{root}: cannot list: {exc}") from exc
    found = [
        entry
        for entry, is_dir in listing
        if wanted_name(entry.name, opts)
        and not (str(entry) + "/").startswith(out)
        and not (is_dir and not opts.recursive)
    ]
    return [Item(e, str(e.relative_to(root)), e.relative_to(root)) for e in found]


def wanted_name(name: str, opts: BatchOptions) -> bool:
    """Whether a file called ``name`` in the input folder is one of the batch's inputs."""
    if opts.pattern:
        return fnmatch.fnmatch(name.lower(), opts.pattern.lower())
    return Path(name).suffix.lower() in formats.IMAGE_SUFFIXES


def share_of(name: str, count: int) -> int:
    """Which of ``count`` indexed tasks converts the input called ``name`` (its path inside
    ``--input-dir``, or as given with ``--image``): a hash of the name, so the split is the same
    on every machine, in every listing order, and each input is in exactly one share."""
    digest = hashlib.sha256(name.replace(os.sep, "/").encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def plan(items: list[Item], opts: BatchOptions) -> None:
    """Name every output; keep this task's share of the items (indexed tasks: ``items`` is cut
    down in place, after naming, so outputs are named alike in every task); mark same-file and
    unreadable inputs failed; completed outputs skipped."""
    name_outputs(items, opts)
    if opts.task_count > 1:
        items[:] = [i for i in items if share_of(i.name, opts.task_count) == opts.task_index]
    check(items, opts)


def name_outputs(items: list[Item], opts: BatchOptions) -> None:
    """Each item's output path, by the whole listing (the same names whatever its order)."""
    taken: set[Place] = set()
    for item in sorted(items, key=lambda i: i.name):  # named in one order, whatever the listing's
        parent = opts.output_dir / (item.rel.parent if item.rel is not None else Path())
        ext = formats.EXTENSIONS.get(opts.format.upper(), "") if opts.format else item.source.suffix.lower()
        output = parent / formats.gray_name(item.source.stem, ext)
        if output in taken:  # a.jpg and a.png asked to become the same file
            output = parent / formats.gray_name(item.source.stem, ext, f"-{item.source.suffix.lstrip('.').lower()}")
        taken.add(output)
        item.output = output


def check(items: list[Item], opts: BatchOptions) -> None:
    """Read each named item's header (bad inputs fail here, with the reason); mark those whose
    output a job log shows made from the input as it is now skipped. Behind a URL, several
    headers are read at once (each is a round trip to the store)."""
    known = provenance.index(provenance.logs_in(opts.output_dir))
    remote = any(isinstance(i.source, Remote) or isinstance(i.output, Remote) for i in items)
    if remote and len(items) > 1:
        with ThreadPoolExecutor(max_workers=REMOTE_CHECKS, thread_name_prefix="distgray-check") as pool:
            list(pool.map(lambda item: _check_one(item, opts, known), items))
    else:
        for item in items:
            _check_one(item, opts, known)


def _check_one(item: Item, opts: BatchOptions, known: dict[str, dict[str, Any]]) -> None:
    assert item.output is not None
    output = item.output
    try:
        item.format = load.output_format(Path(output.name), opts.format)
    except ValueError as exc:
        _fail(item, str(exc))
        return
    if places.same_place(item.source, output):
        _fail(item, f"the output {output} would overwrite the input")
        return
    try:
        _, item.width, item.height = probe_file(item.source, opts.max_pixels)
    except ImageError as exc:
        _fail(item, str(exc).removeprefix(f"{item.source}: "))
        return
    if isinstance(output, Path):
        save.remove_stale_parts(output)  # (an upload is whole or absent: no parts to remove)
    item.options = output_options(item.format, opts.quality, opts.png_level, opts.ops)
    with contextlib.suppress(OSError):
        item.before = provenance.fingerprint(item.source, with_hash=False)
    if not opts.overwrite and provenance.up_to_date(known, item.source, output, item.options):
        item.status, item.reason = (
            "skipped",
            "up to date: made from this input with these options (--overwrite redoes it)",
        )
    elif str(output) in known or (isinstance(output, Path) and output.exists()):
        log.info(
            "%s: existing output %s is not from this input with these options: converting again", item.name, output
        )


def convert_place(service: Service, source: Place, output: Place, fmt: str, name: str, quiet: bool = False) -> JobEntry:
    """Convert one image through the strip path, either end behind a URL if need be, and return
    its entry. A TIFF of RGB strips or tiles behind a URL is read straight from its store, a band
    at a time by ranged reads; any other image there is first copied to a local temporary file
    in chunks (disk, not memory: the PNG band reader needs the list of all its chunks before the
    first row, as an eXIf chunk after the pixels turns the image, and behind a URL that list
    costs a request a chunk). An output behind a URL is written to a local temporary file, then
    uploaded whole (a multipart upload completes only when all of it is there)."""
    with tempfile.TemporaryDirectory(prefix="distgray-stage-") as tmp:
        local_in: Place = source
        if isinstance(source, Remote):
            copy = tiffbands.probe(source) is None
            log.info(
                "%s: %s",
                source,
                "copied to a local file first" if copy else "read from its store in bands (ranged reads)",
            )
            if copy:
                local_in = Path(tmp) / f"in{source.suffix}"
                try:
                    source.download(local_in)
                except OSError as exc:
                    raise ImageError(f"{source}: cannot read: {exc}") from exc
        local_out = Path(tmp) / f"out{output.suffix}" if isinstance(output, Remote) else output
        entry = service.enqueue(local_in, local_out, fmt, name=name)
        service.process(entry, quiet=quiet)
        if isinstance(output, Remote):
            try:
                output.upload_atomic(local_out)
            except OSError as exc:
                raise ImageError(f"{output}: cannot write: {exc}") from exc
    return entry


def _fail(item: Item, reason: str) -> None:
    item.status, item.reason = "failed", reason


def output_options(fmt: str, quality: int | None, png_level: int, ops: str = "") -> dict[str, Any]:
    """The options that shape an output's bytes, as its job-log record keeps them (an operation
    chain only when there is one, so gray-only records stay as they were)."""
    found = {"format": fmt, "quality": quality, "png_level": png_level, "distgray": __version__}
    return {**found, "ops": ops} if ops else found


# ---------------------------------------------------------------------------------- running
class Batch:
    """Runs a planned batch on the service's engine; the caller owns both.

    ``say``: the summary lines for the person at the terminal (the command line prints them)."""

    def __init__(
        self, service: Service, items: list[Item], opts: BatchOptions, say: Callable[[str], None] = silent
    ) -> None:
        self.service, self.items, self.opts, self.say = service, items, opts, say
        self.engine: Engine = service.engine
        self.log_path = opts.output_dir / opts.log_name
        self._logged: set[int] = set()
        self._log_lines: list[str] = []  # a job log behind a URL: its new lines, until written
        self._units: dict[int, Item] = {}
        self.big: list[Item] = []

    def run(self, worker_command: str) -> int:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        t0 = time.monotonic()
        units: list[FileUnit] = []
        for item in self.items:
            if item.status != "pending":
                continue
            assert item.output is not None
            if isinstance(item.source, Path) and isinstance(item.output, Path):
                item.entry = self.service.enqueue(
                    item.source, item.output, item.format, name=item.name, ops=self.opts.ops
                )
            if item.pixels <= self.opts.whole_file_max_pixels:
                item.unit = "file"
                size = places.size_of(item.source) or 0
                quality = self.opts.quality or 0
                unit = FileUnit(len(units), item.source, item.output, item.format, item.width, item.height, size)
                unit.quality, unit.png_level = quality, self.opts.png_level
                units.append(unit)
                self._units[unit.id] = item
            else:
                item.unit = "strips"
                self.big.append(item)
        queue = FileQueue(1, units, self.opts.max_pixels, ops=self.opts.ops)
        if units:
            self.engine.submit_files(queue)
        strips = threading.Thread(target=self._run_big, name="distgray-batch-strips", daemon=True)
        strips.start()
        total_mp = sum(i.pixels for i in self.items if i.status == "pending") / 1e6
        waiting, seen_workers = False, False
        with (
            logging_redirect_tqdm(),
            tqdm(total=round(total_mp, 1), unit="MP", desc="batch", disable=None, leave=False) as bar,
        ):
            while True:
                finished = self._collect(queue)
                done_mp = sum(i.pixels for i in self.items if i.status != "pending" and i.unit) / 1e6
                bar.set_postfix_str(f"{finished}/{len(self.items)} files")
                bar.update(round(done_mp, 1) - bar.n)
                if finished == len(self.items):
                    break
                none_left = not self.engine.live_workers()
                if none_left and not waiting:  # once per episode; before any joined, once at info
                    say = log.warning if seen_workers else log.info
                    say("no workers connected: the batch waits. Start one with:\n    %s", worker_command)
                waiting, seen_workers = none_left, seen_workers or not none_left
                self.engine.wait_for_change(0.1)
        strips.join()
        self._flush_log()
        return self._summary(time.monotonic() - t0)

    def _run_big(self) -> None:
        for item in self.big:  # the main thread logs an item once its status is final: set it last
            started = time.monotonic()
            try:
                if item.entry is None:  # behind a URL
                    assert item.output is not None
                    entry = convert_place(self.service, item.source, item.output, item.format, item.name, quiet=True)
                else:
                    entry = item.entry
                    self.service.process(entry, quiet=True)
                item.worker = ",".join(entry.job.worker_ids) if entry.job else ""
                item.seconds, item.status = time.monotonic() - started, "converted"
            except DistgrayError as exc:
                item.seconds = time.monotonic() - started
                _fail(item, str(exc).removeprefix(f"{item.source}: "))
            except Exception as exc:  # one file's bug must not stop the batch
                item.seconds = time.monotonic() - started
                _fail(item, f"internal error: {type(exc).__name__}: {exc}")

    def _collect(self, queue: FileQueue) -> int:
        """Move finished units' results onto their items; log each file once. Returns how many are final."""
        states = self.engine.file_states() if queue.units else {}
        for uid, (state, worker, error, took) in states.items():
            item = self._units[uid]
            if item.entry is not None and state is UnitState.RUNNING:
                item.entry.state = JobState.RUNNING
            if state is UnitState.DONE and item.status == "pending":
                item.worker, item.seconds, item.status = worker or "", took or 0.0, "converted"
            elif state is UnitState.FAILED and item.status == "pending":
                _fail(item, (error or "failed").removeprefix(f"{item.source}: "))
            if state in (UnitState.DONE, UnitState.FAILED) and item.status != "pending":
                item.seconds = took or 0.0  # sent to the worker -> written (its last attempt)
                self._finish_entry(item)
        for item in self.items:
            if item.status != "pending":
                self._record(item)
        return sum(1 for i in self.items if i.status != "pending")

    def _finish_entry(self, item: Item) -> None:
        if item.entry is not None and item.unit == "file" and not item.entry.finished:
            item.entry.state = JobState.DONE if item.status == "converted" else JobState.FAILED
            item.entry.error = item.reason or None
            item.entry.width, item.entry.height = item.width, item.height
            item.entry.finished_at = time.time()

    def _record(self, item: Item) -> None:
        """One JSON line per file in the output folder, and one log line, once."""
        if id(item) in self._logged:
            return
        self._logged.add(id(item))
        made: dict[str, Any] = {}
        size = None
        if item.status == "converted" and item.output is not None:
            made = provenance.converted(item.source, item.output, item.before, item.options)
            size = int(made["output_state"][0]) if made else places.size_of(item.output)
        record: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "input": str(item.source),
            "output": str(item.output) if item.output else None,
            "status": item.status,
            "error": item.reason if item.status == "failed" else None,
            "note": item.reason if item.status == "skipped" else None,
            "unit": item.unit or None,
            "width": item.width or None,
            "height": item.height or None,
            "bytes_in": places.size_of(item.source),
            "bytes_out": size,
            "worker": item.worker or None,
            "seconds": round(item.seconds, 3) if item.unit else None,
            **made,
        }
        if isinstance(self.log_path, Remote):  # an object store cannot append: written whole at the end
            self._log_lines.append(json.dumps(record) + "\n")
        else:
            provenance.record(self.log_path, record)
        if item.status == "failed":
            log.warning("%s: failed: %s", item.name, item.reason)
        else:
            log.info("%s: %s%s", item.name, item.status, f" -> {item.output} ({item.worker})" if item.unit else "")

    def _flush_log(self) -> None:
        """The new records of a job log behind a URL, added to it (read, added to, written back whole)."""
        if not self._log_lines or not isinstance(self.log_path, Remote):
            return
        try:
            self.log_path.append_lines(self._log_lines)
            self._log_lines = []
        except OSError as exc:
            log.error("%s: cannot write the job log: %s", self.log_path, exc)

    def _summary(self, seconds: float) -> int:
        counts = {s: sum(1 for i in self.items if i.status == s) for s in ("converted", "skipped", "failed")}
        mp = sum(i.pixels for i in self.items if i.status == "converted") / 1e6
        rate = f", {mp / seconds:.1f} MP/s" if seconds > 0 and mp else ""
        if self.opts.task_count > 1:
            self.say(f"task       {self.opts.task_index} of {self.opts.task_count} (0-based): its share of the inputs")
        self.say(
            f"batch      {len(self.items)} files: {counts['converted']} converted, {counts['skipped']} skipped,"
            f" {counts['failed']} failed ({mp:.1f} MP in {seconds:.2f} s{rate})"
        )
        self.say(f"log        {self.log_path}")
        for item in self.items:
            if item.status == "failed":
                self.say(f"failed     {item.name}: {item.reason}")
        return 1 if counts["failed"] else 0


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
