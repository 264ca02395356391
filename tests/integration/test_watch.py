"""Watch mode on a local folder: images written slowly, moved in, dropped in while another
converts, and a master restarted in the middle: each converted exactly once, only when whole."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import pillow_reference
from tests.integration.conftest import WAIT_S, MasterProcess, wait_until

pytestmark = pytest.mark.slow


def start(tmp: Path) -> MasterProcess:
    master = MasterProcess(
        [
            *("--input-dir", "in", "--output-dir", "out", "--watch", "--local-workers", "1", "--no-dashboard"),
            *("--host", "127.0.0.1", "--port", "0", "--watch-interval", "0.5", "--watch-settle", "3"),
            *("--log-level", "info"),
        ],
        cwd=tmp,
    )
    wait_until(lambda: "watching   in" in "".join(master.out_lines), WAIT_S, "the master to watch the folder")
    return master


def stop(master: MasterProcess, how: int = signal.SIGINT) -> None:
    master.proc.send_signal(how)
    master.finish(WAIT_S)
    assert master.proc.returncode == 0, master.stderr
    assert "stopped    watching" in "".join(master.out_lines) and "Traceback" not in master.stderr


def records(tmp: Path) -> list[dict[str, object]]:
    log = tmp / "out" / "distgray-log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def converted(tmp: Path, name: str) -> list[dict[str, object]]:
    return [r for r in records(tmp) if r["input"] == f"in/{name}" and r["status"] == "converted"]


def wait_converted(tmp: Path, name: str, times: int = 1) -> None:
    wait_until(lambda: len(converted(tmp, name)) >= times, WAIT_S * 2, f"{name} to be converted")


def image(seed: int, size: tuple[int, int] = (301, 203)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def same_as_pillow(tmp: Path, name: str) -> bool:
    out = tmp / "out" / f"{Path(name).stem}_gray{Path(name).suffix}"
    return bool(np.array_equal(np.asarray(Image.open(out)), pillow_reference(tmp / "in" / name)))


def test_slow_writes_moves_and_drops_mid_conversion_each_convert_once(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    master = start(tmp_path)
    try:
        # Written in four chunks through one open file: 1.6 s in all, pauses well under the 3 s settle.
        data = _png_bytes(image(1, (1201, 901)))
        with open(tmp_path / "in" / "slow.png", "wb") as fh:
            for k in range(4):
                fh.write(data[k * len(data) // 4 : (k + 1) * len(data) // 4])
                fh.flush()
                time.sleep(0.4)  # pacing the writer (not waiting for the master)
        wait_converted(tmp_path, "slow.png")
        # Moved in whole from outside the folder.
        image(2).save(tmp_path / "moved.png")
        os.rename(tmp_path / "moved.png", tmp_path / "in" / "moved.png")
        wait_converted(tmp_path, "moved.png")
        # A big one, and a small one dropped while it converts.
        image(3, (4001, 3001)).save(tmp_path / "in" / "big.png")
        wait_until(lambda: "big.png" in master.stderr or converted(tmp_path, "big.png"), WAIT_S, "big.png to start")
        image(4).save(tmp_path / "in" / "small.png")
        wait_converted(tmp_path, "big.png")
        wait_converted(tmp_path, "small.png")
    finally:
        stop(master)
    names = ["slow.png", "moved.png", "big.png", "small.png"]
    for name in names:
        assert len(converted(tmp_path, name)) == 1, (name, records(tmp_path))
        assert same_as_pillow(tmp_path, name), name
    assert converted(tmp_path, "slow.png")[0]["input_size"] == len(data)  # the whole file, not a part
    assert not [r for r in records(tmp_path) if r["status"] == "failed"], records(tmp_path)


def test_a_restart_misses_none_and_repeats_none(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for k in range(3):
        image(10 + k).save(tmp_path / "in" / f"before{k}.png")
    master = start(tmp_path)
    for k in range(3):
        wait_converted(tmp_path, f"before{k}.png")
    stop(master, signal.SIGTERM)  # docker stop, systemd
    # While it is down: two new files, and one file changed.
    image(20).save(tmp_path / "in" / "while_down0.png")
    image(21).save(tmp_path / "in" / "while_down1.png")
    image(22).save(tmp_path / "in" / "before1.png")
    master = start(tmp_path)
    try:
        wait_converted(tmp_path, "while_down0.png")
        wait_converted(tmp_path, "while_down1.png")
        wait_converted(tmp_path, "before1.png", times=2)
        # Every file has been listed and settled again by now: nothing else is converted.
        wait_until(lambda: "before2.png: already converted" in master.stderr, WAIT_S, "the unchanged files seen")
    finally:
        stop(master)
    counts = {f"before{k}.png": len(converted(tmp_path, f"before{k}.png")) for k in range(3)}
    assert counts == {"before0.png": 1, "before1.png": 2, "before2.png": 1}, counts
    for name in ("before0.png", "before1.png", "before2.png", "while_down0.png", "while_down1.png"):
        assert same_as_pillow(tmp_path, name), name
    assert len(converted(tmp_path, "while_down0.png")) == 1


def _png_bytes(im: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
