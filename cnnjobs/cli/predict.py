"""`cnnjobs predict RUN PATH...`: a run's model on new images (and its accuracy on new labeled ones)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from cnnjobs.cli.common import print_json

_SHOWN = 50  # rows of the table on the terminal; --out holds them all


def cmd_predict(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.cli.render import confusion_table
    from cnnjobs.results.predict import predict, write

    use_ray = True if args.ray else False if args.local else None
    result = predict(args.run, args.paths, top_k=args.top_k, root=args.dir, use_ray=use_ray, address=args.address)
    tasks = list(result.classes)
    table = Table(title=f"{result.job} / {result.run_id}: {len(result.rows)} image(s), {result.mode}")
    table.add_column("image", overflow="fold")
    for task in tasks:
        table.add_column(task)
    for row in result.rows[:_SHOWN]:
        cells = []
        for task in tasks:
            text = ", ".join(f"{name} {p:.0%}" for name, p in row.top[task])
            if task in row.truth:
                right = row.truth[task] == row.top[task][0][0]
                text = f"[{'green' if right else 'red'}]{text}[/] (true: {row.truth[task]})"
            cells.append(text)
        table.add_row(row.path, *cells)
    if len(result.rows) > _SHOWN:
        table.caption = f"the first {_SHOWN} of {len(result.rows)}; --out writes them all"
    console.print(table)
    for task, accuracy in result.accuracy.items():
        labeled = sum(map(sum, result.confusion[task]))
        console.print(f"[bold]{task}[/]: accuracy {accuracy:.4f} on {labeled} labeled image(s)")
        if len(result.classes[task]) <= 20:
            console.print(confusion_table(task, result.confusion[task], result.classes[task], split="predicted"))
    for path, reason in result.skipped:
        console.print(f"[yellow]skipped[/] {path}: {reason}", soft_wrap=True, highlight=False)
    if args.out:
        console.print(f"predictions written to {write(result, args.out)}", soft_wrap=True)
    if args.json:
        print_json(result.to_json())
    return 0


def add_commands(commands: Any) -> None:
    """`predict`."""
    parser = commands.add_parser("predict", help="predict images with a run's model: cnnjobs predict RUN photos/")
    parser.add_argument("run", help="run folder or run id")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (class subfolders give the "
                        "true labels), glob patterns, or a CSV table in the job's own layout")
    parser.add_argument("--top-k", type=int, default=3, help="classes shown per task (default: 3)")
    parser.add_argument("--out", help="write every prediction to this .csv or .json file")
    parser.add_argument("--dir", default="runs", help="where to look up a run id (default: runs)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--ray", action="store_true", help="Ray Data batch inference whatever the number of images")
    where.add_argument("--local", action="store_true", help="in this process whatever the number of images")
    parser.add_argument("--address", help="the Ray cluster for batch inference (default: RAY_ADDRESS, else local)")
    parser.add_argument("--json", action="store_true", help="print the predictions as JSON on the last line")
    parser.set_defaults(handler=cmd_predict)
