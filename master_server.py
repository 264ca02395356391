#!/usr/bin/env python3
"""distgray master: see `python master_server.py --help` and README.md."""

import sys

from distgray.cli.master import master_main

if __name__ == "__main__":
    sys.exit(master_main())
