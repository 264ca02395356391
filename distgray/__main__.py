"""``python -m distgray master|worker [flags]``: the same commands as the two top-level scripts.

``python -m distgray health`` is the container health check."""

from __future__ import annotations

import sys

from distgray.cli.master import health_main, master_main, worker_main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"master": master_main, "worker": worker_main, "health": health_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m distgray {master,worker,health} [--help]", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
