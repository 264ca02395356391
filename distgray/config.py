"""Every default distgray applies, in one place, and the one way a default token is made.

Standard library only: the command line parses its flags, binds its port and forks local workers
before NumPy and Pillow are loaded, so the workers' start-up overlaps the master's. The modules
that apply a setting import its default from here; ``--help`` shows the same figures.
"""

from __future__ import annotations

import secrets

# ---------------------------------------------------------------- network
DEFAULT_HOST = "0.0.0.0"  # the master listens on every interface
DEFAULT_WORKER_HOST = "127.0.0.1"  # where a worker looks for its master
DEFAULT_PORT = 5003  # env MASTER_PORT
DEFAULT_DASHBOARD_HOST = "127.0.0.1"  # the page is this machine's only, unless asked
DEFAULT_DASHBOARD_PORT = 5006  # env FLASK_PORT
HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TIMEOUT_S = 20.0
HANDSHAKE_TIMEOUT_S = 10.0
#: Tasks a worker may hold at once: one computing, one arriving.
PREFETCH = 2
#: Connections allowed to be mid-handshake at once.
MAX_HANDSHAKES = 64
#: How long a worker's SHM_ANSWER may take before it is taken as "no".
SHM_ANSWER_S = 2.0
#: On shutdown, how long a worker may take to hang up after our BYE.
CLOSE_GRACE_S = 2.0
#: A worker keeps trying to reach its master this long before giving up.
WORKER_RETRY_FOR_S = 60.0
#: Local workers the master starts retry for this long (they start before the master listens).
LOCAL_WORKER_RETRY_FOR_S = 10.0
#: Bytes of random token made when none is given (24 URL-safe characters).
TOKEN_BYTES = 18

# ---------------------------------------------------------------- images
#: Pillow's own decompression-bomb threshold; ``--max-pixels`` raises it.
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_JPEG_QUALITY = 95
DEFAULT_PNG_LEVEL = 6  # zlib level; Pillow's default
#: Batches: images up to this many pixels go to one worker whole (24 MP: a 6K photo; 8K goes in strips).
WHOLE_FILE_MAX_PIXELS = 24_000_000

# ---------------------------------------------------------------- jobs and the page
DEFAULT_OUTPUT_DIR = "results"
MAX_UPLOAD_MB = 512
THUMBNAIL_SIDE = 480


def new_token() -> str:
    """A fresh random worker token (when ``--token`` and ``DISTGRAY_TOKEN`` give none)."""
    return secrets.token_urlsafe(TOKEN_BYTES)
