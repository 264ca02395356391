"""Who may start a handshake now: a cap on pending handshakes in all, and per peer address.

Pure and thread-agnostic (the master calls it under its lock). A flood of connections that never
finish their handshake must cost neither a thread each nor every slot: past the total cap new
ones are turned away at once, and one address may hold only ``per_host`` of the slots, so a
single misbehaving host cannot lock the others out. Loopback is not capped per address: the
master's own local workers all come from it, at once.
"""

from __future__ import annotations

from collections import Counter

from distgray.net.tls import is_loopback


class Admission:
    def __init__(self, total: int, per_host: int) -> None:
        if total < 1 or per_host < 1:
            raise ValueError("handshake caps must be at least 1")
        self.total, self.per_host = total, per_host
        self.pending: Counter[str] = Counter()

    def admit(self, host: str) -> str | None:
        """Take a slot for a connection from ``host``; None if taken, else why it is refused."""
        if sum(self.pending.values()) >= self.total:
            return f"{self.total} handshakes already pending"
        if not is_loopback(host) and self.pending[host] >= self.per_host:
            return f"{self.per_host} handshakes already pending from {host}"
        self.pending[host] += 1
        return None

    def release(self, host: str) -> None:
        self.pending[host] -= 1
        if self.pending[host] <= 0:
            del self.pending[host]
