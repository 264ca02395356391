"""The Docker image, built from the project's Dockerfile and run as a user runs it.

Starts its own Docker engine (utils/docker_lab.py: no firewall changes, private data root and
socket, host networking), prepares the python:3.11-slim base locally (cached), builds the image
offline from wheels made here, then: one container converting with local workers; a master and
two worker containers; the health check and ``docker stop``. Outputs are checked bit for bit.
Needs root, docker.io and debootstrap; skips with the reason otherwise (.ci/run installs them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import load_utils, pillow_jpeg_bytes, pillow_reference
from tests.integration.conftest import ROOT, WAIT_S

lab = load_utils("docker_lab")
REASON = lab.unavailable_reason()
pytestmark = [pytest.mark.system, pytest.mark.skipif(REASON is not None, reason=f"docker lab: {REASON}")]
TAG = "distgray:test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Engine:
    def __init__(self) -> None:
        self.containers: list[str] = []

    def run(self, options: list[str], command: list[str]) -> str:
        """Start a container (host networking) in the background; returns its id."""
        out = str(lab.docker("run", "-d", "--network", "host", *options, TAG, *command).stdout.strip())
        self.containers.append(out)
        return out

    def wait(self, container: str, timeout: float = WAIT_S * 3) -> int:
        return int(lab.docker("wait", container, timeout=timeout).stdout.strip())

    def logs(self, container: str) -> str:
        done = lab.docker("logs", container, check=False)
        return str(done.stdout + done.stderr)

    def inspect(self, container: str, template: str) -> str:
        return str(lab.docker("inspect", "--format", template, container).stdout.strip())


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    try:
        started = lab.engine_up()
    except RuntimeError as exc:  # no cgroups, no storage driver...: this machine cannot run Docker
        pytest.skip(f"docker lab: the engine does not start here: {exc}")
    try:
        try:
            lab.base_image()
        except subprocess.CalledProcessError as exc:  # e.g. no Debian mirror reachable
            pytest.skip(f"docker lab: cannot make the python:3.11-slim base here: {exc.stderr or exc}")
        seconds = lab.build_image(tmp_path_factory.mktemp("context"), TAG)
        print(f"docker build: {seconds:.1f} s")
        e = Engine()
        yield e
        for c in e.containers:
            lab.docker("rm", "-f", c, check=False)
    finally:
        if started:
            lab.engine_down()


@pytest.fixture
def data(tmp_path: Path, photo: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    folder.chmod(0o777)  # the image runs as uid 1000
    (folder / "sample_4k.jpg").write_bytes(photo.read_bytes())
    return folder


def pillow_jpeg(photo: Path) -> bytes:
    """Pillow's JPEG of the gray photo, with the restart markers of distgray's strip-encoded JPEG."""
    return pillow_jpeg_bytes(pillow_reference(photo), strips=True)


def test_one_container_with_local_workers(engine: Engine, data: Path, photo: Path) -> None:
    env = ["-e", "NUM_WORKERS=2", "-e", f"MASTER_PORT={free_port()}", "-e", f"FLASK_PORT={free_port()}"]
    c = engine.run([*env, "-v", f"{data}:/data"], ["master", "--image", "/data/sample_4k.jpg"])
    assert engine.wait(c) == 0, engine.logs(c)
    assert (data / "results" / "sample_4k_gray.jpg").read_bytes() == pillow_jpeg(photo)
    logs = engine.logs(c)
    assert "local-1" in logs and "local-2" in logs  # both local workers took part


def test_master_and_two_worker_containers(engine: Engine, data: Path, odd_8k: Path) -> None:
    (data / "odd.png").write_bytes(odd_8k.read_bytes())
    port = free_port()
    token = ["-e", "DISTGRAY_TOKEN=docker-test-token"]
    master = engine.run(
        [*token, "-e", f"MASTER_PORT={port}", "-e", f"FLASK_PORT={free_port()}", "-v", f"{data}:/data"],
        ["master", "--image", "/data/odd.png", "--min-workers", "2", "--png-level", "1"],
    )
    workers = [
        engine.run([*token, "-e", "MASTER_HOST=127.0.0.1", "-e", f"MASTER_PORT={port}"], ["worker", "--id", f"box{i}"])
        for i in (1, 2)
    ]
    assert engine.wait(master) == 0, engine.logs(master)
    for w in workers:
        assert engine.wait(w, timeout=WAIT_S) == 0, engine.logs(w)  # told BYE, left cleanly
    logs = engine.logs(master)
    assert "box1" in logs and "box2" in logs
    out = np.asarray(Image.open(data / "results" / "odd_gray.png"))
    np.testing.assert_array_equal(out, pillow_reference(odd_8k))


def test_health_check_and_docker_stop(engine: Engine, data: Path) -> None:
    ports = ["-e", f"MASTER_PORT={free_port()}", "-e", f"FLASK_PORT={free_port()}"]
    master = engine.run([*ports, "-v", f"{data}:/data"], ["master"])  # serve mode: no --image
    deadline = time.monotonic() + WAIT_S * 2
    while (health := engine.inspect(master, "{{.State.Health.Status}}")) != "healthy":
        assert health in ("starting", "healthy"), engine.logs(master)
        assert time.monotonic() < deadline, f"not healthy: {health}"
        time.sleep(1)
    assert engine.inspect(master, "{{.Config.User}}") == "1000:1000"
    t0 = time.monotonic()
    lab.docker("stop", "--time", "20", master)
    assert time.monotonic() - t0 < 15  # SIGTERM handled by PID 1, not the 20 s SIGKILL fallback
    assert engine.inspect(master, "{{.State.ExitCode}}") == "0", engine.logs(master)
    assert "distgray-master: stopping" in engine.logs(master)


def test_the_image_has_what_runs_and_no_more(engine: Engine) -> None:
    done = lab.docker("run", "--rm", "--entrypoint", "sh", TAG, "-c", "ls /data; ls /src 2>&1; id -u")
    assert done.stdout.split()[-1] == "1000"
    assert "No such file" in done.stdout  # the source tree is not left in the image
    help_text = subprocess.run(
        ["docker", "-H", lab.SOCKET, "run", "--rm", TAG], capture_output=True, text=True, timeout=WAIT_S
    ).stdout
    assert "distgray-master" in help_text and "FLASK_PORT" in help_text


UPLOAD = """
import json, sys, urllib.request
data = open(sys.argv[1], "rb").read()
body = (b"--XX\\r\\nContent-Disposition: form-data; name=\\"image\\"; filename=\\"photo.jpg\\"\\r\\n"
        b"Content-Type: image/jpeg\\r\\n\\r\\n" + data + b"\\r\\n--XX--\\r\\n")
req = urllib.request.Request("http://127.0.0.1:5006/api/jobs", data=body,
                             headers={"Content-Type": "multipart/form-data; boundary=XX"})
print(json.load(urllib.request.urlopen(req))["id"])
"""
STATUS = """
import json, urllib.request
s = json.load(urllib.request.urlopen("http://127.0.0.1:5006/api/status"))
print(json.dumps({"jobs": [j["state"] for j in s["jobs"]], "workers": [w["state"] for w in s["workers"]]}))
"""


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose not installed (apt-get install docker-compose)"
)
def test_compose_master_and_three_workers(engine: Engine, photo: Path, tmp_path: Path) -> None:
    """docker-compose.yml as shipped, on an internal network (the only change, by an override file)."""
    import json

    lab.docker("tag", TAG, "distgray:latest")
    override = tmp_path / "internal.yml"
    override.write_text("version: '3'\nnetworks:\n  default:\n    internal: true\n")
    env = {
        **os.environ,
        "DOCKER_HOST": lab.SOCKET,
        "DISTGRAY_TOKEN": "compose-token-0123456789",
        "FLASK_PORT": str(free_port()),
        "COMPOSE_PROJECT_NAME": "dgtest",
    }
    compose = ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "-f", str(override)]

    def run(*args: str) -> str:
        done = subprocess.run([*compose, *args], env=env, capture_output=True, text=True, timeout=WAIT_S * 3)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    try:
        run("up", "-d", "--no-build", "--scale", "worker=3")
        run("exec", "-T", "master", "sh", "-c", "true")
        container = run("ps", "-q", "master").strip()
        lab.docker("cp", str(photo), f"{container}:/tmp/photo.jpg")
        deadline = time.monotonic() + WAIT_S * 2

        def status() -> dict[str, list[str]]:
            out = subprocess.run(
                [*compose, "exec", "-T", "master", "python", "-c", STATUS], env=env, capture_output=True, text=True
            )
            return json.loads(out.stdout) if out.returncode == 0 else {"jobs": [], "workers": []}

        while status()["workers"].count("idle") < 3:
            assert time.monotonic() < deadline, status()
            time.sleep(1)
        assert run("exec", "-T", "master", "python", "-c", UPLOAD, "/tmp/photo.jpg").strip() == "1"
        while status()["jobs"] != ["done"]:
            assert time.monotonic() < deadline and "failed" not in status()["jobs"], status()
            time.sleep(0.5)
        lab.docker("cp", f"{container}:/data/results/photo_gray.jpg", str(tmp_path / "out.jpg"))
        assert (tmp_path / "out.jpg").read_bytes() == pillow_jpeg(photo)
        master_log = lab.docker("logs", container).stderr
        assert master_log.count("over TLS") >= 3, master_log  # workers in other containers: TLS
        assert "compose-token-0123456789" not in master_log  # the user's token is never printed
        ids = run("ps", "-q").split()
        run("stop", "--timeout", "20")  # SIGTERM to each container's PID 1
        codes = [engine.inspect(c, "{{.State.ExitCode}}") for c in ids]
        assert len(ids) == 4 and codes == ["0"] * 4, codes
    finally:
        subprocess.run([*compose, "down", "-v", "--timeout", "20"], env=env, capture_output=True, timeout=WAIT_S * 3)
