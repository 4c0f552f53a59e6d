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


def _print_json(payload: Any) -> None:
    """The machine-readable result: one JSON object on the last line of stdout (a summary, or a dict)."""
    if hasattr(payload, "model_dump"):
        payload = payload.model_dump(mode="json")
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def cmd_submit(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.results.live import LiveProgress
    from cnnjobs.results.render import metrics_table, summary_panel
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


def cmd_tune(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.results.live import LiveTrials
    from cnnjobs.results.render import trials_table, tune_panel
    from cnnjobs.spec import load_job
    from cnnjobs.tune.tuner import search
    from cnnjobs.tune.space import num_trials
    from cnnjobs.tune.trials import records

    job = load_job(args.job, args.set)
    if job.tune is None and not args.resume:
        raise JobError(f"{args.job}: no `tune:` section to search (see jobs/arch_search.yaml)")
    if job.tune is not None:
        console.print(f"[bold]{job.name}[/]: searching {', '.join(job.tune.space)} over {num_trials(job.tune)} "
                      f"trial(s) of up to {job.train.epochs} epochs ({job.tune.scheduler})")
    keys, (metric, _) = list(job.tune.space) if job.tune else [], job.tune_metric
    try:
        with LiveTrials(console, keys, metric, job.train.epochs) as live:
            result = search(job, address=args.address, on_progress=live, resume=args.resume)
    except TrainingFailed as exc:
        console.print(f"[red]{exc}[/] (run folder {exc.run_dir}, logs in {exc.run_dir}/logs/)")
        if args.json:
            _print_json({"status": "failed", "run_dir": exc.run_dir, "error": str(exc)})
        return 1
    keys = list(result.summary.space or keys)
    console.print(trials_table(records(result.rows, keys), keys, result.summary.monitor, result.summary.epochs))
    console.print(tune_panel(result.summary))
    if args.json:
        _print_json(result.summary)
    return 0 if result.summary.status == "succeeded" else 130


def cmd_runs(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.results.render import runs_table
    from cnnjobs.results.runs import list_runs

    runs = list_runs(args.dir, job=args.job, status=args.status)
    if args.json:
        _print_json({"runs": [run.summary.model_dump(mode="json") if run.summary else
                              {"run_dir": run.path, "status": "incomplete", "problem": run.problem} for run in runs]})
    elif runs:
        console.print(runs_table(runs))
    else:
        console.print(f"no runs under {args.dir}/")
    return 0


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.results.render import (confusion_table, epochs_table, metrics_table, per_class_table,
                                        summary_panel, trials_table, tune_panel)
    from cnnjobs.results.runs import find_run
    from cnnjobs.results.summary import TuneSummary

    run = find_run(args.run, args.dir)
    summary = run.summary
    if summary is None:
        raise JobError(f"{run.path}: incomplete run folder ({run.problem})")
    if isinstance(summary, TuneSummary):
        keys = list(summary.space)
        console.print(trials_table(run.trials, keys, summary.monitor, summary.epochs))
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
    if args.json:
        _print_json(summary)
    return 0


def cmd_data_prepare(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from cnnjobs.data.shards import prepare
    from cnnjobs.spec import load_job

    job = load_job(args.job, args.set)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("writing shards", total=None)
        manifest, cached = prepare(job.data, start_ray=True,
                                   progress=lambda done, total: bar.update(task, completed=done, total=total))
    rows = {split: manifest.num_rows(split) for split in manifest.files}
    console.print(f"{'cache hit, nothing to do' if cached else 'wrote'}: {manifest.location} "
                  f"({', '.join(f'{split} {n}' for split, n in rows.items())}; {len(manifest.skipped)} skipped)",
                  soft_wrap=True)
    if args.json:
        _print_json({"shards": manifest.location, "cached": cached, "rows": rows, "skipped": len(manifest.skipped)})
    return 0


def cmd_data_inspect(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.data import inspect
    from cnnjobs.data.shards import prepare
    from cnnjobs.spec import load_job

    job = load_job(args.job, args.set)
    manifest, _ = prepare(job.data, start_ray=True)
    for task in manifest.tasks:
        console.print(inspect.counts_table(manifest, task))
    if manifest.skipped:
        console.print(f"[yellow]{len(manifest.skipped)} skipped[/], e.g. {manifest.skipped[0][0]}: "
                      f"{manifest.skipped[0][1]}")
    grid = inspect.sample_grid(manifest, args.out or f"{job.name}-samples.png")
    console.print(f"sample images: {grid}", soft_wrap=True)  # a path to copy, never wrapped
    if args.json:
        _print_json({**inspect.summary(manifest), "grid": str(grid)})
    return 0


def cmd_data_synth(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.data.synth import synth

    path = synth(args.kind, args.out, n=args.n, seed=args.seed)
    console.print(f"synthetic {args.kind} stand-in (not the real dataset) written; use it with "
                  f"--set data.source.path={path}", soft_wrap=True)
    if args.json:
        _print_json({"kind": args.kind, "path": str(path)})
    return 0


def _add_data_commands(commands: Any) -> None:
    data = commands.add_parser("data", help="prepare, inspect or synthesize datasets")
    actions = data.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for name, handler, text in (("prepare", cmd_data_prepare, "write a job's Parquet shards (cached)"),
                                ("inspect", cmd_data_inspect, "counts per split/task/class and a sample grid")):
        action = actions.add_parser(name, help=text)
        action.add_argument("job", help="job YAML file")
        action.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a job key")
        action.add_argument("--json", action="store_true")
        if name == "inspect":
            action.add_argument("--out", help="PNG of sample images (default: <job name>-samples.png)")
        action.set_defaults(handler=handler)
    synth = actions.add_parser("synth", help="write a small synthetic stand-in in a seed dataset's real layout")
    synth.add_argument("kind", choices=["fashion", "catsdogs", "dogsvscats", "mnist", "folder"])
    synth.add_argument("out", help="folder to write into")
    synth.add_argument("-n", type=int, help="number of images (default: a few hundred)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--json", action="store_true")
    synth.set_defaults(handler=cmd_data_synth)


def cmd_models(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.models.summary import layer_table, list_registry
    from cnnjobs.results.render import layers_table, models_table
    from cnnjobs.models import catalog
    from cnnjobs.spec import ModelSpec

    size = (args.image_size, args.image_size) if args.image_size else None
    if args.name is None:
        rows = list_registry(size, args.channels, args.classes)
        console.print(models_table(rows, args.classes))
        if args.json:
            _print_json({"models": [vars(row) for row in rows]})
        return 0
    try:
        catalog.architecture(args.name)
    except ValueError as exc:  # an unknown name, with a did-you-mean
        raise JobError(f"models {args.name}: {exc}") from None
    spec = ModelSpec(arch=args.name)
    layers, params = layer_table(spec, size, args.channels, {"label": args.classes}, args.depth)
    console.print(layers_table(args.name, layers, params))
    if args.json:
        _print_json({"model": args.name, "layers": [vars(row) for row in layers], "params": params})
    return 0


def cmd_schema(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.spec.docs import schema_text

    sys.stdout.write(schema_text())
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

    tune = commands.add_parser("tune", help="search architectures/hyperparameters: cnnjobs tune jobs/arch_search.yaml")
    tune.add_argument("job", help="job YAML file with a `tune:` section")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a job key, e.g. --set train.epochs=5 (repeatable)")
    tune.add_argument("--resume", metavar="RUN", help="continue the interrupted search in this run folder (or id)")
    tune.add_argument("--address", help="Ray cluster to use (default: RAY_ADDRESS, else a local instance)")
    tune.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    tune.set_defaults(handler=cmd_tune)

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
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)

    models = commands.add_parser("models", help="list the architectures, or one model's layers and output shapes")
    models.add_argument("name", nargs="?", help="an architecture: print its layers (like Keras' model.summary())")
    models.add_argument("--image-size", type=int, help="input height = width (default: each model's own)")
    models.add_argument("--channels", type=int, choices=(1, 3), default=3, help="input channels (default: 3)")
    models.add_argument("--classes", type=int, default=10, help="classes of the one head (default: 10)")
    models.add_argument("--depth", type=int, help="fold modules nested deeper than this into one row")
    models.add_argument("--json", action="store_true")
    models.set_defaults(handler=cmd_models)
    schema = commands.add_parser("schema", help="print the job schema as JSON Schema (for editors' completion and "
                                 "validation)")
    schema.set_defaults(handler=cmd_schema)
    _add_data_commands(commands)
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
