"""Uploading several files with an operation chosen, as a person does it on the page: both are
shown input beside output, and the batch's ZIP holds both outputs, each equal to Pillow's own
operation on the whole gray image."""

from __future__ import annotations

import io
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.browser.conftest import save_artifact
from tests.browser.test_status_page import status_url
from tests.integration.conftest import WAIT_S, MasterProcess, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_two_files_with_a_filter_side_by_side_and_one_zip(browser: Any, photo: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    first = tmp_path / "first.png"
    Image.open(photo).crop((300, 200, 1101, 803)).save(first)
    second = tmp_path / "second.jpg"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (211, 317, 3), dtype=np.uint8)).save(second, quality=90)
    master = MasterProcess(
        ["--local-workers", "2", "--dashboard-port", "0", "--host", "127.0.0.1", "--port", "0"], cwd=tmp_path
    )
    url = status_url(master)
    browser.get(url)
    wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#upload-op option")) > 5, WAIT_S, "the operations")
    Select(browser.find_element(By.ID, "upload-op")).select_by_value("gaussian:4")
    browser.find_element(By.ID, "upload-file").send_keys(f"{first}\n{second}")
    browser.find_element(By.ID, "upload-button").click()
    wait_until(lambda: "Queued 2 files" in browser.find_element(By.ID, "upload-ok").text, WAIT_S, "the upload")

    def shown() -> list[tuple[str, str, int, int]]:
        """Each row of the upload card: name, state, and the loaded widths of its two previews."""
        return browser.execute_script(  # type: ignore[no-any-return]
            "return Array.from(document.querySelectorAll('#batch-files tbody tr')).map((r) => ["
            " r.cells[1].innerText, r.cells[2].innerText,"
            " (r.cells[3].querySelector('img') || {}).naturalWidth || 0,"
            " (r.cells[4].querySelector('img') || {}).naturalWidth || 0])"
        )

    wait_until(
        lambda: (
            [(n, s, i > 0, o > 0) for n, s, i, o in shown()]
            == [("first.png", "done", True, True), ("second.jpg", "done", True, True)]
        ),
        WAIT_S * 2,
        "both files done, each input shown beside its output",
    )
    assert "gaussian:4" in browser.find_element(By.ID, "batch-ops").text
    assert "2 of 2 done" in browser.find_element(By.ID, "batch-count").text
    zip_link = browser.find_element(By.ID, "batch-zip")
    assert zip_link.is_displayed()
    browser.execute_script("document.getElementById('upload-form').scrollIntoView()")
    save_artifact(browser, "upload-batch-gaussian.png")

    href = urllib.parse.urljoin(url, zip_link.get_attribute("href"))
    with urllib.request.urlopen(href, timeout=WAIT_S) as resp:
        assert resp.headers["Content-Type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(resp.read()))
    names = sorted(archive.namelist())
    assert len(names) == 2 and names[0].startswith("first") and names[1].startswith("second"), names
    for name, source in zip(names, (first, second), strict=True):
        got = Image.open(io.BytesIO(archive.read(name)))
        want = Image.open(source).convert("L").filter(ImageFilter.GaussianBlur(4))
        if name.endswith(".png"):
            assert np.array_equal(np.asarray(got), np.asarray(want)), name
        else:  # a JPEG output: Pillow's encoding of the same gray pixels
            buf = io.BytesIO()
            want.save(buf, "JPEG", quality=95)
            assert np.array_equal(np.asarray(got), np.asarray(Image.open(buf))), name
    master.proc.terminate()
    master.finish(timeout=WAIT_S)
