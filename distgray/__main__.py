"""``python -m distgray master|worker [flags]``: the same commands as the two top-level scripts.

``python -m distgray health`` is the container health check."""

from __future__ import annotations

from distgray.cli.master import module_command

if __name__ == "__main__":
    module_command()
