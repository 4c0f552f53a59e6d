"""`cnnjobs export RUN --format torchscript|onnx`: a run's model as a file that predicts without cnnjobs."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from rich.console import Console

from cnnjobs.cli.common import print_json


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.results.export import export

    result = export(args.run, args.format, out=args.out, root=args.dir)
    console.print(f"[bold]{args.run}[/]: exported as {result.format}", soft_wrap=True)
    console.print(f"  model          {result.model}", soft_wrap=True, highlight=False)
    console.print(f"  preprocessing  {result.preprocessing}", soft_wrap=True, highlight=False)
    console.print(f"  check          [green]passed[/]: {result.images} {result.split} images, largest difference "
                  f"in probabilities {result.max_difference:.1e} (tolerance {result.tolerance:g})", soft_wrap=True)
    if args.json:
        print_json(asdict(result))
    return 0


def add_commands(commands: Any) -> None:
    """`export`."""
    parser = commands.add_parser("export", help="write a run's model for use without cnnjobs: cnnjobs export RUN "
                                 "--format onnx")
    parser.add_argument("run", help="run folder or run id")
    parser.add_argument("--format", required=True, choices=["torchscript", "onnx"],
                        help="torchscript (model.pt, loads with torch alone) or onnx (model.onnx, checked with ONNX "
                        "Runtime; needs pip install 'cnnjobs[export]')")
    parser.add_argument("--out", help="the model file, or a folder for it (default: <run>/export/model.pt|.onnx); "
                        "its preprocessing JSON goes beside it")
    parser.add_argument("--dir", default="runs", help="where to look up a run id (default: runs)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    parser.set_defaults(handler=cmd_export)
