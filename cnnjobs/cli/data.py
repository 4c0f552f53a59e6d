"""Commands about data and models: `data prepare|inspect|synth`, `models`, `schema`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console

from cnnjobs.cli.common import Parser, print_json
from cnnjobs.errors import JobError


def cmd_data_prepare(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from cnnjobs.checks import check_storage, located
    from cnnjobs.data.shards import prepare
    from cnnjobs.spec import load_job

    job = load_job(args.job, args.set)
    with located(job):
        check_storage(job, output=False)
    with located(job), Progress(console=console, transient=True) as bar:
        task = bar.add_task("writing shards", total=None)
        manifest, cached = prepare(job.data, start_ray=True, force=args.force,
                                   progress=lambda done, total: bar.update(task, completed=done, total=total))
    rows = {split: manifest.num_rows(split) for split in manifest.files}
    console.print(f"{'cache hit, nothing to do' if cached else 'wrote'}: {manifest.location} "
                  f"({', '.join(f'{split} {n}' for split, n in rows.items())}; {len(manifest.skipped)} skipped)",
                  soft_wrap=True)
    if args.json:
        print_json({"shards": manifest.location, "cached": cached, "rows": rows, "skipped": len(manifest.skipped)})
    return 0


def cmd_data_inspect(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.checks import check_storage, located
    from cnnjobs.data import inspect
    from cnnjobs.data.shards import prepare
    from cnnjobs.spec import load_job

    job = load_job(args.job, args.set)
    with located(job):
        check_storage(job, output=False)
        manifest, _ = prepare(job.data, start_ray=True)
    for task in manifest.tasks:
        console.print(inspect.counts_table(manifest, task))
    if manifest.skipped:
        console.print(f"[yellow]{len(manifest.skipped)} skipped[/], e.g. {manifest.skipped[0][0]}: "
                      f"{manifest.skipped[0][1]}")
    grid = inspect.sample_grid(manifest, args.out or f"{job.name}-samples.png")
    console.print(f"sample images: {grid}", soft_wrap=True)  # a path to copy, never wrapped
    if args.json:
        print_json({**inspect.summary(manifest), "grid": str(grid)})
    return 0


def cmd_data_synth(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.data.synth import synth

    path = synth(args.kind, args.out, n=args.n, seed=args.seed)
    console.print(f"synthetic {args.kind} stand-in (not the real dataset) written; use it with "
                  f"--set data.source.path={path}", soft_wrap=True)
    if args.json:
        print_json({"kind": args.kind, "path": str(path)})
    return 0


def _add_data(commands: Any) -> None:
    data = commands.add_parser("data", help="prepare, inspect or synthesize datasets")
    actions = data.add_subparsers(dest="action", required=True, parser_class=Parser)
    for name, handler, text in (("prepare", cmd_data_prepare, "write a job's Parquet shards (cached)"),
                                ("inspect", cmd_data_inspect, "counts per split/task/class and a sample grid")):
        action = actions.add_parser(name, help=text)
        action.add_argument("job", help="job YAML file")
        action.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a job key")
        action.add_argument("--json", action="store_true")
        if name == "inspect":
            action.add_argument("--out", help="PNG of sample images (default: <job name>-samples.png)")
        else:
            action.add_argument("--force", action="store_true", help="write the shards again even when they are "
                                "cached (e.g. after images were edited in place)")
        action.set_defaults(handler=handler)
    synth = actions.add_parser("synth", help="write a small synthetic stand-in in a seed dataset's real layout")
    synth.add_argument("kind", choices=["fashion", "catsdogs", "dogsvscats", "mnist", "folder"])
    synth.add_argument("out", help="folder to write into")
    synth.add_argument("-n", type=int, help="number of images (default: a few hundred)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--json", action="store_true")
    synth.set_defaults(handler=cmd_data_synth)


def cmd_models(args: argparse.Namespace, console: Console) -> int:
    from dataclasses import asdict

    from cnnjobs.cli.render import layers_table, models_table
    from cnnjobs.models import catalog
    from cnnjobs.models.summary import list_registry, model_card
    from cnnjobs.spec import ModelSpec, load_job

    size = (args.image_size, args.image_size) if args.image_size else None
    if args.job:  # the job's actual model: its sizes, channels, heads per task from the data, freezing
        from cnnjobs.checks import located
        from cnnjobs.data.shards import plan_shards

        job = load_job(args.job, args.set)
        with located(job):
            tasks = plan_shards(job.data).tasks
        card = model_card(job.model, job.data.image_size, job.data.channels,
                          {task: len(classes) for task, classes in tasks.items()}, args.depth)
    elif args.name is None:
        rows = list_registry(size, args.channels, args.classes)
        console.print(models_table(rows, args.classes))
        if args.json:
            print_json({"models": [vars(row) for row in rows]})
        return 0
    else:
        try:
            catalog.architecture(args.name)
        except ValueError as exc:  # an unknown name, with a did-you-mean
            raise JobError(f"models {args.name}: {exc}") from None
        card = model_card(ModelSpec(arch=args.name), size, args.channels, {"label": args.classes}, args.depth)
    console.print(layers_table(card))
    if args.json:
        print_json({"model": card.arch, **asdict(card)})
    return 0


def cmd_schema(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.spec.docs import schema_text

    sys.stdout.write(schema_text())
    return 0


def add_commands(commands: Any) -> None:
    """`data`, `models` and `schema`."""
    _add_data(commands)
    models = commands.add_parser("models", help="list the architectures, or one model's layers and output shapes")
    models.add_argument("name", nargs="?", help="an architecture: print its layers (like Keras' model.summary())")
    models.add_argument("--job", help="the model of this job file: its image size, channels, a head per task of its "
                        "data, frozen layers")
    models.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="with --job: override a key")
    models.add_argument("--image-size", type=int, help="input height = width (default: each model's own)")
    models.add_argument("--channels", type=int, choices=(1, 3), default=3, help="input channels (default: 3)")
    models.add_argument("--classes", type=int, default=10, help="classes of the one head (default: 10)")
    models.add_argument("--depth", type=int, help="fold modules nested deeper than this into one row")
    models.add_argument("--json", action="store_true")
    models.set_defaults(handler=cmd_models)
    schema = commands.add_parser("schema", help="print the job schema as JSON Schema (for editors' completion and "
                                 "validation)")
    schema.set_defaults(handler=cmd_schema)
