"""The Dask engine's sending of pixels when a worker dies under it: Dask's direct scatter can
reach a worker that died before the scheduler heard of it, and then fails with a KeyError naming
that worker (the scheduler's ``update_data`` no longer knows it). That is a retry, not a failed
job (seen in CI: ``tests/integration/test_dask.py`` killing a worker mid-job)."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest

if os.environ.get("CI") != "true":
    pytest.importorskip("distributed", reason="Dask is not installed (pip install 'distgray[dask]')")

from distgray.engines import daskcluster


class FlakyClient:
    """Just what DaskEngine asks of a client here; its scatter fails ``failures`` times first."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.scheduler = SimpleNamespace(address="tcp://127.0.0.1:1")
        self.status = "running"
        self.failures, self.error, self.calls = failures, error, 0

    def scatter(self, data: Any, direct: bool, hash: bool) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return ["a future"]

    def close(self) -> None:
        pass


def test_a_worker_that_died_mid_scatter_is_a_retry() -> None:
    client = FlakyClient(2, KeyError("tcp://127.0.0.1:39563"))
    engine = daskcluster.DaskEngine(client, shared_memory=False)  # type: ignore[arg-type]
    try:
        assert engine._scatter([b"pixels"]) == ["a future"]
        assert client.calls == 3
    finally:
        engine.close()


def test_a_scatter_that_never_lands_fails_after_the_retry_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daskcluster, "SEND_RETRY_S", 0.3)
    client = FlakyClient(10**9, KeyError("tcp://127.0.0.1:39563"))
    engine = daskcluster.DaskEngine(client, shared_memory=False)  # type: ignore[arg-type]
    try:
        with pytest.raises(KeyError):
            engine._scatter([b"pixels"])
        assert client.calls > 1
    finally:
        engine.close()
