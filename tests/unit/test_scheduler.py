"""The pure scheduler with a fake clock: tiling, speeds, tail shrinking, requeue, speculation, retries."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distgray.scheduling.strips import Policy, Scheduler, StripState, plan_strips

ROW_BYTES = 7680 * 3
POLICY = Policy(target_strip_s=0.25, min_strip_bytes=8 * ROW_BYTES, initial_strip_bytes=64 * ROW_BYTES)


@given(st.integers(1, 10_000), st.integers(1, 50_000), st.one_of(st.none(), st.integers(1, 5000)))
def test_plans_tile_every_row_exactly_once(height: int, row_bytes: int, strip_rows: int | None) -> None:
    ranges = plan_strips(height, row_bytes, strip_rows=strip_rows, target_bytes=1 << 16)
    assert ranges[0][0] == 0 and ranges[-1][1] == height
    assert all(a < b for a, b in ranges)
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(ranges))


def test_plan_sizes_strips_by_bytes() -> None:
    assert plan_strips(4320, 7680 * 3, target_bytes=4 << 20)[0] == (0, 182)
    assert plan_strips(5, 10, strip_rows=1) == [(i, i + 1) for i in range(5)]
    with pytest.raises(ValueError):
        plan_strips(0, 10)


# ---------------------------------------------------------------- a simulated cluster, fake clock
@dataclass
class Sim:
    """Workers of given speeds (rows/s) pulling from a scheduler; events ordered by a fake clock."""

    speeds: dict[str, float]
    height: int = 4320
    policy: Policy = POLICY
    dies: dict[str, float] = field(default_factory=dict)  # worker -> time it vanishes
    sched: Scheduler = field(init=False)
    given: list[tuple[str, int]] = field(default_factory=list)  # (worker, strip) in hand-out order
    done_at: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sched = Scheduler(self.height, ROW_BYTES, self.policy)

    def live(self, now: float) -> list[str]:
        return [w for w in self.speeds if self.dies.get(w, float("inf")) > now]

    def run(self) -> float:
        events: list[tuple[float, int, str, int]] = []
        seq = itertools.count()
        idle: set[str] = set()

        def pull(w: str, now: float) -> None:
            strip = self.sched.next_strip(w, now, self.live(now))
            if strip is None:
                idle.add(w)
                return
            self.given.append((w, strip.id))
            self.sizes.setdefault(w, []).append(strip.rows)
            heapq.heappush(events, (now + strip.rows / self.speeds[w], next(seq), w, strip.id))

        for w in self.speeds:
            pull(w, 0.0)
        for w, t in self.dies.items():
            heapq.heappush(events, (t, next(seq), w, -1))
        now = 0.0
        while not self.sched.finished:
            assert events, "stalled: strips left but no events"
            now, _, w, sid = heapq.heappop(events)
            if w not in self.live(now) and sid >= 0:
                continue  # a dead worker's result never arrives
            if sid == -1:
                self.sched.worker_lost(w, now, "vanished")
                idle.discard(w)
            else:
                strip = self.sched.strips[sid]
                self.sched.complete(sid, w, now)
                self.sched.observe(w, strip.rows, strip.rows / self.speeds[w])
                self.done_at[w] = now
                pull(w, now)
            for other in sorted(idle & set(self.live(now))):  # anyone idle may now have work
                idle.discard(other)
                pull(other, now)
            if not events and not self.sched.finished:
                # idle workers re-poll, as the master's writers do (speculation needs time to pass)
                for other in self.live(now):
                    heapq.heappush(events, (now + 0.05, next(seq), other, -2))
            while events and events[0][3] == -2:
                t, _, other, _ = heapq.heappop(events)
                now = t
                if other in idle:
                    idle.discard(other)
                    pull(other, now)
        return now


def _counted_rows(sched: Scheduler) -> list[int]:
    hits = [0] * sched.height
    for s in sched.strips:
        if s.state is StripState.DONE:
            for y in range(s.row_start, s.row_stop):
                hits[y] += 1
    return hits


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(500, 50_000), min_size=1, max_size=6),
    st.integers(1, 9000),
    st.lists(st.floats(0.0, 2.0), max_size=3),
)
def test_random_clusters_tile_every_row_once_and_never_repeat_a_worker(
    speeds: list[float], height: int, deaths: list[float]
) -> None:
    names = [f"w{i}" for i in range(len(speeds))]
    dies = {names[i]: t for i, t in enumerate(deaths[: len(names) - 1])}  # at least one survives
    sim = Sim(dict(zip(names, speeds, strict=True)), height=height, dies=dies)
    sim.run()
    assert sim.sched.failure is None
    assert _counted_rows(sim.sched) == [1] * height, "every row exactly once in the final output"
    assert len(sim.given) == len(set(sim.given)), "a strip is never handed to the same worker twice"
    starts = sorted((s.row_start, s.row_stop) for s in sim.sched.strips)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(starts)) and starts[-1][1] == height


def test_rows_follow_speed_and_everyone_finishes_together() -> None:
    sim = Sim({"fast": 40_000.0, "mid": 20_000.0, "slow": 5_000.0}, height=43_200)
    makespan = sim.run()
    rows = {w: sum(r for r in sizes) for w, sizes in sim.sizes.items()}
    assert rows["fast"] > rows["mid"] > rows["slow"]
    assert 1.6 < rows["fast"] / rows["mid"] < 2.4  # roughly the 2:1 speed ratio
    ideal = 43_200 / 65_000.0
    assert makespan <= ideal * 1.10, (makespan, ideal)
    assert max(sim.done_at.values()) - min(sim.done_at.values()) <= 0.1 * makespan


def test_strips_shrink_towards_the_end() -> None:
    sim = Sim({"a": 10_000.0, "b": 10_000.0}, height=20_000)
    sim.run()
    for sizes in sim.sizes.values():
        assert sizes[-1] < max(sizes) / 2, sizes
        assert min(sizes) >= POLICY.min_strip_bytes // ROW_BYTES or sizes[-1] == min(sizes)


def test_first_strip_uses_the_initial_size_then_the_measured_speed() -> None:
    s = Scheduler(100_000, ROW_BYTES, POLICY)
    first = s.next_strip("a", 0.0, ["a"])
    assert first is not None and first.rows == 64
    s.complete(first.id, "a", 0.01)
    s.observe("a", first.rows, 0.01)  # 6400 rows/s
    second = s.next_strip("a", 0.01, ["a"])
    assert second is not None and second.rows == 1600  # 0.25 s at 6400 rows/s


def test_lost_worker_strips_are_requeued_first_and_not_back_to_it() -> None:
    s = Scheduler(10, 1, strip_rows=2)
    got = [s.next_strip("a", 0.0), s.next_strip("a", 0.0)]
    assert [g.id for g in got if g] == [0, 1]
    assert s.worker_lost("a", 1.0, "disconnected") == [0, 1]
    assert sorted(r["strip"] for r in s.requeued) == [0, 1]
    assert s.strips[0].state is StripState.PENDING
    nxt = s.next_strip("a", 1.0)  # were it to come back under the same id: new work only
    assert nxt is not None and nxt.id == 2
    redo = [s.next_strip("b", 1.0), s.next_strip("b", 1.0)]
    assert [r.id for r in redo if r] == [0, 1]


def test_straggler_gets_a_backup_and_first_result_wins() -> None:
    s = Scheduler(100, ROW_BYTES, strip_rows=100)
    s.observe("slow", 100, 1.0)  # 100 rows/s: the strip should take 1 s
    strip = s.next_strip("slow", 0.0, ["slow", "idle"])
    assert strip is not None and strip.rows == 100 and s.rows_unassigned == 0
    assert s.next_strip("idle", 2.0, ["slow", "idle"]) is None, "not overdue yet (4x expected)"
    backup = s.next_strip("idle", 4.5, ["slow", "idle"])
    assert backup is strip and set(strip.running_on) == {"slow", "idle"}
    assert s.backups == [{"strip": 0, "worker": "idle", "of": "slow", "at": 4.5}]
    assert s.next_strip("idle", 9.0, ["slow", "idle"]) is None, "one backup per strip"
    assert s.complete(0, "idle", 5.0) is True
    assert s.complete(0, "slow", 6.0) is False
    assert s.finished and s.strips[0].done_by == "idle"


def test_lost_original_with_running_backup_is_not_requeued() -> None:
    s = Scheduler(10, 1, strip_rows=10)
    s.observe("a", 10, 1.0)
    assert s.next_strip("a", 0.0) is not None
    assert s.next_strip("b", 5.0) is not None  # backup
    s.worker_lost("a", 6.0, "gone")
    assert s.strips[0].state is StripState.RUNNING and list(s.strips[0].running_on) == ["b"]
    assert s.complete(0, "b", 7.0) and s.finished


def test_speculation_waits_at_least_the_minimum() -> None:
    s = Scheduler(10, 1, Policy(speculate_min_s=1.0, min_strip_bytes=1, initial_strip_bytes=10), strip_rows=10)
    s.observe("a", 10, 0.001)  # expected 1 ms
    assert s.next_strip("a", 0.0) is not None
    assert s.next_strip("b", 0.5) is None, "young strips are left alone, however fast the estimate"
    assert s.next_strip("b", 1.5) is not None


def test_bounded_retries_fail_the_job_with_a_reason() -> None:
    s = Scheduler(4, 1, Policy(max_attempts=3), strip_rows=4)
    for worker in ("a", "b", "c"):
        strip = s.next_strip(worker, 0.0)
        assert strip is not None and strip.id == 0
        s.attempt_failed(0, worker, 1.0, "garbage result")
    assert s.finished and s.failure is not None
    assert "failed on 3 workers (a, b, c)" in s.failure and "garbage result" in s.failure
    assert s.next_strip("d", 2.0) is None


def test_strip_failed_by_only_worker_waits_for_another() -> None:
    s = Scheduler(2, 1, strip_rows=2)
    assert s.next_strip("a", 0.0) is not None
    s.attempt_failed(0, "a", 0.0, "bad")
    assert s.next_strip("a", 0.0) is None and not s.finished
    assert s.next_strip("b", 0.0) is not None


def test_attempt_failed_for_an_unassigned_worker_is_ignored() -> None:
    s = Scheduler(2, 1, strip_rows=1)
    s.attempt_failed(0, "ghost", 0.0, "late")
    assert s.requeued == [] and s.strips[0].state is StripState.PENDING


def test_no_sliver_is_left_behind() -> None:
    s = Scheduler(70, ROW_BYTES, Policy(target_strip_s=0.25, tail_factor=1.0, min_strip_bytes=8 * ROW_BYTES))
    s.observe("a", 256, 1.0)  # 0.25 s is 64 rows, which would leave a sliver of 6 < 8
    strip = s.next_strip("a", 0.0, ["a"])
    assert strip is not None and strip.rows == 70


def test_a_slow_worker_holding_its_share_waits() -> None:
    s = Scheduler(10_000, ROW_BYTES, POLICY)
    s.observe("fast", 10_000, 1.0)
    s.observe("slow", 1_000, 1.0)
    first = s.next_strip("slow", 0.0, ["fast", "slow"])
    assert first is not None
    # the slow worker now holds about its share of the finishing time: nothing more for now
    while (more := s.next_strip("slow", 0.0, ["fast", "slow"])) is not None:
        assert more.rows >= 8
    held = sum(x.rows for x in s.strips if "slow" in x.running_on)
    assert held <= 10_000 * 1_000 / 11_000 + 8
    assert s.next_strip("fast", 0.0, ["fast", "slow"]) is not None


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        Policy(max_attempts=0)
    with pytest.raises(ValueError):
        Policy(min_strip_bytes=10, initial_strip_bytes=5)


def test_rows_still_decoding_are_not_handed_out() -> None:
    """A streamed image: only rows already decoded go out, and never a sliver of them."""
    s = Scheduler(1000, 3000, Policy(min_strip_bytes=30_000))  # min strip: 10 rows
    s.rows_ready = 0
    assert s.next_strip("a", 0.0, ["a", "b"]) is None
    s.set_rows_ready(5)  # less than a minimum strip
    assert s.next_strip("a", 0.0, ["a", "b"]) is None
    s.set_rows_ready(300)
    strip = s.next_strip("a", 0.0, ["a", "b"])
    assert strip is not None and strip.row_start == 0 and strip.row_stop <= 300
    s.set_rows_ready(200)  # never goes back
    assert s.rows_ready == 300
    s.set_rows_ready(10**6)  # nor past the image
    assert s.rows_ready == 1000
    s.complete(strip.id, "a", 1.0)
    rows = [(strip.row_start, strip.row_stop)]
    while (nxt := s.next_strip("a", 1.0, ["a"])) is not None:
        rows.append((nxt.row_start, nxt.row_stop))
        s.complete(nxt.id, "a", 2.0)
    assert rows[-1][1] == 1000 and all(a[1] == b[0] for a, b in itertools.pairwise(rows))
    assert s.finished


def test_planned_strips_wait_for_their_rows() -> None:
    s = Scheduler(100, 30, strip_rows=10)
    s.rows_ready = 25
    got = [s.next_strip("a", 0.0, ["a"]) for _ in range(3)]
    assert [(g.row_start, g.row_stop) for g in got if g is not None] == [(0, 10), (10, 20)]
    assert got[2] is None
    s.set_rows_ready(30)
    later = s.next_strip("a", 0.0, ["a"])
    assert later is not None and (later.row_start, later.row_stop) == (20, 30)
