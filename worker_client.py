#!/usr/bin/env python3
"""distgray worker: see `python worker_client.py --help` and README.md."""

import sys

from distgray.cli.master import worker_main

if __name__ == "__main__":
    sys.exit(worker_main())
