"""The master encodes a plain RESULT itself when the worker cannot encode strips: with an
operation chain too, the same way as without one (a TIFF's strips keep the job's RowsPerStrip)."""

from __future__ import annotations

import numpy as np

from distgray.imaging import stripcodec
from distgray.imaging.encoded import Encoding
from distgray.master.books import Job
from distgray.master.tasks import encode_here
from distgray.scheduling.strips import Policy
from distgray.wire import protocol as P


def test_a_chain_job_is_encoded_here_with_the_jobs_tiff_strips() -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (32, 20, 3), dtype=np.uint8)
    encoding = Encoding("TIFF", 6, 8)  # 8 rows per TIFF strip
    job = Job(1, "t", pixels, Policy(), 16, encoding=encoding, ops="blur")
    job.output[:16] = np.arange(16 * 20, dtype=np.uint8).reshape(16, 20)  # the chain's rows, as a worker sent them
    piece = encode_here(job, P.Result(1, 0, 0, 16, 20))
    want = stripcodec.encode(job.output[:16], "TIFF", 6, row_start=0, last=False, tiff_rows=8)
    assert piece is not None and piece.data == want.data
