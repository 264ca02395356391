#!/usr/bin/env python3
"""A multi-host lab on one Linux machine: network namespaces joined by a bridge, one per "host".

    sudo python utils/netlab.py up --hosts 3        # hosts h0 (10.231.77.1), h1 (.2), h2 (.3)
    sudo ip netns exec dglab-h0 python master_server.py --image ... --host 10.231.77.1
    sudo ip netns exec dglab-h1 python worker_client.py --host 10.231.77.1 --token ...
    sudo python utils/netlab.py cut h1              # unplug a host's cable (link down)
    sudo python utils/netlab.py down                # remove everything the lab made

Each host is a namespace with its own loopback and one veth "cable" to a bridge that lives in a
namespace of its own, so nothing touches the machine's real interfaces, routes or firewall, and
only addresses inside 10.231.77.0/24 are used. Needs root and iproute2. The system tests use
the :class:`Lab` class directly.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence

SUBNET = "10.231.77"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class Lab:
    """Namespaces ``<prefix>-h0``..``-h<n-1>`` on a bridge in ``<prefix>-br``; ``close()`` removes them."""

    def __init__(self, hosts: int, prefix: str = "dglab") -> None:
        if not 1 <= hosts <= 50:
            raise ValueError("hosts must be 1..50")
        self.prefix = prefix
        self.names = [f"h{i}" for i in range(hosts)]
        self.bridge_ns = f"{prefix}-br"

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        return f"{SUBNET}.{self.names.index(host) + 1}"

    def _veth(self, host: str, side: str) -> str:
        return f"{self.prefix[:8]}{side}{self.names.index(host)}"  # <= 15 characters

    def up(self) -> Lab:
        try:
            _ip("netns", "add", self.bridge_ns)
            _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
            for host in self.names:
                ns, cable, port = self.ns(host), self._veth(host, "c"), self._veth(host, "p")
                _ip("netns", "add", ns)
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("link", "add", cable, "netns", ns, "type", "veth", "peer", "name", port, "netns", self.bridge_ns)
                _ip("-n", ns, "link", "set", cable, "name", "eth0")
                _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", self.bridge_ns, "link", "set", port, "master", "br0")
                _ip("-n", self.bridge_ns, "link", "set", port, "up")
        except (subprocess.CalledProcessError, OSError):
            self.close()
            raise
        return self

    def cut(self, host: str) -> None:
        """Unplug a host: its cable goes down at the bridge; its processes keep running."""
        _ip("-n", self.bridge_ns, "link", "set", self._veth(host, "p"), "down")

    def restore(self, host: str) -> None:
        _ip("-n", self.bridge_ns, "link", "set", self._veth(host, "p"), "up")

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def close(self) -> None:
        for ns in [self.ns(h) for h in self.names] + [self.bridge_ns]:
            _ip("netns", "del", ns, check=False)  # deleting a namespace removes its veth ends

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.close()


def unavailable_reason() -> str | None:
    """Why a lab cannot be built here, or None if it can."""
    import os

    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    probe = f"dgprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    _ip("netns", "del", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--hosts", type=int, default=3)
    for name in ("cut", "restore"):
        sub.add_parser(name).add_argument("host")
    down = sub.add_parser("down")
    down.add_argument("--hosts", type=int, default=50)
    args = parser.parse_args(argv)
    if args.cmd == "up":
        lab = Lab(args.hosts).up()
        for h in lab.names:
            print(f"{lab.ns(h)}: {lab.address(h)}   (run: ip netns exec {lab.ns(h)} <command>)")
    elif args.cmd == "down":
        Lab(args.hosts).close()
    else:
        getattr(Lab(50), args.cmd)(args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
