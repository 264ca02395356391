#!/usr/bin/env python3
"""distgray master: see `python master_server.py --help` and README.md."""

from distgray.cli.master import master_command

if __name__ == "__main__":
    master_command()
