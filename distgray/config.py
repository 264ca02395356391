"""Every default distgray applies, in one place, and the one way a default token is made.

Standard library only: the command line parses its flags, binds its port and forks local workers
before NumPy and Pillow are loaded, so the workers' start-up overlaps the master's. The modules
that apply a setting import its default from here; ``--help`` shows the same figures.
"""

from __future__ import annotations

import secrets

# ---------------------------------------------------------------- network
DEFAULT_HOST = "0.0.0.0"  # the master listens on every interface when remote workers may join
LOCAL_HOST = "127.0.0.1"  # ... and on loopback only when all its workers are its own (--local-workers)
DEFAULT_WORKER_HOST = "127.0.0.1"  # where a worker looks for its master
DEFAULT_PORT = 5003  # env MASTER_PORT
DEFAULT_DASHBOARD_HOST = "127.0.0.1"  # the page is this machine's only, unless asked
DEFAULT_DASHBOARD_PORT = 5006  # env FLASK_PORT
HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TIMEOUT_S = 20.0
#: The whole handshake (TLS included) must be over this long after the connection is accepted.
HANDSHAKE_TIMEOUT_S = 10.0
#: Tasks a worker may hold at once: one computing, one arriving.
PREFETCH = 2
#: Connections allowed to be mid-handshake at once.
MAX_HANDSHAKES = 64
#: ... of which one peer address may hold this many (loopback, the master's own workers, excepted).
MAX_HANDSHAKES_PER_HOST = 8
#: After accept() fails (out of file descriptors, say) the master waits this long, doubling, up to the cap.
ACCEPT_BACKOFF_S = 0.05
ACCEPT_BACKOFF_CAP_S = 1.0
#: A worker lost (not departed) this many times is kept from work for a while, doubling each time.
QUARANTINE_AFTER_LOSSES = 2
QUARANTINE_BASE_S = 2.0
QUARANTINE_CAP_S = 60.0
#: Rows of every strip the master recomputes from the source and compares (0: trust the workers).
VERIFY_ROWS = 2
#: How long a worker's SHM_ANSWER may take before it is taken as "no".
SHM_ANSWER_S = 2.0
#: On shutdown, how long a worker may take to hang up after our BYE.
CLOSE_GRACE_S = 2.0
#: A worker keeps trying to reach its master this long before giving up.
WORKER_RETRY_FOR_S = 60.0
#: Local workers the master starts retry for this long (they start before the master listens).
LOCAL_WORKER_RETRY_FOR_S = 10.0
#: Bytes of random token made when none is given (32 hex digits: cannot start with "-").
TOKEN_BYTES = 16
#: Tokens shorter than this are refused unless asked for (``--allow-weak-token``).
MIN_TOKEN_CHARS = 16
#: --engine dask: how long to try reaching the scheduler at --scheduler-address.
DASK_CONNECT_TIMEOUT_S = 10.0

# ---------------------------------------------------------------- images
#: Pillow's own decompression-bomb threshold; ``--max-pixels`` raises it.
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_JPEG_QUALITY = 95
DEFAULT_PNG_LEVEL = 6  # zlib level; Pillow's default
#: Memory the master may give one image's pixels (RGB in, gray out). A larger image streams
#: through a window of this size when its format can be read and written in bands.
DEFAULT_WINDOW_MB = 256
#: Batches: images up to this many pixels go to one worker whole (24 MP: a 6K photo; 8K goes in strips).
WHOLE_FILE_MAX_PIXELS = 24_000_000

# ---------------------------------------------------------------- jobs and the page
DEFAULT_OUTPUT_DIR = "results"
MAX_UPLOAD_MB = 512
#: Serve mode keeps uploads and their outputs within this budget; the oldest go first.
KEEP_UPLOADS_MB = 2048
KEEP_UPLOADS_HOURS = 24.0
#: The status page's server: connections at once, and how long an idle one may stay.
PAGE_CONNECTION_LIMIT = 64
PAGE_CHANNEL_TIMEOUT_S = 30
THUMBNAIL_SIDE = 480


def new_token() -> str:
    """A fresh random worker token (when ``--token`` and ``DISTGRAY_TOKEN`` give none)."""
    return secrets.token_hex(TOKEN_BYTES)
