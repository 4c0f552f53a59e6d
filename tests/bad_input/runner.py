"""Run `cnnjobs` command lines through `cnnjobs.cli.main`, many in one interpreter, for tests/test_bad_input.py.

    python tests/bad_input/runner.py CASES.json RESULTS.json [--fork]

CASES.json is a list of {"id", "argv", "cwd"}; RESULTS.json gets {"results": [{"id", "code", "stdout", "stderr",
"seconds"}], "heavy": [...], "blocked": [...]}.

Without `--fork` (the job-file cases) each command runs in this process, one after the other, and `heavy` lists
which of torch, torchvision and ray were imported by the end: none should be. `ray` cannot be imported at all
(`blocked` says who tried), so a case that wrongly passes its checks fails instead of starting Ray.

With `--fork` (the data, runs and security cases) cnnjobs, torch and ray are imported once, then each command runs
in a child process forked from this one: its own exit status, stdout and stderr (file descriptors 1 and 2), as the
`cnnjobs` console script would give. `ray.init` is replaced by a function that ends the child with code 99: the
cases must stop before Ray starts (other people's Ray instances run on this machine).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "torchvision", "ray"}
RAY_WOULD_START = 99


class BlockRay(importlib.abc.MetaPathFinder):
    """Refuses `import ray` and remembers that it was tried."""

    def __init__(self) -> None:
        self.tried: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ray":
            self.tried.append(name)
            raise ImportError(f"bad-input runner: a job-file case imported {name}")


def _call(argv: list[str]) -> int:
    """`cnnjobs ARGV` as the console script runs it: the exit code, a traceback on stderr for an uncaught error."""
    from cnnjobs.cli import main

    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the interpreter would print and exit with
        traceback.print_exc()
        return 1


@contextlib.contextmanager
def _captured(folder: str):
    """Point file descriptors 1 and 2 (and sys.stdout/stderr) at files; yields a function that reads them."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    paths = os.path.join(folder, "out"), os.path.join(folder, "err")
    with open(paths[0], "w") as out, open(paths[1], "w") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            yield lambda: [Path(p).read_text(errors="replace") for p in paths]
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_here(case: dict, folder: str) -> dict:
    """One case in this process."""
    start = time.perf_counter()
    here = os.getcwd()
    os.chdir(case["cwd"])
    try:
        with _captured(folder) as read:
            code = _call(case["argv"])
    finally:
        os.chdir(here)
    stdout, stderr = read()
    return {"id": case["id"], "code": code, "stdout": stdout, "stderr": stderr,
            "seconds": time.perf_counter() - start}


def run_forked(case: dict, folder: str) -> dict:
    """One case in a child process forked from this one."""
    start = time.perf_counter()
    out, err = os.path.join(folder, "out"), os.path.join(folder, "err")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.chdir(case["cwd"])
            for fd, name in ((1, out), (2, err)):
                handle = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(handle, fd)
                os.close(handle)
            code = _call(case["argv"])
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    read = [Path(name).read_text(errors="replace") for name in (out, err)]
    return {"id": case["id"], "code": os.waitstatus_to_exitcode(status), "stdout": read[0], "stderr": read[1],
            "seconds": time.perf_counter() - start}


def _ray_would_start(*args, **kwargs):
    sys.stderr.write("bad-input runner: this case got as far as starting Ray\n")
    sys.stderr.flush()
    os._exit(RAY_WOULD_START)


def main(cases_file: str, results_file: str, fork: bool) -> None:
    sys.path.insert(0, str(REPO))
    cases = json.loads(Path(cases_file).read_text())
    blocker = BlockRay()
    if fork:
        import ray
        import torch  # noqa: F401 - imported once here, not in every child

        import cnnjobs.cli  # noqa: F401
        import cnnjobs.train.runner  # noqa: F401

        ray.init = _ray_would_start
        run = run_forked
    else:
        sys.meta_path.insert(0, blocker)
        run = run_here
    with tempfile.TemporaryDirectory() as folder:
        results = [run(case, folder) for case in cases]
    heavy = sorted({name.split(".")[0] for name in sys.modules} & HEAVY)
    Path(results_file).write_text(json.dumps({"results": results, "heavy": [] if fork else heavy,
                                              "blocked": blocker.tried}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--fork" in sys.argv[3:])
