"""What every command shares: the argument parser that exits 2 with one line, JSON on the last line of stdout."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line and exit code 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        print(f"cnnjobs: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def print_json(payload: Any) -> None:
    """The machine-readable result: one JSON object on the last line of stdout (a summary, or a dict)."""
    if hasattr(payload, "model_dump"):
        payload = payload.model_dump(mode="json")
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def add_job_arguments(parser: argparse.ArgumentParser, job_required: bool = True) -> None:
    """The job file, `--set` overrides and `--json`."""
    parser.add_argument("job", nargs=None if job_required else "?", help="job YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a job key, e.g. --set train.lr=0.01 (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
