"""A finished job for people and scripts: the terminal summary, and the ``--report`` JSON file.

Both come from the same dict (the engine's ``report(job)``), so the table a person reads and the
file a script reads agree.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def silent(text: str) -> None:
    """Where summary lines go when nobody is at a terminal (the command line passes ``print``)."""


def format_summary(report: dict[str, Any]) -> str:
    lines = [
        f"image      {report['name']}: {report['width']}x{report['height']}"
        f" ({report['width'] * report['height'] / 1e6:.1f} MP)",
        f"strips     {report['strips']}, {len(report['requeued'])} requeued, {len(report['backups'])} backup copies",
        f"wall time  {report['wall_s']:.3f} s distributed"
        + (
            f" (+ load {report['load_s']:.3f} s, save {report['save_s']:.3f} s) = {report['total_s']:.3f} s end to end"
            if "total_s" in report
            else ""
        ),
    ]
    if report.get("ops"):
        lines.append(f"operations {report['ops']}")
    if report.get("output"):
        lines.append(f"output     {report['output']}")
    header = (
        f"{'worker':<24} {'state':<5} {'strips':>6} {'rows':>7} {'MB in':>8} {'MB out':>8} {'busy s':>8}"
        f" {'rows/s':>9} {'speed':>9}"
    )
    lines += ["", header, "-" * len(header)]
    for wid, w in sorted(report["workers"].items()):
        rate = f"{w['rows_per_s']:.0f}" if w["rows_per_s"] else "-"
        speed = f"{w['speed_rows_per_s']:.0f}" if w.get("speed_rows_per_s") else "-"
        mark = "*" if w.get("shared_memory") else " "
        lines.append(
            f"{wid[:24]:<24} {w['state'][:5]:<5} {w['strips']:>6} {w['rows']:>7} {w['bytes_in'] / 1e6:>7.1f}{mark}"
            f" {w['bytes_out'] / 1e6:>8.1f} {w['busy_s']:>8.3f} {rate:>9} {speed:>9}"
        )
    lines.append(
        "(MB in: task bytes sent to the worker, * pixels read from shared memory instead; MB out: result bytes it"
        " returned;\n busy s: its receive + compute (+ encode) time; rows/s: rows / busy s; speed: the scheduler's"
        " estimate,\n rows/s including transfer both ways)"
    )
    for r in report["requeued"]:
        lines.append(f"requeued   strip {r['strip']} from {r['worker']}: {r['reason']}")
    return "\n".join(lines)


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
