"""What the master's and the worker's command lines share: env fallbacks, flag types, logging.

Precedence everywhere: command-line flag > environment variable > documented default.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
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


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
    )


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
