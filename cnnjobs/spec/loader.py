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
from cnnjobs.spec.messages import describe, first_problem, problem
from cnnjobs.spec.tune import TuneSpec

MAX_VALUES = 100_000  # a job has a few hundred values; more, once aliases are expanded, is a YAML bomb
MAX_DEPTH = 32  # a job nests five levels deep (tune.space.<key>.choice.<item>)


class _DuplicateKey(yaml.constructor.ConstructorError):
    """A key given twice in one mapping, and the line it was first given on."""

    def __init__(self, key: Any, first: int, mark: yaml.Mark) -> None:
        super().__init__(None, None, f"duplicate key {key!r}", mark)
        self.key, self.first = key, first


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _DuplicateKey(key, seen[key], key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def read_yaml(path: Path | str) -> tuple[Any, dict[str, int]]:
    """The YAML document in `path` (a local file, or a URI such as a run folder's job.yaml on s3://) and the line
    of every dotted key in it; JobError for anything unreadable."""
    if isinstance(path, Path) and path.is_dir():
        raise JobError(f"{path}: is a folder, not a job file")
    try:
        if isinstance(path, Path):
            text = path.read_text()
        else:  # imported only for URIs: validating a local job file stays free of pyarrow
            from cnnjobs import storage

            text = storage.read_text(path)
    except FileNotFoundError:
        raise JobError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise JobError(f"{path}: not a YAML job file (not UTF-8 text)") from None
    except PermissionError:
        raise JobError(f"{path}: cannot read a job file: permission denied") from None
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        _check_size(node, path)
        raw = loader.construct_document(node) if node is not None else None
    except _DuplicateKey as exc:
        line = exc.problem_mark.line + 1
        dotted = next((key for key, at in _line_numbers(node).items()
                       if at == line and (key == str(exc.key) or key.endswith(f".{exc.key}"))), str(exc.key))
        raise JobError(f"{path}:{line}: {dotted}: duplicate key, first given on line {exc.first} (only one of "
                       "them can count: remove the other)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        located = f"{path}:{mark.line + 1}" if mark else str(path)
        raise JobError(f"{located}: invalid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise JobError(f"{path}: invalid YAML: nested too deeply for a job file") from None
    finally:
        loader.dispose()
    return raw, _line_numbers(node)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's complaint, in the user's words for the mistakes users make (tabs, Python tags)."""
    what = " ".join(str(getattr(exc, "problem", None) or exc).split())
    if "'\\t'" in what:
        return "a tab character: YAML is indented with spaces only"
    tag = re.search(r"constructor for the tag '([^']*)'", what)
    if tag:
        name = tag[1].replace("tag:yaml.org,2002:", "!!", 1)
        return f"tag {name} is not allowed: a job file holds plain values (safe loading builds no Python objects)"
    return what


def _check_size(node: yaml.Node | None, path: Path) -> None:
    """Refuse aliases that contain themselves, and documents that aliases expand past MAX_VALUES values or
    MAX_DEPTH levels (a "billion laughs" bomb is a few lines long): checked on the composed tree, in linear time."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once expanded
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(node, False)] if node is not None else []
    while stack:
        current, children_done = stack.pop()
        children = _children(current)
        if children_done:
            entered.discard(id(current))
            values = 1 + sum(sizes[id(child)][0] for child in children)
            depth = 1 + max((sizes[id(child)][1] for child in children), default=0)
            if values > MAX_VALUES or depth > MAX_DEPTH:
                what = (f"its aliases expand to more than {MAX_VALUES:,} values (a YAML bomb?)" if values > MAX_VALUES
                        else f"nested more than {MAX_DEPTH} levels deep")
                raise JobError(f"{path}:{current.start_mark.line + 1}: invalid YAML: {what}")
            sizes[id(current)] = values, depth
        elif id(current) in entered:  # only the nodes on the path from the root are entered and not done
            raise JobError(f"{path}:{current.start_mark.line + 1}: invalid YAML: an alias refers to a value "
                           "that contains it")
        elif id(current) not in sizes:
            entered.add(id(current))
            stack.append((current, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def load_job(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JobSpec:
    """Read a job YAML file, apply `--set key.path=value` overrides, validate it.

    Raises `JobError` with `file:line: dotted.key: problem` for every problem a user can cause.
    """
    path = path if isinstance(path, str) and "://" in path and not path.startswith("file://") else Path(path)
    raw, lines = read_yaml(path)
    if raw is None:
        raise JobError(f"{path}: the job file is empty (it needs name, data and model; see jobs/digits_lenet.yaml)")
    if not isinstance(raw, dict):
        kind = {str: "plain text", list: "a list"}.get(type(raw), f"a {type(raw).__name__}")
        raise JobError(f"{path}: a job file must be a mapping of sections (name, data, model, ...), not {kind}")
    set_keys = {_apply_override(raw, item, path) for item in overrides}
    return validate_job(raw, path, lines, set_keys)


def validate_job(raw: dict, path: str | Path, lines: dict[str, int] | None = None,
                 set_keys: set[str] | None = None) -> JobSpec:
    """Validate a job given as a dict; errors name `path` (and the line, when `lines` maps keys to lines)."""
    lines, set_keys = lines or {}, set_keys or set()
    try:
        job = JobSpec.model_validate(raw)
    except ValidationError as exc:
        first, more = first_problem(exc.errors(), raw)
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
    try:
        key, value = parse_override(item)
    except JobError as exc:
        raise JobError(f"{path}: {exc}") from None
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
