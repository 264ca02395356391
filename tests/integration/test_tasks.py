"""Indexed tasks: N masters started together (as a Cloud Run job's or a Kubernetes indexed
Job's tasks) over one folder convert every input exactly once, each writing its own job log;
``python -m distgray jobs`` reads them back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import pillow_reference
from tests.integration.conftest import WAIT_S, MasterProcess

pytestmark = pytest.mark.slow


def ten_images(folder: Path) -> list[str]:
    """Ten different small images of three formats and odd sizes."""
    folder.mkdir()
    rng = np.random.default_rng(16)
    names = []
    for i in range(10):
        pixels = rng.integers(0, 256, (37 + 3 * i, 53 + 5 * i, 3), dtype=np.uint8)
        name = f"img{i:02d}.{('png', 'jpg', 'webp')[i % 3]}"
        Image.fromarray(pixels).save(folder / name, **({"lossless": True} if name.endswith("webp") else {}))
        names.append(name)
    return names


def run_tasks(tmp: Path, count: int, env_style: str = "flags") -> list[MasterProcess]:
    masters = []
    for index in range(count):
        flags = ["--task-index", str(index), "--task-count", str(count)] if env_style == "flags" else []
        env = {"CLOUD_RUN_TASK_INDEX": str(index), "CLOUD_RUN_TASK_COUNT": str(count)} if env_style == "cloud" else {}
        if env_style == "kubernetes":
            env, flags = {"JOB_COMPLETION_INDEX": str(index)}, ["--task-count", str(count)]
        masters.append(
            MasterProcess(
                [
                    *("--input-dir", "in", "--output-dir", "out", "--local-workers", "1", "--no-dashboard"),
                    *("--host", "127.0.0.1", "--port", "0", *flags),
                ],
                cwd=tmp,
                env=env,
            )
        )
    for master in masters:
        master.finish(WAIT_S * 4)
        assert master.proc.returncode == 0, master.stderr
    return masters


def records(out: Path) -> dict[str, list[dict[str, object]]]:
    """Each task log's records."""
    return {
        log.name: [json.loads(line) for line in log.read_text().splitlines()]
        for log in sorted(out.glob("distgray-log*.jsonl"))
    }


@pytest.mark.parametrize("env_style", ["flags", "cloud", "kubernetes"])
def test_three_tasks_convert_ten_files_exactly_once(tmp_path: Path, env_style: str) -> None:
    names = ten_images(tmp_path / "in")
    masters = run_tasks(tmp_path, 3, env_style)
    out = tmp_path / "out"
    logs = records(out)
    assert sorted(logs) == [f"distgray-log-task-{i}-of-3.jsonl" for i in range(3)]
    converted = [Path(str(r["input"])).name for rs in logs.values() for r in rs if r["status"] == "converted"]
    assert sorted(converted) == sorted(names)  # each exactly once, over the three tasks
    assert all(len(rs) < len(names) for rs in logs.values())  # the work was shared out
    for name in names:
        gray = out / f"{Path(name).stem}_gray{Path(name).suffix}"
        if not name.endswith("jpg"):  # lossless outputs: Pillow's pixels
            assert np.array_equal(
                np.asarray(Image.open(gray).convert("L")), pillow_reference(tmp_path / "in" / name)
            ), name
        else:
            assert gray.is_file()
    assert all("task       " in "".join(m.out_lines) for m in masters)
    # Run again: nothing to do, whichever task's log recorded which file.
    run_tasks(tmp_path, 3, env_style)
    again = records(out)
    later = [r for log, rs in again.items() for r in rs[len(logs[log]) :]]
    assert len(later) == len(names) and all(r["status"] == "skipped" for r in later), later


def test_the_jobs_command_sums_up_the_task_logs(tmp_path: Path) -> None:
    ten_images(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for index in range(2):
        MasterProcess(
            [
                *("--input-dir", "in", "--output-dir", "out", "--local-workers", "1", "--no-dashboard"),
                *("--host", "127.0.0.1", "--port", "0", "--task-index", str(index), "--task-count", "2"),
            ],
            cwd=tmp_path,
        ).finish(WAIT_S * 4)
    done = subprocess.run(
        [sys.executable, "-m", "distgray", "jobs", "out"], cwd=tmp_path, capture_output=True, text=True, timeout=WAIT_S
    )
    assert done.returncode == 1, done.stderr  # broken.png failed
    assert "inputs     11: 10 converted, 0 skipped, 1 failed" in done.stdout, done.stdout
    assert "failed     " in done.stdout and "broken.png" in done.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "distgray", "jobs", "out", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    figures = json.loads(as_json.stdout)
    assert figures["status"] == {"converted": 10, "failed": 1} and len(figures["logs"]) == 2
    missing = subprocess.run(
        [sys.executable, "-m", "distgray", "jobs", "nowhere.jsonl"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert missing.returncode == 2 and "no such job log" in missing.stderr
