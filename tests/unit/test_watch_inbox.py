"""The watch's waiting room, on a clock of its own: whole by event, or by settling."""

from __future__ import annotations

from pathlib import Path

from distgray.jobs.watch import Inbox

A, B = Path("in/a.png"), Path("in/b.png")


def test_a_file_found_by_listing_is_ready_once_unchanged_for_the_settle_time() -> None:
    inbox = Inbox(settle=2.0)
    inbox.seen(A, (100, 1), now=0.0)
    assert inbox.ready(1.9) == []
    inbox.seen(A, (200, 2), now=1.5)  # still growing: the clock starts again
    assert inbox.ready(3.0) == []
    assert inbox.ready(3.5) == [A]


def test_a_close_or_move_event_makes_it_ready_at_once_and_old_files_need_no_wait() -> None:
    inbox = Inbox(settle=2.0)
    inbox.seen(A, (100, 1), now=0.0, closed=True)
    inbox.seen(B, (100, 1), now=0.0, age=60.0)  # last changed a minute ago (its mtime)
    assert inbox.ready(0.0) == [A, B]


def test_done_files_are_not_taken_again_until_they_change_and_gone_ones_are_forgotten() -> None:
    inbox = Inbox(settle=0.0)
    inbox.seen(A, (100, 1), now=0.0)
    inbox.taken(A, (100, 1))
    inbox.seen(A, (100, 1), now=5.0, closed=True)  # the same file: an event of our own reading, say
    assert inbox.ready(5.0) == []
    inbox.seen(A, (150, 9), now=6.0)  # rewritten
    assert inbox.ready(6.0) == [A]
    inbox.seen(A, None, now=7.0)  # deleted before it was converted
    assert inbox.ready(7.0) == [] and (len(inbox.waiting), len(inbox.done)) == (0, 1)
