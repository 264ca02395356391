"""``python -m distgray jobs LOG|FOLDER ...``: what job logs say, for people (tools read the JSON
lines themselves; their fields are in ``distgray.jobs.joblog``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from distgray.jobs import joblog
from distgray.storage.remote import locate, options_of


def jobs_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m distgray jobs",
        description="Summarize distgray job logs: each input's last record (converted, skipped or failed),"
        " bytes, conversion time, files per worker, and every failure with its reason.",
        epilog="examples:\n  python -m distgray jobs results/            # every job log in the folder\n"
        "  python -m distgray jobs results/distgray-log.jsonl --json\n"
        "exit codes: 0 no input's last record failed, 1 some did, 2 usage error (no such log).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "logs", nargs="+", metavar="LOG", help="a job log, or a folder of them (a path, or a URL such as s3://b/out/)"
    )
    parser.add_argument("--json", action="store_true", help="print the counts and failures as one JSON object")
    parser.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE", help="as distgray-master's"
    )
    args = parser.parse_args(argv)
    try:
        options = options_of(args.storage_option)
        logs = joblog.logs_of([locate(text, options) for text in args.logs])
    except (FileNotFoundError, ValueError, ImportError) as exc:
        parser.error(str(exc))
    except OSError as exc:
        print(f"distgray jobs: {exc}", file=sys.stderr)
        return 2
    if not logs:
        parser.error(f"no job logs (distgray-log*.jsonl) in {', '.join(map(str, args.logs))}")
    try:
        summary = joblog.summarize(logs)
    except OSError as exc:
        print(f"distgray jobs: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                {
                    "logs": [str(p) for p in logs],
                    "records": summary.records,
                    "inputs": len(summary.latest),
                    "status": dict(summary.status_counts()),
                    "failed": [{"input": r.get("input"), "error": r.get("error")} for r in summary.failed()],
                }
            )
        )
    else:
        print("\n".join(summary.lines()))
    return 1 if summary.failed() else 0
