"""Shared fixtures: the real photo, derived test images, Pillow's reference output."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent

# Started in the background by a non-interactive shell (`... &` in a script, as CI runners may),
# this process inherits SIGINT ignored, and so would every master and worker the tests start:
# their Ctrl+C tests would then test nothing. Give SIGINT its usual meaning back, here and in them.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
PHOTO = ROOT / "test_images" / "sample_4k.jpg"


def load_utils(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "utils" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def pillow_reference(path: Path) -> np.ndarray:
    """What single-process Pillow makes of ``path``: EXIF-oriented, convert("L")."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("L"))


def pillow_jpeg_bytes(gray: np.ndarray, quality: int = 95, *, strips: bool = False) -> bytes:
    """What Pillow writes for ``gray`` at ``quality``. ``strips``: with a restart marker after
    every MCU row, which is what distgray writes when its workers encoded the JPEG in strips (the
    same coefficients, so the same decoded pixels as Pillow's default file)."""
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="JPEG", quality=quality, **({"restart_marker_rows": 1} if strips else {}))
    return buf.getvalue()


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.fixture(scope="session")
def photo() -> Path:
    return PHOTO


@pytest.fixture(scope="session")
def odd_8k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7679x4321 photo-derived PNG (odd width and height), made by utils/make_test_images.py."""
    path = tmp_path_factory.mktemp("images") / "sample_8k_odd.png"
    load_utils("make_test_images").make_odd().save(path, compress_level=1)
    return path


def pngcheck(path: Path) -> None:
    """``pngcheck`` accepts ``path``. Without the tool the test skips and says so; with ``CI=true``
    (where ``.ci/run`` installs it) it fails instead."""
    tool = shutil.which("pngcheck")
    if tool is None:
        why = "pngcheck is not installed (apt-get install pngcheck; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
