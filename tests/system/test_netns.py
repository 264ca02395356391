"""Master and workers on separate hosts: network namespaces joined by a bridge (utils/netlab.py).

Needs root and iproute2; skips with the reason otherwise. CI runs as root, so it runs there.
Only addresses inside the lab's own 10.231.77.0/24 are used, and the lab is removed afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import decoded, load_utils, pillow_reference
from tests.integration.conftest import ROOT, WAIT_S

netlab = load_utils("netlab")
REASON = netlab.unavailable_reason()
pytestmark = [pytest.mark.system, pytest.mark.skipif(REASON is not None, reason=f"netns lab: {REASON}")]
ENV = {**os.environ, "DISTGRAY_TOKEN": "lab-token-0123456789"}


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The master's TLS certificate and key, and the fingerprint its workers pin."""
    from distgray.net import tls

    folder = tmp_path_factory.mktemp("tls")
    cert_pem, key_pem = tls.self_signed_pair()
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(key_pem)
    return (
        folder / "cert.pem",
        folder / "key.pem",
        tls.server_context(folder / "cert.pem", folder / "key.pem").fingerprint,
    )


@pytest.fixture
def lab() -> Iterator[Any]:
    with netlab.Lab(hosts=3, prefix=f"dg{os.getpid() % 100000}") as lab:
        yield lab


class Cluster:
    """A master on h0 and workers on other hosts, as subprocesses; stderr of the master collected."""

    def __init__(
        self,
        lab: Any,
        image: Path,
        out: Path,
        master_args: list[str],
        worker_args: list[str],
        cert: tuple[Path, Path, str] | None = None,
    ) -> None:
        self.master_ip = lab.address("h0")
        if cert is not None:  # TLS, as by default; with a certificate given, so its pin is known here
            master_args = [*master_args, "--tls-cert", str(cert[0]), "--tls-key", str(cert[1])]
            worker_args = [*worker_args, f"--tls-fingerprint={cert[2]}"]
        argv = [
            sys.executable,
            str(ROOT / "master_server.py"),
            "--image",
            str(image),
            "--output",
            str(out),
            "--png-level",
            "1",
            "--host",
            self.master_ip,
            "--port",
            "5003",
            "--min-workers",
            "2",
            *master_args,
        ]
        self.master = subprocess.Popen(
            lab.command("h0", argv), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.workers = {
            h: subprocess.Popen(
                lab.command(
                    h,
                    [
                        sys.executable,
                        str(ROOT / "worker_client.py"),
                        "--host",
                        self.master_ip,
                        "--port",
                        "5003",
                        "--id",
                        h,
                        "--retry-for",
                        "30",
                        *worker_args,
                    ],
                ),
                env=ENV,
                stderr=subprocess.DEVNULL,
            )
            for h in ("h1", "h2")
        }
        self.err: list[str] = []
        self.out: list[str] = []
        self._readers = [
            threading.Thread(target=lambda s=s, d=d: d.extend(s), daemon=True)
            for s, d in ((self.master.stderr, self.err), (self.master.stdout, self.out))
        ]
        for t in self._readers:
            t.start()

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while text not in self.stderr:
            assert time.monotonic() < deadline and self.master.poll() is None, self.stderr
            time.sleep(0.02)

    def finish(self) -> str:
        """Wait for the master to exit 0; returns its stdout."""
        self.master.wait(timeout=WAIT_S * 3)
        for t in self._readers:
            t.join(timeout=WAIT_S)
        assert self.master.returncode == 0, self.stderr
        return "".join(self.out)

    def kill(self) -> None:
        for p in [self.master, *self.workers.values()]:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_master_and_two_workers_on_three_hosts(
    lab: Any, odd_8k: Path, tmp_path: Path, cert: tuple[Path, Path, str]
) -> None:
    out = tmp_path / "out.png"
    cluster = Cluster(lab, odd_8k, out, [], [], cert)
    try:
        stdout = cluster.finish()
        for w in cluster.workers.values():
            assert w.wait(timeout=WAIT_S) == 0  # they heard BYE across the bridge
    finally:
        cluster.kill()
    assert np.array_equal(decoded(out), pillow_reference(odd_8k))
    # both remote hosts did work, each from its own address, and the master listened on the lab only
    assert "joined from 10.231.77.2" in cluster.stderr and "joined from 10.231.77.3" in cluster.stderr
    assert cluster.stderr.count("over TLS") >= 2  # encrypted between hosts
    assert all(f"\n{h} " in "\n" + stdout for h in ("h1", "h2")), stdout
    assert f"listening on {cluster.master_ip}:5003" in cluster.stderr


def test_a_plaintext_worker_on_another_host_is_refused(lab: Any, photo: Path, tmp_path: Path) -> None:
    """TLS is the default between machines: a worker that insists on plaintext (--no-tls) is told
    so and exits 1; the master keeps waiting for proper workers."""
    master = subprocess.Popen(
        lab.command(
            "h0",
            [
                sys.executable,
                str(ROOT / "master_server.py"),
                "--image",
                str(photo),
                "--output",
                str(tmp_path / "o.jpg"),
                "--host",
                lab.address("h0"),
                "--port",
                "5003",
                "--timeout",
                "20",
            ],
        ),
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        worker = subprocess.run(
            lab.command(
                "h1",
                [
                    sys.executable,
                    str(ROOT / "worker_client.py"),
                    "--host",
                    lab.address("h0"),
                    "--port",
                    "5003",
                    "--no-tls",
                    "--retry-for",
                    "20",
                ],
            ),
            env=ENV,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert worker.returncode == 1, worker.stderr
        assert "over TLS only" in worker.stderr
    finally:
        master.kill()
        master.wait()


def test_cutting_a_workers_link_mid_job(lab: Any, odd_8k: Path, tmp_path: Path, cert: tuple[Path, Path, str]) -> None:
    """Unplug one worker's host mid-job: it is declared lost after the heartbeat timeout, its
    strips are redone by the other, and the output is still bit-identical."""
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    master_args = ["--heartbeat", "0.25", "--heartbeat-timeout", "3", "--report", str(report), "--log-level", "debug"]
    cluster = Cluster(lab, odd_8k, out, master_args, ["--throttle", "40"], cert)
    try:
        cluster.wait_for("worker h2: strip")  # h2 holds work: it is mid-job
        lab.cut("h2")
        cut_at = time.monotonic()
        cluster.finish()
        assert cluster.workers["h1"].wait(timeout=WAIT_S) == 0
    finally:
        cluster.kill()
    assert np.array_equal(decoded(out), pillow_reference(odd_8k))
    data = json.loads(report.read_text())
    lost = [r for r in data["requeued"] if r["worker"] == "h2"]
    assert lost, f"h2's strips were requeued: {data['requeued']}"
    assert "silent for 3.0 s" in lost[0]["reason"] or "stalled for 3.0 s" in lost[0]["reason"]
    detected = lost[0]["at"] - cut_at  # both on the system-wide monotonic clock
    print(f"\nlink cut: h2 declared lost {detected:.2f} s after its cable was unplugged (timeout 3 s)")
    assert 0 < detected < 3 * 3.0, "detected by the heartbeat timeout, not by luck or never"
    assert data["workers"]["h1"]["rows"] > data["workers"]["h2"]["rows"]
