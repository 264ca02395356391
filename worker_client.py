#!/usr/bin/env python3
"""distgray worker: see `python worker_client.py --help` and README.md."""

from distgray.cli.master import worker_command

if __name__ == "__main__":
    worker_command()
