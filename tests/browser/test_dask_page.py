"""The status page of a master on the Dask engine, in a real browser: the job's progress and
result as on the built-in engine, Dask's workers in the table, and a link to Dask's own
dashboard, which answers."""

from __future__ import annotations

import io
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser.test_status_page import status_url
from tests.conftest import pillow_reference
from tests.integration.conftest import WAIT_S, MasterProcess, wait_until
from tests.integration.test_dask import _dask_cli

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_page_of_a_dask_run_links_to_dasks_dashboard(browser: Any, photo: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    _dask_cli()
    pytest.importorskip("bokeh", reason="Dask's dashboard needs bokeh (the test extras include it)")
    master = MasterProcess(
        [
            *("--image", str(photo), "--output", "out.png", "--serve", "--dashboard-port", "0"),
            *("--engine", "dask", "--local-workers", "2"),
        ],
        cwd=tmp_path,
    )
    url = status_url(master)
    browser.get(url)

    def shown(element_id: str) -> bool:
        return bool(browser.find_element(By.ID, element_id).is_displayed())

    wait_until(lambda: shown("download"), WAIT_S * 2, "the finished job's download link")
    assert shown("engine") and shown("engine-dashboard")
    link = browser.find_element(By.ID, "engine-dashboard").get_attribute("href")
    assert link.startswith("http://127.0.0.1:"), link
    with urllib.request.urlopen(link, timeout=WAIT_S) as answer:  # Dask's own page answers
        assert answer.status == 200
    rows = browser.find_elements(By.CSS_SELECTOR, "#workers tbody tr")
    assert len(rows) == 2, [r.text for r in rows]
    href = browser.find_element(By.ID, "download").get_attribute("href")
    with urllib.request.urlopen(href, timeout=WAIT_S) as answer:
        got = np.asarray(Image.open(io.BytesIO(answer.read())))
    assert np.array_equal(got, pillow_reference(photo))
    master.proc.terminate()
    master.finish(WAIT_S)
