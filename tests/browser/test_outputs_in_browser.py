"""Files joined from worker-encoded strips open in a real browser with the right pixels."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import pillow_jpeg_bytes, pillow_reference
from tests.integration.conftest import ROOT, WAIT_S

pytestmark = pytest.mark.browser

PAGE = """<!doctype html><body><canvas id="c"></canvas><script>
window.pixels = new Promise(resolve => {
  const img = new Image();
  img.onload = () => {
    const c = document.getElementById('c');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d', {willReadFrequently: true, colorSpace: 'srgb'});
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let gray = '';
    for (let i = 0; i < d.length; i += 4) gray += String.fromCharCode(d[i]);
    resolve({w: c.width, h: c.height, gray: btoa(gray)});
  };
  img.onerror = () => resolve({error: 'the browser could not decode it'});
  img.src = '%s';
});
</script></body>"""


def _browser_pixels(browser: object, tmp_path: Path, image: Path) -> np.ndarray:
    mime = "image/png" if image.suffix == ".png" else "image/jpeg"
    url = f"data:{mime};base64,{base64.b64encode(image.read_bytes()).decode()}"
    page = tmp_path / "view.html"
    page.write_text(PAGE % url)
    browser.get(page.as_uri())  # type: ignore[attr-defined]
    got = browser.execute_async_script(  # type: ignore[attr-defined]
        "const done = arguments[arguments.length - 1]; window.pixels.then(done);"
    )
    assert "error" not in got, got
    gray = np.frombuffer(base64.b64decode(got["gray"]), dtype=np.uint8)
    return gray.reshape(got["h"], got["w"])


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_strip_encoded_output_in_chromium(suffix: str, browser: object, photo: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    with Image.open(photo) as im:
        im.convert("RGB").crop((0, 0, 1001, 601)).save(src, compress_level=1)  # odd size
    out = tmp_path / f"out{suffix}"
    args = ["--image", str(src), "--output", str(out), "--local-workers", "2", "--strip-rows", "40", "--no-dashboard"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "master_server.py"), *args, "--host", "127.0.0.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=WAIT_S * 2,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    gray = pillow_reference(src)
    if suffix == ".png":
        expected = gray
    else:  # what the browser shows of Pillow's own JPEG of the same gray image
        reference = tmp_path / "pillow.jpg"
        reference.write_bytes(pillow_jpeg_bytes(gray))
        expected = _browser_pixels(browser, tmp_path, reference)
        with Image.open(io.BytesIO(pillow_jpeg_bytes(gray))) as im:
            assert np.abs(expected.astype(int) - np.asarray(im)).max() <= 1  # browsers' IDCT may round
    shown = _browser_pixels(browser, tmp_path, out)
    assert shown.shape == gray.shape
    assert np.array_equal(shown, expected)
