"""Commands about clusters: the jobs of a Ray cluster (`jobs`, `status`, `logs`, `stop`) and the warm local
instance (`up`, `down`)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from cnnjobs.cli.common import print_json

_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "STOPPED": "yellow", "RUNNING": "cyan", "PENDING": "dim"}


def _row(job: Any) -> dict[str, Any]:
    return {"submission_id": job.submission_id, "status": job.status, "job": job.job, "entrypoint": job.entrypoint,
            "started": job.started, "ended": job.ended, "message": job.message, "exit_code": job.exit_code}


def _duration(job: Any) -> str:
    if not job.started:
        return "-"
    return f"{(job.ended or time.time()) - job.started:.0f} s"


def cmd_jobs(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.cluster import list_jobs

    jobs = list_jobs(args.address)
    if args.json:
        print_json({"jobs": [_row(job) for job in jobs]})
        return 0
    table = Table(title="cluster jobs")
    for column in ("submission id", "job", "status", "started", "duration", "entrypoint"):
        table.add_column(column, overflow="fold" if column == "entrypoint" else "ellipsis")
    for job in jobs:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.started)) if job.started else "-"
        table.add_row(job.submission_id, job.job or "-", f"[{_STYLE.get(job.status, 'white')}]{job.status}[/]",
                      started, _duration(job), job.entrypoint)
    console.print(table if jobs else "no jobs on the cluster")
    return 0


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.cluster import status

    job = status(args.address, args.submission_id)
    console.print(f"{job.submission_id}: [{_STYLE.get(job.status, 'white')}]{job.status}[/] ({job.job or 'job'}, "
                  f"{_duration(job)}){f' - {job.message}' if job.message else ''}", soft_wrap=True)
    if args.json:
        print_json(_row(job))
    return 0


def cmd_logs(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.cluster import follow_logs

    for _ in follow_logs(args.address, args.submission_id, lambda line: console.print(line, markup=False,
                                                                                      highlight=False),
                         follow=args.follow):
        pass
    return 0


def cmd_stop(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.cluster import stop

    job = stop(args.address, args.submission_id)
    console.print(f"{job.submission_id}: {job.status}")
    if args.json:
        print_json(_row(job))
    return 0


def cmd_up(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.local_ray import up

    instance, started = up(args.cpus)
    console.print(f"{'started' if started else 'already up'}: a local Ray instance at {instance.address} "
                  f"(dashboard {instance.dashboard}); `cnnjobs submit` uses it until `cnnjobs down`", soft_wrap=True)
    if args.json:
        print_json({"address": instance.address, "dashboard": instance.dashboard, "started": started})
    return 0


def cmd_down(args: argparse.Namespace, console: Console) -> int:
    from cnnjobs.local_ray import down

    stopped = down()
    console.print("stopped the local Ray instance" if stopped else "no local Ray instance started by cnnjobs")
    return 0


def add_commands(commands: Any) -> None:
    """`jobs`, `status`, `logs`, `stop`, `up`, `down`."""
    address_help = "the cluster's Ray dashboard, http://HEAD:8265 (default: RAY_ADDRESS)"
    jobs = commands.add_parser("jobs", help="the jobs of a Ray cluster (Ray Jobs API)")
    jobs.add_argument("--address", help=address_help)
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(handler=cmd_jobs)
    for name, handler, text in (("status", cmd_status, "one cluster job's status"),
                                ("logs", cmd_logs, "a cluster job's log"),
                                ("stop", cmd_stop, "stop a cluster job")):
        command = commands.add_parser(name, help=text)
        command.add_argument("submission_id", help="the job's submission id (cnnjobs jobs lists them)")
        command.add_argument("--address", help=address_help)
        if name == "logs":
            command.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
        else:
            command.add_argument("--json", action="store_true")
        command.set_defaults(handler=handler)
    up = commands.add_parser("up", help="start a warm local Ray instance that later submits use (seconds faster)")
    up.add_argument("--cpus", type=int, help="logical CPUs (default: this machine's cores, at least 2)")
    up.add_argument("--json", action="store_true")
    up.set_defaults(handler=cmd_up)
    down = commands.add_parser("down", help="stop the local Ray instance `cnnjobs up` started")
    down.set_defaults(handler=cmd_down)
