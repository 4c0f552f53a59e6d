"""`cnnjobs visualize`: what a trained run's network sees in one image (feature maps, prediction, Grad-CAM)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from cnnjobs.cli.common import print_json

if TYPE_CHECKING:  # the module itself imports torch and matplotlib: only the command loads it
    from cnnjobs.results.visualize import Visualized


def cmd_visualize(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.results.visualize import visualize

    result = visualize(args.run, args.image, out=args.out, cam=args.cam, root=args.dir)
    console.print(_layers_table(result))
    console.print(_prediction_table(result))
    console.print(f"{len(result.files)} PNG files in {result.out}", soft_wrap=True)
    if args.json:
        print_json(result.to_json())
    return 0


def _layers_table(result: Visualized) -> Table:
    table = Table(title=f"{result.job}: feature maps of {result.image}")
    for column, justify in (("#", "right"), ("layer", "left"), ("type", "left"), ("output shape", "right"),
                            ("file", "left")):
        table.add_column(column, justify=justify)
    for index, layer in enumerate(result.layers, 1):
        table.add_row(str(index), layer.name, layer.kind, "x".join(map(str, layer.output_shape)),
                      os.path.basename(layer.file))
    return table


def _prediction_table(result: Visualized) -> Table:
    cams = {cam.task: os.path.basename(cam.file) for cam in result.cams}
    table = Table(title="prediction", caption=f"drawn in {os.path.basename(result.prediction_png)}")
    for column in ("task", "class", "probability", *(["Grad-CAM"] if cams else [])):
        table.add_column(column, justify="right" if column == "probability" else "left")
    for guess in result.prediction:
        for rank, (name, probability) in enumerate(guess.top):
            first = rank == 0
            table.add_row(guess.task if first else "", f"[bold]{name}[/]" if first else name, f"{probability:.1%}",
                          *([cams.get(guess.task, "") if first else ""] if cams else []),
                          end_section=rank == len(guess.top) - 1)
    return table


def add_commands(commands: Any) -> None:
    """`visualize`."""
    visualize = commands.add_parser("visualize", help="feature maps, prediction and Grad-CAM of one image: "
                                    "cnnjobs visualize RUN IMAGE --cam")
    visualize.add_argument("run", help="run folder, or run id under --dir")
    visualize.add_argument("image", help="image file to run through the model")
    visualize.add_argument("--cam", action="store_true", help="also draw a Grad-CAM heat map per task (captum)")
    visualize.add_argument("--out", help="folder for the PNG files (default: <run folder>/visualize/<image stem>/)")
    visualize.add_argument("--dir", default="runs", help="output folder to search for run ids (default: runs)")
    visualize.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    visualize.set_defaults(handler=cmd_visualize)
