"""Where a job's pixels live: in a shared-memory segment that same-host workers read by
reference, or in private memory sent over TCP.

:class:`SharedPixels` owns the master's shared-memory probe (the secret a worker must read back
to prove it can see our ``/dev/shm``) and makes the buffers jobs put pixels in. No sockets or
threads; whether any live worker reads shared memory is the caller's to say.
"""

from __future__ import annotations

import hmac
import logging

from distgray.imaging.kernel import U8Array
from distgray.imaging.sparse import SparseRows
from distgray.net import shm

log = logging.getLogger(__name__)


class SharedPixels:
    """The probe (if shared memory is on and works here) and the buffers made with it."""

    def __init__(self) -> None:
        self.probe: shm.Probe | None = None

    def open(self, enabled: bool) -> None:
        if not enabled or not shm.available():
            return
        shm.sweep_stale()
        try:
            self.probe = shm.Probe()
        except OSError as exc:  # debug: before "listening on", and TCP works anyway
            log.debug("shared memory unavailable (%s): all pixels go over TCP", exc)

    def close(self) -> None:
        if self.probe is not None:
            self.probe.close()

    @property
    def offered(self) -> bool:
        return self.probe is not None

    def proves(self, answer: bytes, ok: bool) -> bool:
        """Whether a worker's SHM_ANSWER shows it read our probe (constant-time comparison)."""
        return self.probe is not None and ok and hmac.compare_digest(answer, self.probe.secret)

    def buffer(
        self, shape: tuple[int, ...], wanted: bool, sparse: bool = False
    ) -> tuple[U8Array, shm.Segment | SparseRows | None]:
        """An uninitialised uint8 array of ``shape``: in a new shared-memory segment if ``wanted``
        and this master offers shared memory, else in private memory. The caller closes the
        segment when the job is over.

        ``sparse`` (a streamed job): the array only takes memory for the rows committed and not
        yet released (see :mod:`distgray.imaging.sparse`); the store that does so is returned."""
        return shm.buffer(shape, wanted and self.probe is not None, sparse)
