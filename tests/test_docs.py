"""The README stays true: its job reference is the schema's, its commands exist, its example errors are real."""

from __future__ import annotations

from cnnjobs.spec.docs import BEGIN, END, SCHEMA_FILE, reference, schema_text
from tests.conftest import REPO


def test_readme_job_reference_matches_the_schema():
    readme = (REPO / "README.md").read_text()
    generated = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert generated == reference().strip(), "run `python -m cnnjobs.spec.docs --write`"
    assert SCHEMA_FILE.read_text() == schema_text(), "run `python -m cnnjobs.spec.docs --write`"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    after = readme.split("<!-- test command -->", 1)[1].splitlines()
    command = after[2]
    assert command.startswith("python3 -m venv .venv") and command.endswith("python -m pytest")
    assert "<!-- test command -->" in (REPO / ".ci" / "run").read_text()


def test_readme_lists_every_bad_input_case():
    from tests.bad_input.cases import CASES

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    missing = [case.id for case in CASES if f"| `{case.id}` (" not in section]
    assert not missing, f"run `python -m tests.bad_input` and paste its table into the README: {missing}"
