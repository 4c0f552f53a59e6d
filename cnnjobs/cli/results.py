"""Commands that read runs: `runs` and `show`."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from cnnjobs.cli.common import print_json
from cnnjobs.errors import JobError


def cmd_runs(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.cli.render import runs_table
    from cnnjobs.run.find import list_runs

    runs = list_runs(args.dir, job=args.job, status=args.status)
    if args.json:
        print_json({"runs": [run.summary.model_dump(mode="json") if run.summary else
                             {"run_dir": run.path, "status": "incomplete", "problem": run.problem} for run in runs]})
    elif runs:
        console.print(runs_table(runs))
    else:
        console.print(f"no runs under {args.dir}/")
    return 0


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.cli.render import (
        confusion_table,
        epochs_table,
        metrics_table,
        per_class_table,
        summary_panel,
        trials_table,
        tune_panel,
    )
    from cnnjobs.run.find import find_run
    from cnnjobs.run.summary import TuneSummary

    run = find_run(args.run, args.dir)
    summary = run.summary
    if summary is None:
        raise JobError(f"{run.path}: incomplete run folder ({run.problem})")
    if isinstance(summary, TuneSummary):
        console.print(trials_table(run.trials, list(summary.space), summary.monitor, summary.epochs))
        console.print(tune_panel(summary))
    else:
        console.print(summary_panel(summary))
        if summary.metrics:
            console.print(metrics_table(summary))
        if run.metrics:
            console.print(epochs_table(run))
        classes = summary.data.classes if summary.data else {}
        split = summary.evaluated or "test"
        for task, matrix in summary.confusion.items():
            if len(matrix) <= 20:
                console.print(confusion_table(task, matrix, classes.get(task), split))
        for task, rows in summary.per_class.items():
            console.print(per_class_table(task, rows, split))
        if args.plots:
            from cnnjobs.results.pictures import draw

            drawn = draw(run.path, summary, run.metrics, run.job())
            console.print(f"drew {', '.join(drawn) or 'nothing (no epoch finished)'} in {run.path}", soft_wrap=True)
    if args.json:
        print_json(summary)
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from cnnjobs.cli.render import fmt
    from cnnjobs.results.compare import compare, save_curves

    comparison = compare(args.runs, args.dir)
    table = Table(title=f"{len(comparison.runs)} runs side by side")
    table.add_column("")
    for label in comparison.labels:
        table.add_column(label, justify="right", overflow="fold")
    for key, values in comparison.differences.items():
        table.add_row(f"[bold]{key}[/]", *[fmt(value) for value in values])
    if comparison.differences:
        table.add_section()
    for key, values in comparison.results.items():
        table.add_row(key, *[fmt(value) for value in values])
    console.print(table)
    if not comparison.differences:
        console.print("the jobs are the same; only their results differ")
    out = save_curves(comparison, args.out)
    console.print(f"learning curves overlaid: {out}", soft_wrap=True)
    if args.json:
        print_json({**comparison.to_json(), "curves": out})
    return 0


def add_commands(commands: Any) -> None:
    """`runs`, `show` and `compare`."""
    compare = commands.add_parser("compare", help="runs side by side: the settings that differ, their metrics, "
                                  "their learning curves overlaid")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run folders or run ids (two or more)")
    compare.add_argument("--dir", default="runs", help="where to look up run ids (default: runs)")
    compare.add_argument("--out", default="compare.png", help="the overlaid curves' PNG (default: compare.png)")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(handler=cmd_compare)

    runs = commands.add_parser("runs", help="list runs: job, id, status, best metric, duration")
    runs.add_argument("--dir", default="runs", help="output folder to scan (default: runs)")
    runs.add_argument("--job", help="only the runs of this job name")
    runs.add_argument("--status", choices=["running", "succeeded", "failed", "interrupted", "incomplete"],
                      help="only the runs with this status")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(handler=cmd_runs)

    show = commands.add_parser("show", help="one run's summary tables")
    show.add_argument("run", help="run folder, or run id under --dir")
    show.add_argument("--dir", default="runs", help="output folder to search for run ids (default: runs)")
    show.add_argument("--plots", action="store_true", help="draw the run's pictures and TensorBoard events again")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)
