#!/usr/bin/env python3
"""A private Docker engine for building and running distgray's image on a machine without a registry.

    python utils/docker_lab.py up        # start the engine, prepare python:3.11-slim, build distgray:lab
    python utils/docker_lab.py down      # stop the engine (the cache stays)

The engine never touches the host's firewall or default bridge (``--iptables=false
--ip-forward=false --ip-masq=false --bridge=none``) and keeps everything under its own data root
and socket, so containers use host networking. No registry is reachable here, so the
``python:3.11-slim`` base is made locally: ``debootstrap`` of Debian bookworm with Python 3.11, venv,
pip and CA certificates, ``docker import``-ed under that tag and cached with the engine's data
(``/var/cache/distgray-docker``). The image itself builds from the project's ordinary Dockerfile;
dependencies come from wheels made on this machine (``pip wheel``) in the build context, since
pip inside the build cannot reach PyPI here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DISTGRAY_DOCKER_CACHE", "/var/cache/distgray-docker"))
SOCKET = "unix:///run/distgray-docker.sock"
BASE = "python:3.11-slim"
IMAGE = "distgray:lab"
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "distgray")


def unavailable_reason() -> str | None:
    """Why this machine cannot run the lab, or None."""
    if os.geteuid() != 0:
        return "needs root (to run a Docker engine)"
    for tool in ("dockerd", "docker", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install docker.io debootstrap)"
    return None


def docker(
    *args: str, check: bool = True, capture: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "-H", SOCKET, *args], check=check, capture_output=capture, text=True, timeout=timeout
    )


def engine_up(timeout: float = 60) -> bool:
    """Start the private engine unless it runs. Returns True if this call started it."""
    if docker("info", check=False).returncode == 0:
        return False
    CACHE.mkdir(parents=True, exist_ok=True)
    log = open(CACHE / "dockerd.log", "ab")  # noqa: SIM115 - the engine outlives this function
    subprocess.Popen(
        [
            "dockerd",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--bridge=none",
            f"--data-root={CACHE / 'data'}",
            "--exec-root=/run/distgray-docker",
            "--pidfile=/run/distgray-docker.pid",
            f"-H={SOCKET}",
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while docker("info", check=False).returncode != 0:
        if time.monotonic() > deadline:
            tail = (CACHE / "dockerd.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"dockerd did not start within {timeout:.0f} s: {' | '.join(tail)}")
        time.sleep(0.5)
    return True


def engine_down() -> None:
    pidfile = Path("/run/distgray-docker.pid")
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    subprocess.run(["kill", str(pid)], check=False)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)


def base_image() -> None:
    """``python:3.11-slim`` from debootstrap, unless the engine already has it."""
    if docker("image", "inspect", BASE, check=False).returncode == 0:
        return
    rootfs = CACHE / "rootfs"
    if not (rootfs / "usr" / "bin" / "python3").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,python3-pip,ca-certificates",
                "bookworm",
                str(rootfs),
                "http://deb.debian.org/debian",
            ],
            check=True,
            capture_output=True,
            timeout=1800,
        )
    python = rootfs / "usr" / "local" / "bin" / "python"  # where the official image has it
    if not python.exists():
        python.symlink_to("/usr/bin/python3")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(
        ["docker", "-H", SOCKET, "import", "--change", 'CMD ["python3"]', "-", BASE],
        stdin=tar.stdout,
        check=True,
        capture_output=True,
        timeout=600,
    )
    tar.wait()


def build_image(context: Path, tag: str = IMAGE) -> float:
    """Copy the build context, add wheels made here, build offline. Returns the build seconds."""
    if context.exists():
        shutil.rmtree(context)
    context.mkdir(parents=True)
    for name in CONTEXT_FILES:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, context / name)
    wheels = context / "wheelhouse"  # distgray's dependencies, and setuptools to build it
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(ROOT), "setuptools>=68"],
        check=True,
        capture_output=True,
        timeout=900,
    )
    t0 = time.monotonic()
    docker(
        "build", "--network", "host", "--build-arg", "PIP_INSTALL_ARGS=--no-index", "-t", tag, str(context),
        timeout=1800,
    )  # fmt: skip
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args(argv)
    if args.action == "down":
        engine_down()
        return 0
    reason = unavailable_reason()
    if reason:
        parser.error(reason)
    engine_up()
    base_image()
    seconds = build_image(CACHE / "context")
    print(f"{IMAGE} built in {seconds:.1f} s; use: docker -H {SOCKET} run --network host {IMAGE} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
