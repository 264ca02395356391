"""A Dask cluster from Dask's own command line on 127.0.0.1: ``dask scheduler`` and ``n``
single-threaded ``dask worker`` processes (no nanny: a worker killed stays dead), logs in a
folder. Used by the Dask engine's tests and by ``utils/bench_dask.py``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


class DaskCLI:
    def __init__(self, tmp: Path, n: int, timeout: float = 60.0, worker_prefix: list[str] | None = None) -> None:
        """``worker_prefix``: a command each worker runs under (``unshare ...``, say)."""
        cli = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
        if cli is None:
            raise RuntimeError("Dask's `dask` command is missing: pip install 'distgray[dask]'")
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        scheduler_file = tmp / "scheduler.json"
        self.scheduler = self._start(
            [
                cli,
                "scheduler",
                *("--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0"),
                "--scheduler-file",
                str(scheduler_file),
            ],
            "scheduler",
        )
        deadline = time.monotonic() + timeout
        while not (scheduler_file.exists() and "address" in (scheduler_file.read_text() or "")):
            if time.monotonic() > deadline or self.scheduler.poll() is not None:
                self.close()
                raise RuntimeError(f"the Dask scheduler did not start (see {tmp / 'scheduler.log'})")
            time.sleep(0.02)
        self.address = str(json.loads(scheduler_file.read_text())["address"])
        self.workers = [
            self._start(
                [
                    *(worker_prefix or []),
                    *(cli, "worker", self.address, "--nthreads", "1", "--name", f"w{i}", "--no-nanny"),
                    *("--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "0"),
                ],
                f"worker-{i}",
            )
            for i in range(n)
        ]
        from distributed import Client

        with Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(n, timeout=timeout * 2)

    def _start(self, cmd: list[str], name: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
