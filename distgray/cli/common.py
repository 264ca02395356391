"""What the master's and the worker's command lines share: env fallbacks, flag types, logging.

Precedence everywhere: command-line flag > environment variable > documented default.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

from distgray import config as D

DEFAULT_PORT = D.DEFAULT_PORT
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_DASHBOARD_PORT = D.DEFAULT_DASHBOARD_PORT


def env_value(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        if env.get(name):
            return env[name]
    return None


#: C0 controls, DEL and C1 controls: escaped in every log line, so that a name or id chosen by a
#: peer (an upload's file name, a worker's id) cannot write newlines or terminal escapes.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    """``text`` with control characters as ``\\xNN`` (for one-line messages to a terminal)."""
    return text.translate(_CONTROLS)


class EscapingFormatter(logging.Formatter):
    """Formats as usual, then escapes control characters (tracebacks keep their own lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger()
    if not any(getattr(h, "distgray", False) for h in root.handlers):
        handler.distgray = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


def read_token(flag: str | None, flag_file: str | None, env: Mapping[str, str]) -> str | None:
    """The worker token: ``--token``, else ``--token-file``, else DISTGRAY_TOKEN, else
    DISTGRAY_TOKEN_FILE (a file keeps the token out of ``ps``). Raises ValueError for an
    unreadable or empty file."""
    if flag:
        return flag
    path = flag_file or (None if env.get("DISTGRAY_TOKEN") else env.get("DISTGRAY_TOKEN_FILE"))
    if not path:
        return env.get("DISTGRAY_TOKEN") or None
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise ValueError(f"token file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


def positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def throttle(text: str) -> float:
    value = float(text)
    if not 1.0 <= value <= 1000.0:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000, got {text}")
    return value


def port_number(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {text}")
    return value


def env_default(
    parser: argparse.ArgumentParser, env: Mapping[str, str], names: tuple[str, ...], convert: Any, fallback: Any
) -> Any:
    raw = env_value(env, *names)
    if raw is None:
        return fallback
    try:
        return convert(raw)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(f"environment variable {names[0]}={raw!r}: {exc}")


def exit_with(main: Callable[[], int]) -> None:
    """``sys.exit(main())`` for a command: once ``main`` has returned (its files written, its
    sockets and threads closed), the objects still alive are frozen out of the garbage collector,
    so the interpreter's final collections skip them: with Dask's modules loaded those
    collections were a visible part of a short run. Nothing else changes (the process ends)."""
    code = main()
    gc.freeze()
    sys.exit(code)
