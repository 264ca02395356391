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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distgray.storage import places
from distgray.storage.places import Place
from distgray.storage.remote import Remote

LOG_NAME = "distgray-log.jsonl"
#: Every job log of a folder: the batch's own and each indexed task's (``distgray-log-task-I-of-N.jsonl``).
LOG_GLOB = "distgray-log*.jsonl"


def task_log_name(index: int, count: int) -> str:
    """The job log of task ``index`` of ``count`` (one a task, so tasks never write one file)."""
    return LOG_NAME if count == 1 else f"distgray-log-task-{index}-of-{count}.jsonl"


def logs_in(folder: Place) -> list[Place]:
    """The job logs in ``folder`` (the batch's, and those of indexed tasks, whatever their count)."""
    try:
        if isinstance(folder, Remote):
            return [folder / name for name in sorted(folder.names_matching(LOG_GLOB))]
        return list(sorted(folder.glob(LOG_GLOB)))
    except OSError:
        return []


_HASH_CHUNK = 1 << 20


def log_path(output: Place) -> Place:
    """The job log of a single image's output (a batch's is in its output folder)."""
    return output.parent / LOG_NAME


def fingerprint(source: Place, with_hash: bool = True) -> dict[str, Any]:
    """The input as the log records it: size, mtime (ns) and, unless asked not to, its SHA-256.
    Behind a URL: size and the store's content tag (its ETag), which the store computed."""
    found = places.stamp(source)
    if with_hash and isinstance(source, Path):
        digest = hashlib.sha256()
        with open(source, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
        found["input_sha256"] = digest.hexdigest()
    return found


def records(log: Place) -> Iterator[dict[str, Any] | None]:
    """The job log ``log``'s records, line by line; None for a line that is not a JSON object
    (one cut short by a crash, say). OSError when the log cannot be read."""
    for line in log.read_bytes().decode("utf-8", "replace").splitlines():
        try:
            found = json.loads(line)
        except ValueError:
            found = None
        yield found if isinstance(found, dict) else None


def index(logs: list[Place]) -> dict[str, dict[str, Any]]:
    """Each output's last "converted" record across ``logs`` (each read once; skips and failures
    since do not change what made the file): for checking many outputs without reading the
    logs again for each."""
    found: dict[str, dict[str, Any]] = {}
    for log in logs:
        try:
            for entry in records(log):
                if entry is not None and entry.get("status") == "converted" and "output" in entry:
                    found[str(entry["output"])] = entry
        except OSError:
            continue
    return found


def up_to_date(known: dict[str, dict[str, Any]], source: Place, output: Place, options: dict[str, Any]) -> bool:
    """Whether ``output`` exists and the job logs read into ``known`` (:func:`index`) say it was
    made from ``source`` as it is now, with ``options``. A record pins the output's size and time,
    so its log's say is enough whichever task wrote it."""
    if not output.is_file():
        return False
    record = known.get(str(output))
    if record is None or record.get("input") != str(source) or record.get("options") != options:
        return False
    try:
        quick = fingerprint(source, with_hash=False)
        if any(record.get(k) != v for k, v in quick.items()):
            return False
        if record.get("output_state") != output_state(output):  # touched since: damaged, or replaced
            return False
        if isinstance(source, Remote):
            return "input_etag" in quick  # the store's content tag matched (the quick check)
        return bool(record.get("input_sha256") == fingerprint(source)["input_sha256"])
    except OSError:
        return False


def record(log: Place, fields: dict[str, Any]) -> None:
    """Append one record to the job log ``log`` (one line, written in one call)."""
    line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}) + "\n"
    if isinstance(log, Remote):
        log.append_lines([line])
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def output_state(output: Place) -> list[int | str]:
    """An output's size and mtime (ns), or behind a URL its size and ETag: what the log expects
    to find again."""
    return list(places.version(output))


def converted(source: Place, output: Place, before: dict[str, Any] | None, options: dict[str, Any]) -> dict[str, Any]:
    """The provenance fields of a just-converted output (to put in its log record). ``before``:
    the input's size and time when the conversion began; if it changed since, no hash is
    recorded, so the next run converts it again."""
    try:
        found = fingerprint(source)
        made = output_state(output)
        # (behind a URL, the store's ETag in output_state stands for the output's hash)
        output_sha256 = fingerprint(output).get("input_sha256") if isinstance(output, Path) else None
    except OSError:
        return {}
    if before is not None and any(found.get(k) != v for k, v in before.items()):
        found.pop("input_sha256", None)
        found.pop("input_etag", None)  # changed while converted: the next run converts it again
    made_by = {"output_sha256": output_sha256} if output_sha256 else {}
    return {"options": options, "output_state": made, **made_by, **found}
