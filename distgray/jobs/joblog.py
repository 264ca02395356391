"""Reading job logs: ``python -m distgray jobs LOG|FOLDER ...`` prints what they say.

A job log is JSON lines, one record a file and attempt (``distgray-log.jsonl`` in a batch's
output folder; ``distgray-log-task-I-of-N.jsonl`` for indexed tasks). The record fields: ``time``,
``input``, ``output``, ``status`` (converted, skipped, failed), ``error`` or ``note``, ``unit``
(file or strips), ``width``, ``height``, ``bytes_in``, ``bytes_out``, ``worker``, ``seconds``, and
for a converted file ``input_size``, ``input_mtime_ns``, ``input_sha256``, ``output_state``,
``options``. Lines that are not JSON objects (cut short by a crash) are counted and skipped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from distgray.jobs import provenance
from distgray.storage.places import Place


@dataclass
class Summary:
    logs: list[Place] = field(default_factory=list)
    records: int = 0
    unreadable_lines: int = 0
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)  # input -> its last record

    def status_counts(self) -> Counter[str]:
        return Counter(str(r.get("status")) for r in self.latest.values())

    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.latest.values() if r.get("status") == "failed"]

    def lines(self) -> list[str]:
        counts = self.status_counts()
        converted = [r for r in self.latest.values() if r.get("status") == "converted"]
        mb_in = sum(r.get("bytes_in") or 0 for r in converted) / 1e6
        mb_out = sum(r.get("bytes_out") or 0 for r in converted) / 1e6
        busy = sum(r.get("seconds") or 0.0 for r in converted)
        workers = Counter(str(r.get("worker")) for r in converted if r.get("worker"))
        out = [
            f"logs       {', '.join(str(p) for p in self.logs)}",
            f"records    {self.records} ({self.unreadable_lines} unreadable lines skipped)",
            f"inputs     {len(self.latest)}: {counts.get('converted', 0)} converted,"
            f" {counts.get('skipped', 0)} skipped, {counts.get('failed', 0)} failed (each input's last record)",
            f"bytes      {mb_in:.1f} MB in, {mb_out:.1f} MB out; {busy:.2f} s of conversion",
        ]
        if workers:
            out.append("workers    " + ", ".join(f"{w} {n}" for w, n in sorted(workers.items())))
        out += [f"failed     {r.get('input')}: {r.get('error') or 'failed'}" for r in self.failed()]
        return out


def logs_of(paths: list[Place]) -> list[Place]:
    """The logs named, a folder standing for the job logs in it (local, or behind a URL).
    FileNotFoundError for a path that is neither."""
    found: list[Place] = []
    for path in paths:
        if path.is_dir():
            found += provenance.logs_in(path)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such job log or folder")
    return found


def summarize(logs: list[Place]) -> Summary:
    summary = Summary(logs=logs)
    for log in logs:
        for record in provenance.records(log):
            if record is None or "input" not in record:
                summary.unreadable_lines += 1
                continue
            summary.records += 1
            key = str(record["input"])
            seen = summary.latest.get(key)
            if seen is None or str(record.get("time", "")) >= str(seen.get("time", "")):
                summary.latest[key] = record  # the later record wins; in one second, the later line
    return summary
