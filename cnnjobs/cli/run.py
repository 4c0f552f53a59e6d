"""Commands that run jobs: `submit` (and `--resume`) and `tune`."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from cnnjobs.cli.common import add_job_arguments, print_json
from cnnjobs.errors import JobError


def cmd_submit(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.cluster import is_jobs_address
    from cnnjobs.spec import load_job

    if args.job is None and args.resume is None:
        raise JobError("submit: give a job file (cnnjobs submit jobs/digits_lenet.yaml) or --resume RUN")
    address = args.address
    job = load_job(args.job, args.set) if args.job else None  # a bad job file stops here, before torch and Ray
    if is_jobs_address(address):
        if args.resume:
            raise JobError("--resume runs here, next to the run folder; submit it to the cluster as a job file")
        return _submit_to_cluster(args, job, console)
    from cnnjobs.cli.live import LiveProgress
    from cnnjobs.cli.render import metrics_table, summary_panel
    from cnnjobs.train.resume import reopen
    from cnnjobs.train.runner import submit

    previous = None
    if args.resume is not None:
        previous, job = reopen(args.resume, job, overrides=args.set, root=args.dir, force=args.force)
        console.print(f"[bold]{job.name}[/]: continuing {previous.run.location} {', '.join(previous.notes)}",
                      soft_wrap=True)
    else:
        console.print(f"[bold]{job.name}[/]: {job.model.arch} on {job.data.source.type} data, "
                      f"{job.scaling.num_workers} worker(s), {job.train.epochs} epochs")
    with LiveProgress(console, job.train.epochs, job.train.monitor) as live:
        result = submit(job, address=address, on_progress=live, previous=previous)
    console.line()
    console.print(summary_panel(result.summary))
    console.print(metrics_table(result.summary))
    if args.json:
        print_json(result.summary)
    return 0


def _submit_to_cluster(args: argparse.Namespace, job: Any, console: Console) -> int:
    """`submit --address http://...`: the job runs on the cluster, its log streams here."""
    from cnnjobs.cluster import submit_to_cluster

    outcome = submit_to_cluster(args.job, job, args.set, args.address, wait=not args.no_wait,
                                on_log=lambda line: console.print(line, markup=False, highlight=False))
    if args.no_wait:
        console.print(f"cluster job {outcome.submission_id} submitted; follow it with: cnnjobs logs "
                      f"{outcome.submission_id} --follow --address {args.address}", soft_wrap=True)
    else:
        console.print(f"cluster job {outcome.submission_id}: {outcome.status}")
    if args.json:
        print_json(outcome.summary or {"status": outcome.status.lower(), "submission_id": outcome.submission_id})
    return outcome.exit_code


def cmd_tune(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.cli.live import LiveTrials
    from cnnjobs.cli.render import trials_table, tune_panel
    from cnnjobs.spec import load_job
    from cnnjobs.tune.space import num_trials
    from cnnjobs.tune.trials import records
    from cnnjobs.tune.tuner import search

    if args.job is None and args.resume is None:
        raise JobError("tune: give a job file (cnnjobs tune jobs/arch_search.yaml) or --resume RUN")
    if args.job is None:  # `tune --resume RUN`: the search goes on with the job it was started with
        from cnnjobs.run.find import find_run

        job = find_run(args.resume, args.dir).job()
    else:
        job = load_job(args.job, args.set)
    if job.tune is None and not args.resume:
        raise JobError(f"{args.job}: no `tune:` section to search (see jobs/arch_search.yaml)")
    if job.tune is not None:
        console.print(f"[bold]{job.name}[/]: searching {', '.join(job.tune.space)} over {num_trials(job.tune)} "
                      f"trial(s) of up to {job.train.epochs} epochs ({job.tune.scheduler})")
    keys, (metric, _) = list(job.tune.space) if job.tune else [], job.tune_metric
    with LiveTrials(console, keys, metric, job.train.epochs) as live:
        result = search(job if args.job else None, address=args.address, on_progress=live, resume=args.resume,
                        root=args.dir)
    keys = list(result.summary.space or keys)
    console.print(trials_table(records(result.rows, keys), keys, result.summary.monitor, result.summary.epochs))
    console.print(tune_panel(result.summary))
    if args.json:
        print_json(result.summary)
    return 0 if result.summary.status == "succeeded" else 130


def add_commands(commands: Any) -> None:
    """`submit` and `tune`."""
    submit = commands.add_parser("submit", help="run a job: cnnjobs submit jobs/digits_lenet.yaml")
    add_job_arguments(submit, job_required=False)
    submit.add_argument("--address", help="http://HEAD:8265 sends the job through the Ray Jobs API; ray://HEAD:10001 "
                        "or HOST:PORT connects this driver (default: RAY_ADDRESS, else a local instance)")
    submit.add_argument("--no-wait", action="store_true", help="with --address http://...: return once the "
                        "cluster has the job (follow it with `cnnjobs logs ID --follow`)")
    submit.add_argument("--resume", metavar="RUN", help="continue this interrupted run (folder or id) from its "
                        "newest checkpoint, in its own folder")
    submit.add_argument("--force", action="store_true", help="with --resume: accept a job that differs from the "
                        "one the run trained with (or a run whose driver still looks alive)")
    submit.add_argument("--dir", default="runs", help="with --resume: where to look up a run id (default: runs)")
    submit.set_defaults(handler=cmd_submit)

    plan = commands.add_parser("plan", help="a dry run: time a few steps on the target, predict the job's time and "
                               "memory before running it")
    add_job_arguments(plan)
    plan.add_argument("--address", help="the Ray cluster it will run on (default: RAY_ADDRESS, else local)")
    plan.add_argument("--steps", type=int, default=40, help="training steps to time (default: 40)")
    plan.set_defaults(handler=cmd_plan)

    tune = commands.add_parser("tune", help="search architectures/hyperparameters: cnnjobs tune jobs/arch_search.yaml")
    add_job_arguments(tune, job_required=False)
    tune.add_argument("--resume", metavar="RUN", help="continue the interrupted search in this run folder (or id), "
                      "with the job it was started with")
    tune.add_argument("--dir", default="runs", help="with --resume: where to look up a run id (default: runs)")
    tune.add_argument("--address", help="Ray cluster to use (default: RAY_ADDRESS, else a local instance)")
    tune.set_defaults(handler=cmd_tune)


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.spec import load_job

    job = load_job(args.job, args.set)
    from rich.table import Table

    from cnnjobs.train.plan import plan

    with console.status("planning") as status:
        result = plan(job, address=args.address, steps=args.steps, notify=lambda phase: status.update(phase))
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    minutes = lambda seconds: f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"  # noqa: E731
    for label, value in [
            ("job", f"{result.job} on {result.target}"),
            ("rows", ", ".join(f"{split} {count:,}" for split, count in result.rows.items())),
            ("epoch", f"{result.epoch_s:.2f} s ({result.steps_per_epoch} steps of {result.step_s * 1000:.1f} ms, "
                      f"validation {result.val_s:.2f} s)"),
            ("start", f"{result.start_s:.0f} s to the first step"),
            ("ETA", f"{minutes(result.eta_s)} for {result.epochs} epochs"
                    + (" (at most: early stopping may end sooner)" if job.train.early_stopping else "")),
            ("search", f"{result.search.trials} trials, about {result.search.expected_epochs:g} of their "
                       f"{result.search.all_epochs} epochs ({job.tune.scheduler}), {result.search.concurrency} at a "
                       f"time: {minutes(result.search.wall_s)}" if result.search else None),
            ("memory", f"peak RSS {result.peak_rss_mb:,.0f} MiB" + (f", GPU {result.gpu_mb:,.0f} MiB"
                                                                   if result.gpu_mb else "")),
            ("data", result.verdict)]:
        if value is not None:
            table.add_row(label, value)
    console.print(table)
    if args.json:
        print_json(result.to_json())
    return 0
