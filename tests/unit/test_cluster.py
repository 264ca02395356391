"""The cluster's state machine, without sockets or threads: every transition, a fake clock.

Each test drives :class:`distgray.master.cluster.Cluster` the way the master's writer and reader
threads do (``next_step``, ``result_sink``, ``strip_done``, ``file_sink``, ``file_done``, ``drop``)
and checks the books.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distgray.errors import ProtocolError
from distgray.imaging.encoded import Encoding
from distgray.master.books import Job, WorkerState
from distgray.master.cluster import Cluster, ClusterConfig, SendFile, SendHeartbeat, SendStrip, Stop, Wait
from distgray.scheduling.files import FileQueue, FileUnit, UnitState
from distgray.wire import protocol as P

HEARTBEAT_S = 2.0
FILES = (P.CAPABILITY_LUMA_U8, P.CAPABILITY_FILES)


def cluster(**config: object) -> Cluster:
    return Cluster(ClusterConfig(strip_rows=100, **config))  # type: ignore[arg-type]


def pixels(height: int = 1000, width: int = 8) -> np.ndarray:
    return np.zeros((height, width, 3), np.uint8)


def strip_result(step: SendStrip, **changes: int) -> P.Result:
    t = step.task
    fields = {"row_start": t.row_start, "row_stop": t.row_stop, "width": t.width, **changes}
    return P.Result(t.job_id, t.strip_id, fields["row_start"], fields["row_stop"], fields["width"], 1000, 2000)


def take_strip(c: Cluster, wid: str, now: float) -> SendStrip:
    step = c.next_step(wid, now, 0.0, HEARTBEAT_S)
    assert isinstance(step, SendStrip), step
    return step


def deliver(c: Cluster, wid: str, step: SendStrip, now: float) -> None:
    result = strip_result(step)
    assert c.result_sink(wid, result, now) is step.job
    c.strip_done(wid, result, None, now)


def file_queue(tmp_path: Path, n: int = 2) -> FileQueue:
    units = [FileUnit(i, tmp_path / f"in{i}.png", tmp_path / f"out{i}.png", "PNG", 10, 10, 100) for i in range(n)]
    return FileQueue(1, units, max_pixels=10_000)


def file_result(step: SendFile, status: P.FileStatus = P.FileStatus.OK, size: int = 50) -> P.FileResult:
    return P.FileResult(step.queue.id, step.unit.id, size, status, 10, 10, 1000, 1000, 1000)


def test_worker_ids_are_unique_for_the_whole_run() -> None:
    c = cluster()
    assert [c.name_worker("w") for _ in range(3)] == ["w", "w#2", "w#3"]
    long = c.name_worker("é" * 64)  # 128 bytes: room is made for "#n" within the limit
    assert c.name_worker("é" * 64) != long and len(c.name_worker("é" * 64).encode()) <= 128


def test_a_new_worker_is_idle_and_waits_or_heartbeats_without_work() -> None:
    c = cluster()
    w = c.join("a", "10.0.0.1:1", ())
    assert w is not None and w.state is WorkerState.IDLE
    assert c.next_step("a", 0.0, 0.0, HEARTBEAT_S) == Wait(HEARTBEAT_S)
    assert c.next_step("a", 0.0, HEARTBEAT_S, HEARTBEAT_S) == SendHeartbeat()


def test_strips_go_out_up_to_the_prefetch_then_the_worker_waits() -> None:
    c = cluster(prefetch=2)
    c.join("a", "10.0.0.1:1", ())
    job = c.submit(pixels(), "img", 0.0)
    first, second = take_strip(c, "a", 0.0), take_strip(c, "a", 0.0)
    assert (first.task.row_start, second.task.row_start) == (0, first.task.row_stop)
    assert isinstance(c.next_step("a", 0.0, 0.0, HEARTBEAT_S), Wait)  # prefetch full; the job runs: poll soon
    assert c.workers["a"].state is WorkerState.BUSY and len(c.workers["a"].in_flight) == 2
    assert first.payload is not None and first.payload.nbytes == (first.task.row_stop - first.task.row_start) * 8 * 3
    deliver(c, "a", first, 0.1)
    assert c.workers["a"].state is WorkerState.BUSY  # still holds the second
    deliver(c, "a", second, 0.2)
    assert c.workers["a"].state is WorkerState.IDLE and job.rows_done == second.task.row_stop
    assert c.workers["a"].strips == 2 and job.worker_bytes["a"][1] > 0 and len(job.records) == 2


def test_results_are_checked_against_their_task_before_a_byte_is_read() -> None:
    c = cluster()
    c.join("a", "10.0.0.1:1", ())
    c.join("b", "10.0.0.2:1", ())
    c.submit(pixels(), "img", 0.0)
    step = take_strip(c, "a", 0.0)
    with pytest.raises(ProtocolError, match="does not match task rows"):
        c.result_sink("a", strip_result(step, row_stop=step.task.row_stop - 1), 0.1)
    with pytest.raises(ProtocolError, match="not assigned"):
        c.result_sink("b", strip_result(step), 0.1)  # b was never given that strip
    png = P.PngResult(step.task.job_id, step.task.strip_id, step.task.row_start, step.task.row_stop, 8, 1, 1, 1)
    with pytest.raises(ProtocolError, match="PNG_RESULT for a task that wants RESULT"):
        c.result_sink("a", png, 0.1)
    with pytest.raises(ProtocolError, match="unexpected payload"):
        c.result_sink("a", P.Heartbeat(), 0.1)


def test_a_dropped_worker_has_its_strips_requeued_and_the_first_copy_wins() -> None:
    c = cluster()
    c.join("a", "10.0.0.1:1", ())
    c.join("b", "10.0.0.2:1", ())
    job = c.submit(pixels(200), "img", 0.0)
    held = take_strip(c, "a", 0.0)
    dropped = c.drop("a", WorkerState.LOST, "silent for 20 s", 1.0)
    assert dropped is not None and dropped.held_strips == [held.task.strip_id] == dropped.requeued_strips
    assert c.workers["a"].state is WorkerState.LOST and c.workers["a"].failures == 1
    assert c.drop("a", WorkerState.GONE, "again", 1.1) is None  # idempotent: the first reason stays
    assert c.workers["a"].reason == "silent for 20 s"
    assert c.next_step("a", 1.2, 0.0, HEARTBEAT_S) == Stop()
    redo = take_strip(c, "b", 1.2)
    assert (redo.task.row_start, redo.task.row_stop) == (held.task.row_start, held.task.row_stop)
    deliver(c, "b", redo, 1.3)
    rest = take_strip(c, "b", 1.3)
    deliver(c, "b", rest, 1.4)
    assert job.done and job.failure is None and job.rows_done == 200


def test_a_worker_holding_a_file_stays_busy_when_its_strip_completes(tmp_path: Path) -> None:
    # The books' one owner: a worker is busy exactly while it holds a strip or a file. (Before the
    # cluster owned every transition, completing a strip marked it idle while it still held a file.)
    c = cluster(prefetch=2)
    c.join("a", "10.0.0.1:1", FILES)
    c.submit(pixels(100), "big", 0.0)
    c.submit_files(file_queue(tmp_path, 1))
    strip = take_strip(c, "a", 0.0)  # strips first: they hold memory
    file = c.next_step("a", 0.0, 0.0, HEARTBEAT_S)
    assert isinstance(file, SendFile) and c.workers["a"].state is WorkerState.BUSY
    deliver(c, "a", strip, 0.5)
    assert c.workers["a"].state is WorkerState.BUSY, "still converting a whole file"
    assert c.snapshot(0.5, {})["workers"][0]["state"] == "busy"  # and the page says so
    result = file_result(file)
    assert c.file_sink("a", result) is file.unit
    c.file_done("a", result, None, 1.0)
    assert c.workers["a"].state is WorkerState.IDLE
    assert c.file_states()[0][:2] == (UnitState.DONE, "a")


def test_files_whose_worker_is_lost_are_requeued_and_bad_results_refused(tmp_path: Path) -> None:
    c = cluster()
    c.join("a", "10.0.0.1:1", FILES)
    c.join("plain", "10.0.0.3:1", ())  # offers no file-gray: never given a file
    c.submit_files(file_queue(tmp_path, 1))
    assert not isinstance(c.next_step("plain", 0.0, 0.0, HEARTBEAT_S), SendFile)
    step = c.next_step("a", 0.0, 0.0, HEARTBEAT_S)
    assert isinstance(step, SendFile)
    with pytest.raises(ProtocolError, match="limit"):
        c.file_sink("a", file_result(step, size=step.unit.max_result_bytes + 1))
    with pytest.raises(ProtocolError, match="not assigned"):
        c.file_sink("plain", file_result(step))
    dropped = c.drop("a", WorkerState.LOST, "cut off", 1.0)
    assert dropped is not None and dropped.requeued_files == 1 and dropped.held_files == [str(step.unit.source)]
    assert c.file_states()[0][0] is UnitState.PENDING
    c.join("b", "10.0.0.2:1", FILES)
    again = c.next_step("b", 1.0, 0.0, HEARTBEAT_S)
    assert isinstance(again, SendFile) and again.unit.id == step.unit.id
    c.file_done("b", file_result(again, P.FileStatus.BAD_INPUT), "not an image", 2.0)
    assert c.file_states()[0][0] is UnitState.FAILED and c.files is not None and c.files.finished


def test_a_file_that_cannot_be_read_fails_and_frees_the_worker(tmp_path: Path) -> None:
    c = cluster()
    c.join("a", "10.0.0.1:1", FILES)
    queue = file_queue(tmp_path, 1)
    c.submit_files(queue)
    step = c.next_step("a", 0.0, 0.0, HEARTBEAT_S)
    assert isinstance(step, SendFile)
    c.file_unreadable("a", queue, step.unit.id, "in0.png: cannot read: Permission denied", 0.1)
    assert c.workers["a"].state is WorkerState.IDLE and c.file_states()[0][0] is UnitState.FAILED


def test_no_strips_while_a_shared_memory_answer_is_awaited() -> None:
    c = cluster(shm_answer_s=2.0)
    c.join("a", "10.0.0.1:1", (P.CAPABILITY_LUMA_U8, P.CAPABILITY_SHM))
    c.submit(pixels(), "img", 0.0)
    c.shm_offered("a", 0.0)
    assert isinstance(c.next_step("a", 1.0, 0.0, HEARTBEAT_S), Wait)
    assert isinstance(c.next_step("a", 2.5, 0.0, HEARTBEAT_S), SendStrip)  # no answer in time: TCP
    c.shm_answered("a", True)
    assert c.workers["a"].shm and c.reads_shared_memory()


def test_strips_of_an_encoded_job_ask_for_what_each_worker_can_encode() -> None:
    c = cluster()
    c.join("png", "10.0.0.1:1", (P.CAPABILITY_LUMA_U8, P.CAPABILITY_PNG))
    c.join("plain", "10.0.0.2:1", ())
    c.submit(pixels(), "img", 0.0, encoding=Encoding("PNG", 6))
    first, second = take_strip(c, "png", 0.0), take_strip(c, "plain", 0.0)
    assert isinstance(first.task, P.PngTask) and not first.task.above  # row 0 has no row above
    assert type(second.task) is P.Task  # the master encodes its rows itself
    later = take_strip(c, "png", 0.0)
    assert isinstance(later.task, P.PngTask) and later.task.above
    assert later.payload is not None and later.payload.nbytes == (later.task.row_stop - later.task.row_start + 1) * 24


def test_a_failed_or_finished_job_lets_the_next_one_in_and_closing_stops_every_writer() -> None:
    c = cluster()
    c.join("a", "10.0.0.1:1", ())
    job = c.submit(pixels(), "img", 0.0)
    with pytest.raises(RuntimeError, match="already running"):
        c.submit(pixels(), "second", 0.0)
    c.fail(job, "cannot decode", 0.5)
    assert job.done and job.failure == "cannot decode"
    assert c.submit(pixels(), "second", 1.0).id == job.id + 1
    assert c.close() == ["a"] and c.join("late", "10.0.0.9:1", ()) is None
    assert c.next_step("a", 1.0, 0.0, HEARTBEAT_S) == Stop()


def test_rows_of_a_streaming_job_go_out_only_once_decoded() -> None:
    c = cluster()
    c.join("a", "10.0.0.1:1", ())
    job = c.submit(pixels(), "img", 0.0, rows_ready=0)
    assert isinstance(c.next_step("a", 0.0, 0.0, HEARTBEAT_S), Wait)
    c.rows_ready(job, 150, 0.1)
    step = take_strip(c, "a", 0.1)
    assert step.task.row_stop <= 150
    c.rows_ready(job, 1000, 0.2)
    assert job.input_ready_at == 0.2


# ---------------------------------------------------------------- departures, losses, quarantine
def join(c: Cluster, wanted: str, now: float = 0.0) -> str:
    wid = c.name_worker(wanted)
    c.join(wid, "10.0.0.9:1", (P.CAPABILITY_LUMA_U8,), now)
    return wid


def test_departures_cost_a_requeue_never_an_attempt() -> None:
    c = cluster()
    job = c.submit(pixels(), "img", 0.0)
    for n in range(10):  # far more than the 3 attempts a strip has
        wid = join(c, f"leaver{n}")
        step = take_strip(c, wid, float(n))
        assert step.task.strip_id == 0
        c.drop(wid, WorkerState.GONE, "left: bye", float(n))
    assert not job.done and job.scheduler.strips[0].failed_on == []


def test_one_worker_lost_again_and_again_counts_once_and_is_quarantined() -> None:
    c = cluster()
    job = c.submit(pixels(), "img", 0.0)
    now = 0.0
    for _ in range(5):
        wid = join(c, "crashy", now)
        assert wid == "crashy"  # the same id coming back is the same worker
        step = c.next_step(wid, now, 0.0, HEARTBEAT_S)
        if isinstance(step, SendStrip):
            c.drop(wid, WorkerState.LOST, "crashed", now)
        else:  # quarantined: no work, only heartbeats and waits, for a while
            assert isinstance(step, Wait | SendHeartbeat)
            c.drop(wid, WorkerState.LOST, "crashed", now)
        now += 1.0
    assert not job.done, job.failure
    assert job.scheduler.strips[0].failed_on == ["crashy"]
    w = c.workers["crashy"]
    assert w.losses == 5 and w.joins == 5 and w.quarantined_until > now
    # Three different workers lost on the same strip: that is a poison strip, and the job fails.
    for name in ("b", "c"):
        wid = join(c, name, now)
        taken = {take_strip(c, wid, now).task.strip_id for _ in range(2)}  # its prefetch: two strips
        assert 0 in taken, taken
        c.drop(wid, WorkerState.LOST, "crashed", now)
    assert job.done and "failed on 3 workers (crashy, b, c)" in str(job.failure)


def test_a_connected_id_is_not_reused_and_a_distrusted_worker_gets_no_work() -> None:
    c = cluster()
    c.submit(pixels(), "img", 0.0)
    first = join(c, "w")
    assert join(c, "w") == "w#2"  # two connected at once: told apart
    c.distrust(first)
    c.drop(first, WorkerState.LOST, "sent a wrong result", 1.0)
    again = join(c, "w", 2.0)
    assert again == "w"
    assert not isinstance(c.next_step(again, 1e9, 0.0, HEARTBEAT_S), SendStrip)  # never again


def _a_backup_copy(c: Cluster) -> tuple[Job, SendStrip, SendStrip]:
    """Worker a holds strip 0 too long; b, done with strip 1, is given a backup copy of it."""
    c.join("a", "10.0.0.1:1", ())
    c.join("b", "10.0.0.2:1", ())
    job = c.submit(pixels(200), "img", 0.0)
    first = take_strip(c, "a", 0.0)
    deliver(c, "b", take_strip(c, "b", 0.0), 0.5)
    backup = take_strip(c, "b", 100.0)  # a is far overdue: b gets a copy of its strip
    assert backup.task.strip_id == first.task.strip_id
    return job, first, backup


def test_two_copies_of_gray_rows_never_land_in_the_output_at_once() -> None:
    """A backup copy arriving while the first copy's rows land goes to scratch: it cannot
    overwrite rows whose check has passed, and it counts neither as the result nor as a failure."""
    c = cluster()
    job, first, backup = _a_backup_copy(c)
    a, b = strip_result(first), strip_result(backup)
    assert c.result_sink("a", a, 101.0) is job  # a's rows land in the output
    assert c.result_sink("b", b, 101.1) is None  # b's go to scratch
    assert c.lands("b", b) is None and c.lands("a", a) is job  # only the lander's rows are checked
    c.strip_done("b", b, None, 101.2)
    assert not job.done and not job.scheduler.requeued  # not used, not failed: a still lands
    c.strip_done("a", a, None, 101.3)
    assert job.done and job.failure is None
    assert job.scheduler.strips[first.task.strip_id].done_by == "a"
    assert c.landing == {}


def test_a_lander_cut_off_leaves_its_strip_to_be_redone() -> None:
    """The landing copy's worker is lost mid-payload (its rows are half written): the copy that
    went to scratch cannot stand in for it, so the strip is done again."""
    c = cluster()
    job, first, backup = _a_backup_copy(c)
    a, b = strip_result(first), strip_result(backup)
    assert c.result_sink("a", a, 101.0) is job
    assert c.result_sink("b", b, 101.1) is None
    c.drop("a", WorkerState.LOST, "cut off mid-frame", 101.2)
    assert c.landing == {}
    c.strip_done("b", b, None, 101.3)  # b's copy was read into scratch: discarded
    assert not job.done
    assert isinstance(c.next_step("b", 101.4, 0.0, HEARTBEAT_S), Wait)  # b tried it already
    c.join("c", "10.0.0.3:1", ())
    again = take_strip(c, "c", 101.5)  # b already tried it: a third worker takes it
    assert again.task.strip_id == first.task.strip_id
    deliver(c, "c", again, 101.6)
    assert job.done and job.failure is None
