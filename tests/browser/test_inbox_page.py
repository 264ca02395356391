"""Watch mode's inbox on the status page, in a real browser: a file still being written shows as
waiting, finished ones as done, a bad one as failed with its reason."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser.test_status_page import status_url
from tests.integration.conftest import WAIT_S, MasterProcess, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_page_shows_the_watched_folder(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(19)
    master = MasterProcess(
        [
            *("--input-dir", "in", "--output-dir", "out", "--watch", "--watch-settle", "600"),
            *("--local-workers", "1", "--dashboard-port", "0", "--host", "127.0.0.1", "--port", "0"),
        ],
        cwd=tmp_path,
    )
    browser.get(status_url(master))

    def read(selector: str, attr: str) -> dict[str, tuple[str, str]]:
        """``attr`` -> text of the elements the page shows now (read in one go: it re-renders)."""
        script = (
            "return Array.from(document.querySelectorAll(arguments[0]))"
            ".map((e) => [e.getAttribute(arguments[1]), e.getAttribute('data-state') || e.textContent,"
            " e.lastElementChild ? e.lastElementChild.textContent : ''])"
        )
        return {k: (v, why) for k, v, why in browser.execute_script(script, selector, attr)}

    def states() -> dict[str, str]:
        return {k: v for k, (v, _) in read("#inbox-files tbody tr", "data-file").items()}

    wait_until(lambda: browser.find_element(By.ID, "inbox").is_displayed(), WAIT_S, "the inbox card")
    assert browser.find_element(By.ID, "inbox-folder").text == "in"
    # One file still open for writing (no close event yet, and it is not settled for 600 s) ...
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(buf, format="PNG")
    writing = open(tmp_path / "in" / "writing.png", "wb")  # noqa: SIM115 - closed below, on purpose later
    try:
        writing.write(buf.getvalue()[:100])
        writing.flush()
        # ... and two whole ones, and one that is not an image.
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (90 + k, 70, 3), dtype=np.uint8)).save(tmp_path / "in" / f"ok{k}.png")
        (tmp_path / "in" / "bad.png").write_bytes(b"not a picture at all")
        want = {"ok0.png": "done", "ok1.png": "done", "bad.png": "failed", "writing.png": "waiting"}
        wait_until(lambda: all(states().get(k) == v for k, v in want.items()), WAIT_S * 2, "the inbox rows")
        counts = {k: v for k, (v, _) in read("#inbox-counts [data-count]", "data-count").items()}
        assert counts == {"waiting": "1 waiting", "converting": "0 converting", "done": "2 done", "failed": "1 failed"}
        assert "not an image" in read("#inbox-files tbody tr", "data-file")["bad.png"][1]
        writing.write(buf.getvalue()[100:])
    finally:
        writing.close()  # now whole: its close event makes it ready
    wait_until(lambda: states().get("writing.png") == "done", WAIT_S * 2, "the written file to be converted")
    master.proc.terminate()
    master.finish(WAIT_S)
