"""The status page in a real browser while a real job runs on real worker subprocesses.

One story, as a person lives it: the page is open before any worker exists; workers join and the
job starts; progress, ETA, speeds and the strip map move; a worker freezes and is declared lost,
its strips requeued, visibly; the job finishes with previews, a download that is bit-identical to
Pillow, and a per-worker table equal to the terminal summary; then an upload through the form,
a refused bad file, and a second job.
"""

from __future__ import annotations

import io
import os
import re
import signal
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser.conftest import save_artifact
from tests.conftest import pillow_reference
from tests.integration.conftest import (
    TOKEN,
    WAIT_S,
    MasterProcess,
    Workers,
    flag_of,
    wait_until,
    wait_while_progressing,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def status_url(master: MasterProcess) -> str:
    wait_until(lambda: "status page at " in master.stderr, what="the master to print the status page URL")
    match = re.search(r"status page at (http://\S+)", master.stderr)
    assert match, master.stderr
    return match.group(1)


def summary_table(stdout: str) -> dict[str, tuple[int, int]]:
    """worker -> (strips, rows) from the master's terminal summary."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] in ("alpha", "beta", "gamma") and parts[2].isdigit():
            rows[parts[0]] = (int(parts[2]), int(parts[3]))
    return rows


def test_watch_a_job_from_start_to_finish(
    browser: Any, workers: Workers, odd_8k: Path, photo: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    master = MasterProcess(
        [
            *("--image", str(odd_8k), "--serve", "--png-level", "1"),
            *("--port", "0", "--dashboard-port", "0", "--token", TOKEN),
            *("--strip-rows", "100", "--heartbeat", "0.5", "--heartbeat-timeout", "3"),
        ],
        cwd=tmp_path,
    )
    url = status_url(master)
    port = int(flag_of(master.worker_command(), "--port"))

    def text(element_id: str) -> str:
        return str(browser.find_element(By.ID, element_id).text)

    def js(script: str) -> Any:
        return browser.execute_script(script)

    # 1. Opened before any worker exists: the page says so and shows how to start one.
    browser.get(url)
    wait_until(lambda: text("job-state") == "waiting for workers", what="the page to show the waiting job")
    assert browser.find_element(By.ID, "no-workers").is_displayed()
    assert "python -m distgray worker --host" in text("worker-command")
    # The worker token is nowhere on the page or in its API: whoever can load the page must not
    # be able to join as a worker.
    assert TOKEN not in browser.page_source
    with urllib.request.urlopen(url + "api/status", timeout=WAIT_S) as resp:
        assert TOKEN not in resp.read().decode()

    # 2. Workers join; the job runs. gamma will freeze, alpha and beta carry on.
    for wid in ("alpha", "beta", "gamma"):
        workers.start(port, worker_id=wid, extra=("--throttle", "150"))
    gamma = workers.procs[-1]
    wait_until(lambda: text("job-state") == "running", what="the job to start")
    worker_rows = (
        "return [...document.querySelectorAll('#workers tbody tr')]"
        ".map(r => [r.dataset.worker, r.cells[3].innerText, r.cells[4].innerText])"
    )
    wait_until(
        lambda: sum(1 for w, _, speed in js(worker_rows) if speed.isdigit() and int(speed) > 0) == 3,
        what="all three workers listed with a measured speed",
    )

    # 3. Progress advances on the page (not only at the end), with throughput and an ETA.
    seen: list[float] = []

    def progress_moves() -> bool:
        pct = float(text("progress-pct").rstrip("%"))
        if 0 < pct < 100 and (not seen or pct > seen[-1]):
            seen.append(pct)
        return len(seen) >= 2

    wait_until(progress_moves, what="the progress bar to advance twice")
    assert re.fullmatch(r"[\d.]+ MP/s", text("fig-rate")), text("fig-rate")
    wait_until(lambda: re.fullmatch(r"[\d.]+ s|\d+ min \d+ s", text("fig-eta")) is not None, what="an ETA")

    # 4. A worker freezes mid-job: it is declared lost and its strips are requeued, on the page.
    os.kill(gamma.pid, signal.SIGSTOP)
    try:
        states = (
            "return Object.fromEntries([...document.querySelectorAll('#workers tbody tr')]"
            ".map(r => [r.dataset.worker, r.cells[3].innerText]))"
        )
        wait_until(lambda: js(states).get("gamma") == "lost", what="gamma shown as lost")
        wait_until(lambda: "gamma" in text("requeued"), what="gamma's strips shown as requeued")
        if text("job-state") == "running":
            save_artifact(browser, "status-page-running.png")
        wait_while_progressing(
            lambda: text("progress-pct"), lambda: text("job-state") == "done", what="the job to finish"
        )
    finally:
        gamma.kill()
    assert text("progress-pct") == "100.0%"
    assert text("fig-rows") == "4321 / 4321"
    done_by = js(
        "return [...new Set([...document.querySelectorAll('#strip-map .strip.done')].map(s => s.dataset.worker))]"
    )
    assert {"alpha", "beta"} <= set(done_by)

    # 5. Previews, and a download that is exactly Pillow's convert("L").
    for which in ("input", "output"):
        wait_until(
            lambda w=which: js(f"return document.getElementById('preview-{w}').naturalWidth") > 0,  # type: ignore[misc]
            what=f"the {which} preview to load",
        )
    href = browser.find_element(By.ID, "download").get_attribute("href")
    with urllib.request.urlopen(href, timeout=WAIT_S) as resp:
        assert resp.status == 200
        downloaded = resp.read()
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(downloaded))), pillow_reference(odd_8k))
    assert (tmp_path / "results" / "sample_8k_odd_gray.png").read_bytes() == downloaded

    # 6. The per-worker table on the page is the terminal summary.
    wait_until(lambda: len(summary_table("".join(master.out_lines))) == 3, what="the terminal summary")
    terminal = summary_table("".join(master.out_lines))
    page_rows = js(
        "return [...document.querySelectorAll('#summary tbody tr')]"
        ".map(r => [r.dataset.worker, r.cells[2].innerText, r.cells[3].innerText])"
    )
    page = {w: (int(s), int(r)) for w, s, r in page_rows}
    assert page == terminal
    assert sum(rows for _, rows in terminal.values()) >= 4321  # requeued strips count where they ran
    save_artifact(browser, "status-page-done.png")

    # 7. Upload through the form: a bad file is refused with the reason, a photo becomes job 2.
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    browser.find_element(By.ID, "upload-file").send_keys(str(bad))
    browser.find_element(By.ID, "upload-button").click()
    wait_until(lambda: browser.find_element(By.ID, "upload-error").is_displayed(), what="the upload error")
    assert "not an image" in text("upload-error")
    browser.find_element(By.ID, "upload-file").send_keys(str(photo))
    browser.find_element(By.ID, "upload-button").click()
    wait_until(lambda: "Queued as job 2" in text("upload-ok"), what="the upload to be queued")
    job2 = "return (document.querySelector('#history tr[data-job=\"2\"]') || {cells: []}).cells[4]?.innerText"
    wait_until(lambda: js(job2) == "done", timeout=WAIT_S * 2, what="the uploaded job to finish")
    outputs = sorted(p.name for p in (tmp_path / "results").iterdir() if p.is_file())
    assert outputs == ["sample_4k_gray.jpg", "sample_8k_odd_gray.png"]

    # 8. SIGTERM stops the service cleanly: every job succeeded, so exit 0; workers leave.
    master.proc.send_signal(signal.SIGTERM)
    master.finish(timeout=WAIT_S)
    assert master.proc.returncode == 0, master.stderr
    for proc in workers.procs[:2]:
        assert proc.wait(timeout=WAIT_S) == 0
