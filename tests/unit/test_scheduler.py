"""The pure scheduler: plans tile every row once, requeue, first result wins, bounded retries."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distgray.scheduler import Scheduler, StripState, plan_strips


@given(st.integers(1, 10_000), st.integers(1, 50_000), st.one_of(st.none(), st.integers(1, 5000)))
def test_plans_tile_every_row_exactly_once(height: int, row_bytes: int, strip_rows: int | None) -> None:
    ranges = plan_strips(height, row_bytes, strip_rows=strip_rows, target_bytes=1 << 16)
    assert ranges[0][0] == 0 and ranges[-1][1] == height
    assert all(a < b for a, b in ranges)
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(ranges))


def test_plan_sizes_strips_by_bytes() -> None:
    ranges = plan_strips(4320, 7680 * 3, target_bytes=4 << 20)
    assert ranges[0] == (0, 182)  # 4 MiB / 23040 bytes per row
    assert plan_strips(5, 10, strip_rows=1) == [(i, i + 1) for i in range(5)]
    with pytest.raises(ValueError):
        plan_strips(0, 10)


def test_pull_complete_and_finish() -> None:
    s = Scheduler(plan_strips(10, 1, strip_rows=3))
    a = s.next_strip("a", 0.0)
    b = s.next_strip("b", 0.0)
    assert a is not None and b is not None and (a.id, b.id) == (0, 1)
    assert s.complete(a.id, "a", 1.0)
    assert s.rows_done == 3 and not s.finished
    for sid in (2, 3):
        st_ = s.next_strip("a", 1.0)
        assert st_ is not None and st_.id == sid
        s.complete(sid, "a", 2.0)
    assert s.next_strip("a", 2.0) is None
    assert s.complete(b.id, "b", 3.0)
    assert s.finished and s.rows_done == 10 and s.failure is None


def test_lost_worker_strips_are_requeued_first_and_not_back_to_it() -> None:
    s = Scheduler(plan_strips(10, 1, strip_rows=2))
    got = [s.next_strip("a", 0.0) for _ in range(2)]
    assert [g.id for g in got if g] == [0, 1]
    assert s.worker_lost("a", 1.0, "disconnected") == [0, 1]
    assert sorted(r["strip"] for r in s.requeued) == [0, 1]
    assert s.strips[0].state is StripState.PENDING
    # the lost worker (if it came back under the same id) never gets them again
    nxt = s.next_strip("a", 1.0)
    assert nxt is not None and nxt.id == 2
    redo = [s.next_strip("b", 1.0), s.next_strip("b", 1.0)]
    assert [r.id for r in redo if r] == [0, 1]


def test_first_result_wins_and_late_copy_is_discarded() -> None:
    s = Scheduler(plan_strips(2, 1, strip_rows=2))
    strip = s.next_strip("a", 0.0)
    assert strip is not None
    strip.running_on.add("b")  # a backup copy on b
    assert s.complete(0, "b", 1.0) is True
    assert s.complete(0, "a", 2.0) is False
    assert s.rows_done == 2 and s.strips[0].done_by == "b"


def test_bounded_retries_fail_the_job_with_a_reason() -> None:
    s = Scheduler(plan_strips(4, 1, strip_rows=4), max_attempts=3)
    for worker in ("a", "b", "c"):
        strip = s.next_strip(worker, 0.0)
        assert strip is not None and strip.id == 0
        s.attempt_failed(0, worker, 1.0, "garbage result")
    assert s.finished and s.failure is not None
    assert "failed on 3 workers (a, b, c)" in s.failure and "garbage result" in s.failure
    assert s.next_strip("d", 2.0) is None


def test_strip_failed_by_only_worker_waits_for_another() -> None:
    s = Scheduler(plan_strips(2, 1, strip_rows=2))
    assert s.next_strip("a", 0.0) is not None
    s.attempt_failed(0, "a", 0.0, "bad")
    assert s.next_strip("a", 0.0) is None and not s.finished
    assert s.next_strip("b", 0.0) is not None


def test_attempt_failed_for_an_unassigned_worker_is_ignored() -> None:
    s = Scheduler(plan_strips(2, 1, strip_rows=1))
    s.attempt_failed(0, "ghost", 0.0, "late")
    assert s.requeued == [] and s.strips[0].state is StripState.PENDING
