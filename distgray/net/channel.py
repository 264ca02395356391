"""Framed send/receive over one TCP socket, with zero-copy payloads; connect and listen.

A :class:`Channel` wraps one connected TCP socket. Sending writes prefix+header, then the payload
straight from the caller's memoryview. Receiving reads and validates the prefix and header with
``protocol`` *before* allocating or reading anything they announce, then lands the payload with
``recv_into`` in a buffer the caller chooses (for results: their rows of the output array).

Every blocking call has a timeout. Any socket failure becomes :class:`PeerDisconnected`, chained
to the OSError behind it; protocol violations are :class:`ProtocolError`. Both concern this one
connection only.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from distgray.errors import (
    PeerDisconnected,
    PeerTimeout,
    ProtocolError,
    RemoteError,
)
from distgray.net.tls import ClientTLS, TlsSocket
from distgray.wire import protocol as P

log = logging.getLogger(__name__)

#: Largest slice handed to one send() call; the timeout applies per slice, so a slow but
#: moving link is not mistaken for a dead one, while a stalled one is caught.
SEND_CHUNK_BYTES = 1 << 20

Buffer = bytes | bytearray | memoryview
#: Given a decoded message with a payload, return the writable buffer it must land in
#: (exactly ``payload_len`` bytes), or None to receive it into a fresh buffer.
PayloadSink = Callable[[P.Message], memoryview | None]


class Channel:
    """One framed, bidirectional connection. Sends are serialized by a lock; receive from one thread.

    ``max_payload`` caps any payload this side will receive. It starts at 0: until the handshake
    is done no frame may carry pixels, so an unauthenticated peer cannot make us allocate anything
    beyond one header. Each side raises it once it knows what it will accept.
    """

    def __init__(self, sock: socket.socket | TlsSocket, *, peer: str, timeout: float, max_payload: int = 0) -> None:
        self.sock = sock
        self.peer = peer
        self.max_payload = max_payload
        self._send_lock = threading.Lock()
        self._prefix = bytearray(P.PREFIX_BYTES)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.last_send = self.last_recv = time.monotonic()
        self.closed = False
        self.secure = isinstance(sock, TlsSocket)  # TLS: encrypted and integrity-checked
        sock.settimeout(timeout)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def settimeout(self, timeout: float) -> None:
        # Another thread may have closed the socket; the next send or receive reports that.
        with contextlib.suppress(OSError):
            self.sock.settimeout(timeout)

    # ------------------------------------------------------------------ sending
    def send(self, message: P.Message, payload: Buffer | None = None) -> int:
        """Send one frame; ``payload`` goes out without a copy. Returns the bytes written."""
        body = memoryview(payload).cast("B") if payload is not None else None
        head = P.encode_frame(message, len(body) if body is not None else 0)
        with self._send_lock:
            self._send_all(memoryview(head))
            if body is not None and len(body):
                self._send_all(body)
            self.last_send = time.monotonic()
        n = len(head) + (len(body) if body is not None else 0)
        self.bytes_sent += n
        return n

    def _send_all(self, view: memoryview) -> None:
        pos = 0
        try:
            while pos < len(view):
                pos += self.sock.send(view[pos : pos + SEND_CHUNK_BYTES])
        except TimeoutError as exc:
            raise PeerTimeout(f"{self.peer}: send stalled for {self.sock.gettimeout()} s", mid_frame=True) from exc
        except OSError as exc:
            raise PeerDisconnected(f"{self.peer}: send failed: {exc}", mid_frame=pos > 0) from exc

    # ------------------------------------------------------------------ receiving
    def recv(self, sink: PayloadSink | None = None) -> tuple[P.Message, memoryview | None]:
        """Receive one frame. Raises PeerDisconnected, or ProtocolError for a bad frame."""
        prefix = memoryview(self._prefix)
        self._recv_exactly(prefix, first=True)
        info = P.decode_prefix(bytes(prefix), self.max_payload)
        header = bytearray(info.header_len)  # <= MAX_HEADER_BYTES, checked above
        self._recv_exactly(memoryview(header))
        message = P.decode_message(info, bytes(header))
        payload: memoryview | None = None
        if info.payload_len:
            payload = sink(message) if sink is not None else None
            if payload is None:
                payload = memoryview(bytearray(info.payload_len))  # within max_payload
            elif payload.nbytes != info.payload_len:
                raise ValueError("payload sink returned a buffer of the wrong size")
            self._recv_exactly(payload.cast("B"))
        self.last_recv = time.monotonic()
        self.bytes_received += P.PREFIX_BYTES + info.header_len + info.payload_len
        return message, payload

    def _recv_exactly(self, view: memoryview, first: bool = False) -> None:
        pos = 0
        try:
            while pos < len(view):
                n = self.sock.recv_into(view[pos:])
                if n == 0:
                    inside = not (first and pos == 0)
                    where = "inside a frame" if inside else "between frames"
                    raise PeerDisconnected(f"{self.peer}: connection closed {where}", mid_frame=inside)
                pos += n
        except TimeoutError as exc:
            raise PeerTimeout(
                f"{self.peer}: silent for {self.sock.gettimeout()} s", mid_frame=pos > 0 or not first
            ) from exc
        except OSError as exc:
            raise PeerDisconnected(f"{self.peer}: receive failed: {exc}", mid_frame=True) from exc

    def expect(self, kind: type[Any]) -> Any:
        """Receive one payload-less frame of type ``kind``.

        An ERROR becomes RemoteError with its code; a BYE (a master shutting down may send one
        at any point) becomes RemoteError with code SHUTTING_DOWN.
        """
        message, _ = self.recv()
        if isinstance(message, P.Error):
            raise RemoteError(f"{self.peer}: {message.message}", message.code)
        if isinstance(message, P.Bye) and kind is not P.Bye:
            raise RemoteError(f"{self.peer} said bye: {message.reason}", P.ErrorCode.SHUTTING_DOWN)
        if not isinstance(message, kind):
            raise ProtocolError(f"{self.peer}: expected {kind.__name__}, got {type(message).__name__}")
        return message

    def half_close(self) -> None:
        """Stop sending (the peer reads end-of-stream after what we sent); keep receiving.

        Not over TLS: a TCP half-close there would cut TLS records short; the peer's answer to
        our BYE (its hang-up) ends the conversation instead."""
        if self.secure:
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Close the socket; a thread blocked in recv on it wakes with PeerDisconnected."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def connect(host: str, port: int, *, timeout: float, tls: ClientTLS | None = None) -> Channel:
    """Open a TCP connection to a master, over TLS if ``tls`` says how to check it.

    Raises PeerDisconnected when it cannot, AuthenticationError when the master is not the one
    pinned (or the CA does not vouch for it)."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise PeerDisconnected(f"cannot connect to {host}:{port}: {exc}") from exc
    if tls is None:
        return Channel(sock, peer=f"master {host}:{port}", timeout=timeout)
    try:
        secure = tls.wrap(sock, host)
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise PeerDisconnected(f"{host}:{port}: TLS handshake failed: {exc}") from exc
    except BaseException:
        sock.close()
        raise
    return Channel(secure, peer=f"master {host}:{port}", timeout=timeout)


def listen(host: str, port: int, backlog: int = 64) -> socket.socket:
    """A listening socket; port 0 picks a free port (read it back with getsockname)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    return sock
