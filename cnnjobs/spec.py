"""The job schema: YAML in, a typed and frozen ``JobSpec`` out, or one ``JobError`` naming file, line and key.

Every section is a pydantic model with ``extra="forbid"`` so that a typo is an error, never a silent default.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cnnjobs.errors import JobError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------- data


class BuiltinSource(_Section):
    """A dataset that ships with an installed package (no download)."""

    type: Literal["builtin"] = "builtin"
    name: Literal["digits"] = Field(description="`digits`: scikit-learn's 1,797 real 8x8 handwritten digits.")


Source = Annotated[Union[BuiltinSource], Field(discriminator="type")]


class SplitSpec(_Section):
    """Fractions of the data held out for validation and test when the source has no split of its own."""

    val: float = Field(0.15, ge=0, lt=1, description="Fraction of each class held out for validation.")
    test: float = Field(0.15, ge=0, lt=1, description="Fraction of each class held out for the final test.")

    @model_validator(mode="after")
    def _leaves_training_data(self) -> "SplitSpec":
        if self.val + self.test >= 1:
            raise ValueError(f"val + test must be < 1 (got {self.val + self.test:g})")
        return self


class DataSpec(_Section):
    """Where the images come from and how they are stored for training."""

    source: Source = Field(description="The dataset to read; `type` selects the reader.")
    image_size: tuple[int, int] = Field(
        description="Height and width every image is resized to once, when the shards are written "
        "(one number means a square)."
    )
    channels: Literal[1, 3] = Field(3, description="1 = grayscale, 3 = RGB; images are converted to this.")
    split: SplitSpec = Field(default_factory=SplitSpec, description="Held-out fractions, stratified by class.")
    seed: int = Field(0, description="Seed of the train/val/test split.")
    normalize: Literal["dataset", "imagenet", "none"] = Field(
        "dataset", description="Per-channel mean/std: measured on the train split, ImageNet's, or none (x/255)."
    )
    cache_dir: str = Field(
        "~/.cache/cnnjobs", description="Where Parquet shards are cached (a local path or a pyarrow URI)."
    )

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) else value

    @field_validator("image_size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8:
            raise ValueError(f"must be at least 8 pixels (got {list(value)})")
        return value


# --------------------------------------------------------------------------------------------- model


class ModelSpec(_Section):
    """The architecture, looked up by name in the model registry (`cnnjobs models` lists them)."""

    arch: str = Field(description="Registered architecture name, e.g. `lenet5`.")
    dropout: float | None = Field(None, ge=0, lt=1, description="Dropout probability; the architecture's own if unset.")

    @field_validator("arch")
    @classmethod
    def _registered(cls, value: str) -> str:
        from cnnjobs.models import list_models

        names = list_models()
        if value not in names:
            raise ValueError(f"unknown architecture {value!r}{_did_you_mean(value, names)}")
        return value


# --------------------------------------------------------------------------------------------- train

_MONITOR = re.compile(r"^(train|val)/([A-Za-z0-9_]+/)?(loss|acc)$")


class TrainSpec(_Section):
    """The optimization: epochs, batches, optimizer and what counts as the best epoch."""

    epochs: int = Field(10, gt=0, description="Passes over the training split.")
    batch_size: int = Field(64, gt=0, description="Images per optimizer step, across all workers (each worker "
                            "takes batch_size / num_workers), so results do not depend on the number of workers.")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="The torch.optim optimizer.")
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for adamw).")
    seed: int = Field(0, description="Seed of weights init, shuffling and dropout: same seed, same metrics.")
    monitor: str = Field("val/acc", description="Metric that picks the best epoch: `val/loss`, `val/acc`, "
                         "or `val/<task>/acc` for one task.")
    mode: Literal["min", "max"] | None = Field(None, description="Whether `monitor` is better lower or higher; "
                                               "by default `min` for losses, `max` otherwise.")

    @field_validator("monitor")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if not _MONITOR.match(value):
            raise ValueError(f"must look like val/loss, val/acc or val/<task>/acc (got {value!r})")
        return value

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        """`mode`, or the natural direction of `monitor`."""
        return self.mode or ("min" if self.monitor.endswith("loss") else "max")


# ------------------------------------------------------------------------------------ scaling, output


class ScalingSpec(_Section):
    """How many Ray Train workers, on what hardware."""

    num_workers: int = Field(1, ge=1, description="Data-parallel (DDP) workers.")
    use_gpu: bool | Literal["auto"] = Field(
        "auto", description="`auto` uses one GPU per worker when the cluster has enough GPUs."
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved by each worker.")


class OutputSpec(_Section):
    """Where runs are written."""

    dir: str = Field("runs", description="Runs go to `<dir>/<job name>/<run id>/`; a local path or an "
                     "s3:// / gs:// URI (needed for multi-node clusters).")


class JobSpec(_Section):
    """One training job."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Job name; names the run folder.")
    description: str = Field("", description="Free text shown by `cnnjobs show`.")
    data: DataSpec
    model: ModelSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)

    def to_yaml(self) -> str:
        """The resolved job (defaults filled in) as YAML that `load_job` reads back to an equal spec."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ------------------------------------------------------------------------------------------- loading


def load_job(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JobSpec:
    """Read a job YAML file, apply `--set key.path=value` overrides, validate it.

    Raises `JobError` with `file:line: dotted.key: problem` for every problem a user can cause.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise JobError(f"{path}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise JobError(f"{path}: cannot read a job file: {exc.__class__.__name__}") from None
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise JobError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise JobError(f"{path}: a job file must be a mapping of sections (name, data, model, ...)")
    lines = _line_numbers(node)
    set_keys = set()
    for item in overrides:
        set_keys.add(_apply_override(raw, item, path))
    return validate_job(raw, path, lines, set_keys)


def validate_job(raw: dict, path: str | Path, lines: dict[str, int] | None = None,
                 set_keys: set[str] | None = None) -> JobSpec:
    """Validate a job given as a dict; errors name `path` (and the line, when `lines` maps keys to lines)."""
    try:
        job = JobSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = exc.error_count() - 1
        message = _describe(first, raw, path, lines or {}, set_keys or set())
        raise JobError(message + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")) from None
    for key, problem in _cross_checks(job):
        error = {"type": "value_error", "loc": tuple(key.split(".")), "msg": problem, "ctx": {"error": problem}}
        raise JobError(_describe(error, raw, path, lines or {}, set_keys or set()))
    return job


def _cross_checks(job: JobSpec) -> list[tuple[str, str]]:
    """Rules that involve two sections, as (dotted key, problem)."""
    problems = []
    if job.train.batch_size % job.scaling.num_workers:
        problems.append(("train.batch_size", f"the batch ({job.train.batch_size}) must split evenly among "
                                             f"scaling.num_workers ({job.scaling.num_workers})"))
    return problems


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


def _user_path(loc: tuple, raw: Any) -> list[str]:
    """Drop the union tags pydantic puts into error locations, keeping the keys the user wrote."""
    keys: list[str] = []
    node = raw
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(node, dict) and part not in node and not last:
            continue  # a discriminator tag such as 'builtin'
        keys.append(str(part))
        node = node.get(part) if isinstance(node, dict) else (
            node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
    return keys


def _describe(error: dict, raw: dict, path: str | Path, lines: dict[str, int], set_keys: set[str]) -> str:
    keys = _user_path(tuple(error["loc"]), raw)
    if error["type"] == "union_tag_invalid":
        keys.append(str(error.get("ctx", {}).get("discriminator", "type")).strip("'"))
    dotted = ".".join(keys)
    line = next((lines[".".join(keys[:n])] for n in range(len(keys), 0, -1) if ".".join(keys[:n]) in lines), None)
    where = f"{path}:{line}" if line and dotted not in set_keys else str(path)
    label = f"{dotted} (from --set)" if dotted in set_keys else dotted or "(top level)"
    return f"{where}: {label}: {_problem(error)}"


def _problem(error: dict) -> str:
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    got = f" (got {value!r})"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(tuple(error["loc"][:-1]))
        return "unknown key" + (_did_you_mean(str(error["loc"][-1]), allowed) or
                                (f"; allowed: {', '.join(allowed)}" if allowed else ""))
    if kind == "missing":
        return "required key is missing"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {bound:g}{got}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}{got}"
    if kind == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"needs a `{ctx.get('discriminator', 'type').strip(chr(39))}` key"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer{got}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number{got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false{got}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}{got}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    message = error["msg"]
    return message[0].lower() + message[1:] + got


def _allowed_keys(loc: tuple) -> list[str]:
    """The field names of the section at a pydantic error location (following union tags)."""
    cls: type[BaseModel] = JobSpec
    parts = list(loc)
    while parts:
        field = cls.model_fields.get(str(parts.pop(0)))
        if field is None:
            return []
        classes = _models_in(field.annotation)
        if len(classes) > 1 and parts:
            tag = parts.pop(0)
            classes = [c for c in classes if c.model_fields.get("type") and c.model_fields["type"].default == tag]
        if len(classes) != 1:
            return []
        cls = classes[0]
    return list(cls.model_fields)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [cls for arg in get_args(annotation) for cls in _models_in(arg)]


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
