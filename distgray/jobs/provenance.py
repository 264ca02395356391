"""Whether an existing output may be reused: the job log says it was made from this very input.

Every converted output gets a line in the job log of its folder (``distgray-log.jsonl``) naming
its input's size, modification time and SHA-256, and the options that shape the output bytes.
A later run reuses the output only if the log's latest record for it matches all of them (the
hash is computed only when size and time already match); anything else, an output made by
another tool or by an older distgray included, is converted again. One rule for one image and
for many.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

LOG_NAME = "distgray-log.jsonl"
#: Every job log of a folder: the batch's own and each indexed task's (``distgray-log-task-I-of-N.jsonl``).
LOG_GLOB = "distgray-log*.jsonl"


def task_log_name(index: int, count: int) -> str:
    """The job log of task ``index`` of ``count`` (one a task, so tasks never write one file)."""
    return LOG_NAME if count == 1 else f"distgray-log-task-{index}-of-{count}.jsonl"


def logs_in(folder: Path) -> list[Path]:
    """The job logs in ``folder`` (the batch's, and those of indexed tasks, whatever their count)."""
    try:
        return sorted(folder.glob(LOG_GLOB))
    except OSError:
        return []


_HASH_CHUNK = 1 << 20


def log_path(output: Path) -> Path:
    """The job log of a single image's output (a batch's is in its output folder)."""
    return output.parent / LOG_NAME


def fingerprint(source: Path, with_hash: bool = True) -> dict[str, Any]:
    """The input as the log records it: size, mtime (ns) and, unless asked not to, its SHA-256."""
    st = source.stat()
    found: dict[str, Any] = {"input_size": st.st_size, "input_mtime_ns": st.st_mtime_ns}
    if with_hash:
        digest = hashlib.sha256()
        with open(source, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
        found["input_sha256"] = digest.hexdigest()
    return found


def latest(log: Path, output: Path) -> dict[str, Any] | None:
    """The last record of ``output`` being converted in the job log ``log`` (skips and failures
    since do not change what made the file)."""
    found: dict[str, Any] | None = None
    try:
        with open(log, encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash: ignore it
                mine = isinstance(record, dict) and record.get("output") == str(output)
                if mine and record.get("status") == "converted":
                    found = record
    except OSError:
        return None
    return found


def up_to_date(log: Path | list[Path], source: Path, output: Path, options: dict[str, Any]) -> bool:
    """Whether ``output`` exists and a job log (``log``, or any of a list) says it was made from
    ``source`` as it is now, with ``options``. A record pins the output's size and time, so one
    log's say is enough whichever task wrote it."""
    if not output.is_file():
        return False
    if isinstance(log, list):
        return any(up_to_date(one, source, output, options) for one in log)
    record = latest(log, output)
    if record is None or record.get("input") != str(source) or record.get("options") != options:
        return False
    try:
        quick = fingerprint(source, with_hash=False)
        if any(record.get(k) != v for k, v in quick.items()):
            return False
        if record.get("output_state") != output_state(output):  # touched since: damaged, or replaced
            return False
        return bool(record.get("input_sha256") == fingerprint(source)["input_sha256"])
    except OSError:
        return False


def record(log: Path, fields: dict[str, Any]) -> None:
    """Append one record to the job log ``log`` (one line, written in one call)."""
    line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}) + "\n"
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def output_state(output: Path) -> list[int]:
    """An output's size and mtime (ns): what the log expects to find again."""
    st = output.stat()
    return [st.st_size, st.st_mtime_ns]


def converted(source: Path, output: Path, before: dict[str, Any] | None, options: dict[str, Any]) -> dict[str, Any]:
    """The provenance fields of a just-converted output (to put in its log record). ``before``:
    the input's size and time when the conversion began; if it changed since, no hash is
    recorded, so the next run converts it again."""
    try:
        found = fingerprint(source)
        made = output_state(output)
        output_sha256 = fingerprint(output)["input_sha256"]
    except OSError:
        return {}
    if before is not None and any(found.get(k) != v for k, v in before.items()):
        found.pop("input_sha256")
    return {"options": options, "output_state": made, "output_sha256": output_sha256, **found}
