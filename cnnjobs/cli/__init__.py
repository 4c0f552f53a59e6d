"""`cnnjobs` on the command line: each command parses, calls one library function, renders with rich.

Exit codes: 0 success; 2 bad input (one line naming the file and key or path, no traceback unless --debug);
1 training failed (with the run folder and its log); 130 interrupted (with the command that resumes the run).
"""

from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable

from rich.console import Console

from cnnjobs.cli import cluster, data, export, predict, results, run, visualize
from cnnjobs.cli.common import Parser, print_json
from cnnjobs.errors import Interrupted, JobError, TrainingFailed


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = Parser(prog="cnnjobs", description="Distributed CNN training jobs on Ray, from YAML.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (run, results, predict, export, visualize, cluster, data):
        module.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cnnjobs` console script."""
    args = build_parser().parse_args(argv)
    # With --json the human view goes to stderr so stdout stays parseable.
    wants_json = bool(getattr(args, "json", False))
    console = Console(stderr=wants_json)
    handler: Callable[[argparse.Namespace, Console], int] = args.handler
    try:
        return handler(args, console)
    except JobError as exc:
        if args.debug:
            raise
        print(f"cnnjobs: error: {exc}", file=sys.stderr)
        return 2
    except TrainingFailed as exc:
        console.print(f"[red]{exc}[/]", soft_wrap=True)
        if wants_json:
            print_json(_summary_of(exc.run_dir) or {"status": "failed", "run_dir": exc.run_dir, "error": str(exc)})
        return 1
    except Interrupted as exc:
        console.print(f"[yellow]interrupted[/]; continue with: {exc.resume}", soft_wrap=True)
        if wants_json:
            print_json(_summary_of(exc.run_dir) or {"status": "interrupted", "run_dir": exc.run_dir})
        return 130
    except KeyboardInterrupt:
        print("cnnjobs: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or args.debug:
            raise
        # Every run file is written to a temporary name and renamed: the versions written before are intact.
        print(f"cnnjobs: error: {exc.filename or 'a file'}: {exc.strerror}; the files written before it are "
              "intact: free some space (or set output.dir elsewhere) and continue with cnnjobs submit --resume RUN",
              file=sys.stderr)
        return 1


def _summary_of(run_dir: str):
    from cnnjobs.run.find import load_run

    try:
        return load_run(run_dir).summary
    except JobError:
        return None
