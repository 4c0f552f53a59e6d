"""Reading a job: YAML text (safe loader, no duplicate keys) plus `--set` overrides in, a validated `JobSpec` out.

Every problem a user can cause becomes one `JobError` naming the file, the line and the dotted key.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cnnjobs.errors import JobError
from cnnjobs.spec.job import JobSpec, cross_checks
from cnnjobs.spec.messages import describe, problem
from cnnjobs.spec.tune import TuneSpec


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {seen[key]})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """The YAML document in `path` and the line of every dotted key in it; JobError for anything unreadable."""
    if path.is_dir():
        raise JobError(f"{path}: is a folder, not a job file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise JobError(f"{path}: no such file") from None
    except (UnicodeDecodeError, PermissionError) as exc:
        raise JobError(f"{path}: cannot read a job file: {exc.__class__.__name__}") from None
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        located = f"{path}:{mark.line + 1}" if mark else str(path)
        what = str(getattr(exc, "problem", None) or exc)
        if "'\\t'" in what:
            what = "a tab character: YAML is indented with spaces only"
        raise JobError(f"{located}: invalid YAML: {what}") from None
    finally:
        loader.dispose()
    return raw, _line_numbers(node)


def load_job(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JobSpec:
    """Read a job YAML file, apply `--set key.path=value` overrides, validate it.

    Raises `JobError` with `file:line: dotted.key: problem` for every problem a user can cause.
    """
    path = Path(path)
    raw, lines = read_yaml(path)
    if raw is None:
        raise JobError(f"{path}: the job file is empty (it needs name, data and model; see jobs/digits_lenet.yaml)")
    if not isinstance(raw, dict):
        raise JobError(f"{path}: a job file must be a mapping of sections (name, data, model, ...), "
                       f"not a {type(raw).__name__}")
    set_keys = {_apply_override(raw, item, path) for item in overrides}
    return validate_job(raw, path, lines, set_keys)


def validate_job(raw: dict, path: str | Path, lines: dict[str, int] | None = None,
                 set_keys: set[str] | None = None) -> JobSpec:
    """Validate a job given as a dict; errors name `path` (and the line, when `lines` maps keys to lines)."""
    lines, set_keys = lines or {}, set_keys or set()
    try:
        job = JobSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = exc.error_count() - 1
        message = describe(first, JobSpec, raw, path, lines, set_keys)
        raise JobError(message + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")) from None
    for key, issue in cross_checks(job):
        error = {"type": "value_error", "loc": tuple(key.split(".")), "msg": issue, "ctx": {"error": issue}}
        raise JobError(describe(error, JobSpec, raw, path, lines, set_keys))
    if job.tune is not None:
        _check_space(job.tune, raw, path, lines)
    job._source = str(path)
    return job


def apply_values(raw: dict, values: dict[str, Any]) -> dict:
    """A copy of the job dict `raw` without its `tune:` section and with dotted `values` set (one trial's job)."""
    job = copy.deepcopy({key: value for key, value in raw.items() if key != "tune"})
    for key, value in values.items():
        node = job
        *parents, last = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise JobError(f"{key}: {part} is not a section")
            node = child
        node[last] = value
    return job


def _check_space(tune: TuneSpec, raw: dict, path: str | Path, lines: dict[str, int]) -> None:
    """Every key of `tune.space` must exist and every value it can take must make a valid job."""
    for key, dimension in tune.space.items():
        dotted = f"tune.space.{key}"
        located = f"{path}:{lines[dotted]}" if dotted in lines else str(path)
        for value in dimension.probes:
            try:
                trial = JobSpec.model_validate(apply_values(raw, {key: value}))
            except ValidationError as exc:
                first = exc.errors()[0]
                if first["type"] in ("extra_forbidden", "model_attributes_type"):
                    raise JobError(f"{located}: {dotted}: not a job key ({problem(first, JobSpec)})") from None
                raise JobError(f"{located}: {dotted}: value {value!r}: {problem(first, JobSpec)}") from None
            except JobError as exc:
                raise JobError(f"{located}: {dotted}: not a job key ({exc})") from None
            for _, issue in cross_checks(trial):
                raise JobError(f"{located}: {dotted}: value {value!r}: {issue}")


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=c` -> ("a.b", c) with c parsed as a YAML scalar or flow value (so `[1, 2]` and `true` work)."""
    key, sep, value = item.partition("=")
    if not sep or not re.match(r"^[A-Za-z_][\w-]*(\.[\w-]+)*$", key.strip()):
        raise JobError(f"--set {item}: expected key.path=value, e.g. train.lr=0.01")
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        return key.strip(), value


def _apply_override(raw: dict, item: str, path: Path) -> str:
    key, value = parse_override(item)
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise JobError(f"{path}: --set {key}: {'.'.join(parts[:depth + 1])} is not a section")
        node = child
    node[parts[-1]] = value
    return key


def _line_numbers(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    """Map each dotted key path in a composed YAML tree to its 1-based line."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_line_numbers(value_node, key + "."))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = f"{prefix}{index}"
            lines[key] = item.start_mark.line + 1
            lines.update(_line_numbers(item, key + "."))
    return lines
