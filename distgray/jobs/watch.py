"""Watch mode (``--watch``): keep converting what arrives in ``--input-dir``, each image once, only
once it is whole.

When is a file whole? The folder is watched with watchdog (inotify on Linux): a file closed after
writing, or moved in, is ready at once. Events can be missed (a network filesystem, a burst that
overflows the kernel's queue, a writer that keeps the file open), so the folder is also listed
every ``interval`` seconds: a file that has not changed (size and mtime) for ``settle`` seconds
is ready too. A ready file is converted unless it was converted (or failed) as it is now: the
job log says what earlier runs made (so a restart repeats nothing, and misses nothing: every file
not in the log as it is now is converted), and this run remembers what it has done. A file that
changes afterwards is converted again.

:class:`Inbox` owns the waiting room (pure bookkeeping, given a clock and what the listing sees);
:class:`Watch` runs it: events in, listings, and :class:`~distgray.jobs.batch.Batch` runs of
the ready files, one after another.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import Any

from distgray.jobs.batch import Batch, BatchOptions, Item, check, discover, name_outputs, share_of, wanted_name
from distgray.jobs.report import silent
from distgray.jobs.service import Service
from distgray.storage import places
from distgray.storage.places import Place
from distgray.storage.remote import Remote

log = logging.getLogger(__name__)

#: Finished files the page lists at most (the latest).
INBOX_SHOWN = 50

#: A file is the same file while its size and modification time (ns) stay the same (behind a
#: URL: its size and the store's content tag, its ETag).
Stamp = tuple[int, int | str]


def stamp_of(path: Place) -> Stamp | None:
    """:func:`~distgray.storage.places.version`, or None for a file gone (or unreadable)."""
    try:
        return places.version(path)
    except OSError:
        return None


@dataclass
class Waiting:
    stamp: Stamp | None
    since: float  # when it was last seen to change
    closed: bool = False  # a close-after-write or a move-in event said it is whole


class Inbox:
    """Which files are waiting, which are ready, which are done (as they are now).

    ``settle``: seconds a file must stay unchanged, seen by listings, to count as whole without
    an event. Not thread-safe: :class:`Watch` calls it under its lock."""

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self.waiting: dict[Place, Waiting] = {}
        self.done: dict[Place, Stamp] = {}  # converted or failed as it was then

    def seen(self, path: Place, stamp: Stamp | None, now: float, closed: bool = False, age: float = 0.0) -> None:
        """``path`` is in the folder with ``stamp`` (None: it is gone), from a listing or, when
        ``closed``, an event saying it is whole. ``age``: seconds since it last changed, by its
        mtime (a file older than ``settle`` at its first listing is ready at once)."""
        if stamp is None:
            self.waiting.pop(path, None)
            return
        if self.done.get(path) == stamp:
            return  # already converted (or failed) as it is now
        entry = self.waiting.get(path)
        if entry is None or entry.stamp != stamp:
            self.waiting[path] = Waiting(stamp, now - max(0.0, age), closed)
        elif closed:
            entry.closed = True

    def ready(self, now: float) -> list[Place]:
        """Files to convert now: whole by an event, or unchanged for ``settle`` seconds."""
        return sorted((p for p, w in self.waiting.items() if w.closed or now - w.since >= self.settle), key=str)

    def taken(self, path: Place, stamp: Stamp | None) -> None:
        """``path`` as it was (``stamp``) has been converted, skipped or failed."""
        self.waiting.pop(path, None)
        if stamp is not None:
            self.done[path] = stamp


@dataclass(frozen=True)
class WatchOptions:
    interval: float = 5.0  # seconds between listings of the folder
    settle: float = 2.0  # seconds unchanged before a file found by a listing counts as whole


class Watch:
    """Converts what arrives in ``opts.input_dir`` until ``stop`` is set. ``say``: summary lines."""

    def __init__(
        self,
        service: Service,
        opts: BatchOptions,
        watch: WatchOptions,
        say: Callable[[str], None] = silent,
    ) -> None:
        assert opts.input_dir is not None
        self.service, self.opts, self.watch, self.say = service, opts, watch, say
        self.root = opts.input_dir
        self.inbox = Inbox(watch.settle)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.finished: Counter[str] = Counter()  # "done" and "failed", this run
        # What the page shows of each file (by its name in the folder): converting, done, failed
        # (waiting comes from the inbox), the latest last; at most INBOX_SHOWN finished ones kept.
        self.shown: dict[str, tuple[str, str]] = {}
        service.inbox = self.snapshot

    # ------------------------------------------------------------------ events
    def _event(self, path: str, closed: bool) -> None:
        p = Path(path)
        if not self._wanted(p):
            return
        with self._lock:
            self.inbox.seen(p, stamp_of(p), time.monotonic(), closed)
        self._wake.set()

    @property
    def failed_any(self) -> bool:
        return self.finished["failed"] > 0

    @property
    def converted(self) -> int:
        return self.finished["done"]

    def _relative(self, path: Place) -> PurePath | None:
        """``path`` inside the watched folder, or None when it is not in it."""
        try:
            if isinstance(path, Remote):
                return path.relative_to(self.root) if isinstance(self.root, Remote) else None
            return path.relative_to(str(self.root))
        except ValueError:
            return None

    def _wanted(self, path: Place) -> bool:
        """An input of this watch: in the folder (or, with --recursive, below it), not in the
        output folder, named as the batch's inputs are, in this task's share."""
        rel = self._relative(path)
        if rel is None:
            return False
        if not self.opts.recursive and len(rel.parts) != 1:
            return False
        if isinstance(path, Remote) or isinstance(self.opts.output_dir, Remote):
            if str(path).startswith(str(self.opts.output_dir).rstrip("/") + "/"):
                return False
        else:
            out = self.opts.output_dir.resolve()
            if out == path.resolve().parent or out in path.resolve().parents:
                return False
        if self.opts.task_count > 1 and share_of(str(rel), self.opts.task_count) != self.opts.task_index:
            return False
        return wanted_name(path.name, self.opts)

    def _observer(self) -> Any:
        """A watchdog observer of the folder, or None when watchdog cannot watch it here (or it
        is behind a URL: object stores are listed, and an object listed is whole)."""
        if isinstance(self.root, Remote):
            return None
        try:
            from watchdog.events import FileClosedEvent, FileMovedEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - a core dependency; listings still work
            log.warning("watchdog is not installed: new files are found by listing the folder only")
            return None
        watch = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.is_directory:
                    return
                if isinstance(event, FileMovedEvent):
                    if event.dest_path:  # moved out (no destination): the listing forgets it
                        watch._event(os.fsdecode(event.dest_path), closed=True)
                elif isinstance(event, FileClosedEvent):
                    watch._event(os.fsdecode(event.src_path), closed=True)
                elif event.event_type in ("created", "modified"):
                    watch._event(os.fsdecode(event.src_path), closed=False)

        try:  # on Linux: a file moved in from outside the folder is a move too, not a creation
            from watchdog.observers.inotify import InotifyObserver

            observer: Any = InotifyObserver(generate_full_events=True)
        except ImportError:  # other systems: their own observer
            observer = Observer()
        try:
            observer.schedule(Handler(), str(self.root), recursive=self.opts.recursive)
            observer.start()
        except OSError as exc:  # no inotify watches left, a filesystem without events
            log.warning("cannot watch %s for events (%s): new files are found by listing it", self.root, exc)
            return None
        return observer

    # ------------------------------------------------------------------ the loop
    def _list(self) -> None:
        now, wall = time.monotonic(), time.time()
        present = {item.source for item in discover(replace(self.opts, images=())) if self._wanted(item.source)}
        with self._lock:
            for path in present:
                stamp = stamp_of(path)
                if isinstance(path, Remote):  # an object is visible only once its upload completed
                    self.inbox.seen(path, stamp, now, closed=True)
                    continue
                age = wall - int(stamp[1]) / 1e9 if stamp is not None else 0.0
                self.inbox.seen(path, stamp, now, age=age)
            for gone in [p for p in self.inbox.waiting if p not in present]:
                self.inbox.waiting.pop(gone, None)

    def run(self, stop: threading.Event) -> int:
        """Until ``stop``: 0, or 1 if some file failed."""
        observer = self._observer()
        how = "events and a listing" if observer is not None else "a listing"
        self.say(
            f"watching   {self.root} ({how} every {self.watch.interval:g} s); outputs in {self.opts.output_dir};"
            " Ctrl+C stops"
        )
        next_listing = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_listing:
                    self._list()
                    next_listing = now + self.watch.interval
                with self._lock:
                    ready = self.inbox.ready(time.monotonic())
                if ready:
                    self._convert(ready)
                    continue
                with self._lock:
                    soonest = min(
                        (w.since + self.watch.settle for w in self.inbox.waiting.values()), default=next_listing
                    )
                self._wake.wait(max(0.01, min(next_listing, soonest) - time.monotonic()))
                self._wake.clear()
        finally:
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
        return 1 if self.failed_any else 0

    def _convert(self, ready: list[Place]) -> None:
        """One batch of the ready files, their outputs named as a batch of the whole folder names them."""
        stamps = {p: stamp_of(p) for p in ready}
        listing = discover(replace(self.opts, images=()))
        name_outputs(listing, self.opts)  # collisions (a.jpg, a.png) named as the whole folder's
        chosen = [i for i in listing if i.source in stamps]
        check(chosen, self.opts)  # headers read; what the job log shows made from it as it is: skipped
        new = [i for i in chosen if i.status != "skipped"]
        for item in chosen:
            if item.status == "skipped":
                log.info("%s: already converted as it is now (the job log says so)", item.name)
        for item in new:
            self._show(item.name, "converting")
        if new:
            Batch(self.service, new, self.opts, self._say_file).run("(watch mode: start workers)")
        listed = {i.source for i in chosen}
        with self._lock:
            for item in chosen:
                self.inbox.taken(item.source, stamps.get(item.source))
            for path in ready:  # gone before it could be listed: forget it
                if path not in listed:
                    self.inbox.waiting.pop(path, None)
        for item in new:
            state = "done" if item.status == "converted" else "failed"
            self.finished[state] += 1
            self._show(item.name, state, item.reason)
            self.say(_line(item))

    def _show(self, name: str, state: str, reason: str = "") -> None:
        with self._lock:
            self.shown.pop(name, None)
            self.shown[name] = (state, reason)
            finished = [n for n, (st, _) in self.shown.items() if st in ("done", "failed")]
            for old in finished[: max(0, len(finished) - INBOX_SHOWN)]:
                del self.shown[old]

    def snapshot(self) -> dict[str, Any]:
        """The inbox for the page: the folder, counts by state, and the files (latest first)."""
        with self._lock:
            waiting = [str(self._relative(p) or p) for p in self.inbox.waiting]
            files = [{"name": n, "state": "waiting", "reason": ""} for n in sorted(waiting)]
            files += [{"name": n, "state": st, "reason": why} for n, (st, why) in reversed(self.shown.items())]
        counts = {state: sum(1 for f in files if f["state"] == state) for state in ("waiting", "converting")}
        counts.update(done=self.finished["done"], failed=self.finished["failed"])
        return {"folder": str(self.root), "counts": counts, "files": files[: INBOX_SHOWN + len(waiting)]}

    def _say_file(self, line: str) -> None:
        log.debug("%s", line)  # a batch's own summary: one line per file is said instead


def _line(item: Item) -> str:
    if item.status == "failed":
        return f"failed     {item.name}: {item.reason}"
    return f"{item.status:<10} {item.name} -> {item.output}"
