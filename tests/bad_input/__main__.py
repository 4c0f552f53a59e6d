"""`python -m tests.bad_input`: run the whole catalogue and print the README's table of the lines users get.

The job file of each case is shown as `jobs/x.yaml` and its workspace as `~/project`, so the lines read as they
would in a project folder. Ray never starts (see runner.py); nothing is checked here:
`pytest tests/test_bad_input.py` does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.bad_input.cases import AREAS, CASES
from tests.bad_input.workspace import prepare_case, run_batch


def _code(text: str) -> str:
    """`text` as inline code in a table cell: `|` escaped, and double backticks around text holding one."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def table() -> str:
    """The Markdown table: case | message, grouped by area."""
    rows = ["| case | message |", "|---|---|"]
    with tempfile.TemporaryDirectory() as root:
        prepared = [prepare_case(case, Path(root) / case.id) for case in CASES]
        results = {}
        for fork in (False, True):
            results.update(run_batch([p for p in prepared if p.case.loads_only != fork], fork)[0])
        for area in AREAS:
            for item in (p for p in prepared if p.case.area == area):
                line = results[item.case.id]["stderr"].strip().removeprefix("cnnjobs: error: ")
                line = line.replace(str(item.job), "jobs/x.yaml").replace(str(item.ws), "~/project")
                rows.append(f"| `{item.case.id}` ({area}) | {_code(line)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
