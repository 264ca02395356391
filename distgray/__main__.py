"""``python -m distgray master|worker [flags]``: the same commands as the two top-level scripts.

``python -m distgray health`` is the container health check."""

from __future__ import annotations

import sys

from distgray.cli.master import module_main

if __name__ == "__main__":
    sys.exit(module_main())
