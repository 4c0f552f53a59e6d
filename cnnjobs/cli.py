"""`cnnjobs` on the command line: each command parses, calls one library function, renders with rich.

Exit codes: 0 success, 2 bad input (one line naming the file and key or path), 1 training failed (with the log path).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, NoReturn

from rich.console import Console

from cnnjobs.cluster import is_jobs_address
from cnnjobs.errors import JobError, TrainingFailed


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        print(f"cnnjobs: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _print_json(payload: dict[str, Any]) -> None:
    """The machine-readable result: one JSON object on the last line of stdout."""
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def cmd_submit(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.results.render import LiveProgress, metrics_table, summary_panel
    from cnnjobs.spec import load_job
    from cnnjobs.train.runner import submit

    job = load_job(args.job, args.set)
    if is_jobs_address(args.address):
        return _submit_to_cluster(args, job, console)
    console.print(f"[bold]{job.name}[/]: {job.model.arch} on {job.data.source.type} data, "
                  f"{job.scaling.num_workers} worker(s), {job.train.epochs} epochs")
    try:
        with LiveProgress(console, job.train.epochs, job.train.monitor) as live:
            result = submit(job, address=args.address, on_progress=live)
        console.line()
    except TrainingFailed as exc:
        console.line()
        console.print(f"[red]{exc}[/] (run folder {exc.run_dir}, logs in {exc.run_dir}/logs/)")
        if args.json:
            _print_json({"status": "failed", "run_dir": exc.run_dir, "error": str(exc)})
        return 1
    console.print(summary_panel(result.summary))
    console.print(metrics_table(result.summary))
    if args.json:
        _print_json(result.summary)
    return 0


def _submit_to_cluster(args: argparse.Namespace, job: Any, console: Console) -> int:
    """`submit --address http://...`: the job runs on the cluster, its log streams here."""
    from cnnjobs.cluster import submit_to_cluster

    outcome = submit_to_cluster(args.job, job, args.set, args.address,
                                on_log=lambda line: console.print(line, markup=False, highlight=False))
    console.print(f"cluster job {outcome.submission_id}: {outcome.status}")
    if args.json:
        _print_json(outcome.summary or {"status": outcome.status.lower(), "submission_id": outcome.submission_id})
    return outcome.exit_code


def cmd_runs(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.results.render import runs_table
    from cnnjobs.results.runs import list_runs

    runs = list_runs(args.dir)
    if args.json:
        _print_json({"runs": [run.summary for run in runs]})
    elif runs:
        console.print(runs_table(runs))
    else:
        console.print(f"no runs under {args.dir}/")
    return 0


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.results.render import confusion_table, epochs_table, metrics_table, summary_panel
    from cnnjobs.results.runs import find_run

    run = find_run(args.run, args.dir)
    console.print(summary_panel(run.summary))
    if run.summary.get("metrics"):
        console.print(metrics_table(run.summary))
    if run.metrics:
        console.print(epochs_table(run))
    for task, matrix in (run.summary.get("test_confusion") or {}).items():
        if len(matrix) <= 20:
            console.print(confusion_table(task, matrix))
    if args.json:
        _print_json(run.summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = _Parser(prog="cnnjobs", description="Distributed CNN training jobs on Ray, from YAML.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    submit = commands.add_parser("submit", help="run a job: cnnjobs submit jobs/digits_lenet.yaml")
    submit.add_argument("job", help="job YAML file")
    submit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a job key, e.g. --set train.lr=0.01 (repeatable)")
    submit.add_argument("--address", help="http://HEAD:8265 sends the job through the Ray Jobs API; ray://HEAD:10001 "
                        "or HOST:PORT connects this driver (default: RAY_ADDRESS, else a local instance)")
    submit.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    submit.set_defaults(handler=cmd_submit)

    runs = commands.add_parser("runs", help="list runs: job, id, status, best metric, duration")
    runs.add_argument("--dir", default="runs", help="output folder to scan (default: runs)")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(handler=cmd_runs)

    show = commands.add_parser("show", help="one run's summary tables")
    show.add_argument("run", help="run folder, or run id under --dir")
    show.add_argument("--dir", default="runs", help="output folder to search for run ids (default: runs)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cnnjobs` console script."""
    args = build_parser().parse_args(argv)
    # With --json the human view goes to stderr so stdout stays parseable.
    console = Console(stderr=bool(getattr(args, "json", False)))
    handler: Callable[[argparse.Namespace, Console], int] = args.handler
    try:
        return handler(args, console)
    except JobError as exc:
        if args.debug:
            raise
        print(f"cnnjobs: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnjobs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
