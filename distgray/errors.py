"""The one error hierarchy of distgray.

Every error a peer, an input file or a job can cause derives from :class:`DistgrayError`,
so a caller can catch "anything distgray reports" in one place and print a one-line reason.
A *caller's* mistake (a negative size, a wrong type) is a plain ``ValueError``/``TypeError``
instead: those are bugs, not conditions to report.
"""

from __future__ import annotations


class DistgrayError(Exception):
    """Base class of every error distgray reports to its user."""


class ProtocolError(DistgrayError):
    """The peer sent bytes that break the wire protocol; that one connection is closed."""


class NotDistgray(ProtocolError):
    """The peer's first bytes are not a distgray frame at all (an HTTP server, say)."""

    def __init__(self, message: str, first_bytes: bytes) -> None:
        super().__init__(message)
        self.first_bytes = first_bytes


class VersionMismatch(ProtocolError):
    """The peer speaks another protocol version."""

    def __init__(self, message: str, version: int) -> None:
        super().__init__(message)
        self.version = version


class PeerDisconnected(DistgrayError):
    """The peer closed the connection, or the network failed under it.

    ``mid_frame`` tells a clean hang-up *between* frames from one *inside* a frame,
    which is the difference between "the peer left" and "the peer broke".
    """

    def __init__(self, message: str, *, mid_frame: bool = False) -> None:
        super().__init__(message)
        self.mid_frame = mid_frame


class PeerTimeout(PeerDisconnected):
    """The peer went silent: nothing arrived, or nothing could be sent, within the timeout."""


class AuthenticationError(DistgrayError):
    """The shared-token handshake failed (wrong token, or the peer refused ours)."""


class RemoteError(DistgrayError):
    """The peer sent an ERROR frame; ``code`` is its protocol error code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class ImageError(DistgrayError):
    """An input image cannot be read or converted, or an output cannot be written."""


class TaskFailed(DistgrayError):
    """A strip failed on too many workers, or a job could not finish."""
