"""The job schema: YAML in, a typed and frozen ``JobSpec`` out, or one ``JobError`` naming file, line and key.

Every section is a pydantic model with ``extra="forbid"`` so that a typo is an error, never a silent default.
"""

from __future__ import annotations

import copy
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


class Download(_Section):
    """An archive (zip, tar, tar.gz) or single file fetched once into `<data.cache_dir>/downloads/`."""

    url: str = Field(description="http(s):// or file:// address of the archive.")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="Expected SHA-256 of the file; "
                               "a mismatch is an error. Without it the download is not verified (a warning says so).")


class _FolderSource(_Section):
    path: str = Field(description="Dataset folder (or file). With `download`, relative to the extracted archive.")
    download: Download | None = Field(None, description="Fetch and extract an archive first (cached).")


class ImageFolderSource(_FolderSource):
    """Class subfolders (`<class>/*.jpg`), optionally under split folders `train/`, `val/` or `validation/`, `test/`."""

    type: Literal["image_folder"] = "image_folder"
    task: str = Field("label", pattern=r"^[A-Za-z0-9_]+$", description="Name of the one task (the class).")


class CsvSource(_FolderSource):
    """A table with one row per image (e.g. Kaggle Fashion Product Images `styles.csv`); each label column a task.

    `path` is the table; `images` is a template relative to the table's folder, filled from the row's columns."""

    type: Literal["csv"] = "csv"
    images: str = Field(description="Image path template, e.g. `images/{id}.jpg` (`{column}` = the row's value).")
    labels: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")]] = Field(
        min_length=1, description="Label columns; each becomes a task with its own head.")
    keep_mode: str | None = Field(None, description="Keep only images in this PIL mode (e.g. `RGB`); others are "
                                  "skipped and counted.")
    keep_size: tuple[int, int] | None = Field(None, description="Keep only images of this [width, height].")
    min_count: int = Field(1, ge=1, description="Drop rows whose class (in any label column) has fewer images.")


class FilenameSource(_FolderSource):
    """One folder of images whose file names carry the label (`dog.10013.jpg`)."""

    type: Literal["filenames"] = "filenames"
    pattern: str = Field(r"^(?P<label>[^._]+)[._]", description="Regular expression searched in each file name; "
                         "its group `label` is the class. Files that do not match are skipped and counted.")
    task: str = Field("label", pattern=r"^[A-Za-z0-9_]+$", description="Name of the one task.")

    @field_validator("pattern")
    @classmethod
    def _has_label_group(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if "label" not in compiled.groupindex:
            raise ValueError(f"needs a named group (?P<label>...) (got {value!r})")
        return value


class MnistSource(_FolderSource):
    """The four MNIST IDX files (`train-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, ...), gzipped or not.

    The `t10k` files are the test split; validation is carved from the training files (`data.split.val`)."""

    type: Literal["mnist"] = "mnist"


class ParquetSource(_Section):
    """Shards written earlier by cnnjobs (a folder holding `dataset.json`; a local path or an s3:// / gs:// URI)."""

    type: Literal["parquet"] = "parquet"
    path: str = Field(description="The shard folder, e.g. `s3://bucket/shards/3f2a...`.")


Source = Annotated[Union[BuiltinSource, ImageFolderSource, CsvSource, FilenameSource, MnistSource, ParquetSource],
                   Field(discriminator="type")]


class AffineSpec(_Section):
    """A random affine transform (torchvision's RandomAffine)."""

    degrees: float = Field(0.0, ge=0, le=180, description="Rotation drawn from [-degrees, degrees].")
    translate: float = Field(0.0, ge=0, lt=1, description="Shift up to this fraction of width and height.")
    scale: tuple[float, float] = Field((1.0, 1.0), description="Scale factor drawn from [low, high].")
    shear: float = Field(0.0, ge=0, lt=90, description="Shear angle (degrees) drawn from [-shear, shear].")


class ColorJitterSpec(_Section):
    """Random brightness, contrast, saturation (factors drawn from [1-x, 1+x]) and hue shift ([-hue, hue] turns)."""

    brightness: float = Field(0.0, ge=0)
    contrast: float = Field(0.0, ge=0)
    saturation: float = Field(0.0, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)


class ResizedCropSpec(_Section):
    """A random crop of `scale` of the area and `ratio` aspect, resized back to `data.image_size`."""

    scale: tuple[float, float] = Field((0.08, 1.0), description="Area fraction [low, high].")
    ratio: tuple[float, float] = Field((0.75, 4 / 3), description="Aspect ratio [low, high].")


class ErasingSpec(_Section):
    """Random erasing: a rectangle of random noise (torchvision's RandomErasing)."""

    p: float = Field(0.5, ge=0, le=1, description="Probability per image.")
    scale: tuple[float, float] = Field((0.02, 0.33), description="Area fraction [low, high].")


class AugmentSpec(_Section):
    """Random changes to training images (train split only), redrawn every epoch, seeded by `data.seed`."""

    hflip: float = Field(0.0, ge=0, le=1, description="Probability of a horizontal flip (0.5 is usual).")
    vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip.")
    rotation: float = Field(0.0, ge=0, le=180, description="Rotation in degrees, drawn from [-rotation, rotation].")
    shift: float = Field(0.0, ge=0, lt=1, description="Keras width/height_shift_range: shift up to this fraction.")
    shear: float = Field(0.0, ge=0, lt=90, description="Keras shear_range in degrees.")
    zoom: float = Field(0.0, ge=0, lt=1, description="Keras zoom_range: scale drawn from [1-zoom, 1+zoom].")
    affine: AffineSpec | None = Field(None, description="torchvision-style RandomAffine (combined with the above).")
    fill: int = Field(0, ge=0, le=255, description="Value of pixels moved in from outside the image (255 = white).")
    color_jitter: float | ColorJitterSpec | None = Field(
        None, description="One number x = brightness, contrast and saturation x (torchvision ColorJitter(x, x, x)).")
    random_resized_crop: ResizedCropSpec | None = Field(None, description="RandomResizedCrop.")
    random_erasing: ErasingSpec | None = Field(None, description="RandomErasing.")


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
    augment: AugmentSpec | None = Field(None, description="Training-time augmentation (train split only).")
    on_error: Literal["skip", "fail"] = Field(
        "skip", description="Bad images and rows: `skip` them (listed in `<run>/skipped.csv`) or `fail` at the first."
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


class HeadSpec(_Section):
    """Options of one task's head (`model.heads.<task>`); tasks without an entry get the defaults."""

    weight: float = Field(1.0, gt=0, description="Factor of this task's loss in the summed loss.")
    output: Literal["softmax", "sigmoid"] = Field(
        "softmax", description="`sigmoid`: one logit with binary cross-entropy (two-class tasks only, as seed 000's "
        "`Dense(1, sigmoid)`); `softmax`: one logit per class with cross-entropy.")


class ModelSpec(_Section):
    """The architecture, looked up by name in the model registry (`cnnjobs models` lists them)."""

    arch: str = Field(description="Registered architecture name, e.g. `lenet5`.")
    dropout: float | None = Field(None, ge=0, lt=1, description="Dropout before the heads (seed CNNs' dense "
                                  "dropout, mobilenet_v2/efficientnet_b0's classifier dropout); the architecture's "
                                  "own if unset.")
    conv_dropout: float | None = Field(None, ge=0, lt=1, description="Dropout inside the seed CNNs' conv blocks; "
                                       "the architecture's own if unset.")
    width: float = Field(1.0, gt=0, description="Multiplies the channel and unit counts (seed CNNs; mobilenet_v2's "
                         "width_mult).")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout in front of each task's head (seed 002: 0.2).")
    heads: dict[str, HeadSpec] = Field(default_factory=dict, description="Per-task options, by task name.")
    pretrained: bool = Field(False, description="Start from torchvision's ImageNet weights (downloaded once to "
                             "torch's cache; torchvision architectures only).")
    weights: str | None = Field(None, description="Start from a local state dict: a cnnjobs `best_model.pt` or a "
                                "torchvision `.pth` file.")
    freeze: Literal["none", "backbone"] = Field("none", description="`backbone`: train only the heads (transfer "
                                                "learning, seed 003).")
    unfreeze_after: int | None = Field(None, gt=0, description="With `freeze: backbone`: train everything from "
                                       "this many epochs on.")

    @field_validator("arch")
    @classmethod
    def _registered(cls, value: str) -> str:
        from cnnjobs.models import list_models

        names = list_models()
        if value not in names:
            raise ValueError(f"unknown architecture {value!r}{_did_you_mean(value, names)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        if self.pretrained and self.weights:
            raise ValueError("give model.pretrained or model.weights, not both")
        if self.unfreeze_after is not None and self.freeze != "backbone":
            raise ValueError("unfreeze_after needs freeze: backbone")
        return self


# --------------------------------------------------------------------------------------------- train

# Combined metrics (`val/acc` = mean over tasks) and per-task ones (`val/<task>/top5`: tasks with > 5 classes).
_MONITOR = re.compile(r"^(train|val)/(([A-Za-z0-9_]+/)(loss|acc|f1|top5)|loss|acc|f1)$")
_MONITOR_HELP = "must look like val/loss, val/acc, val/f1 or val/<task>/acc|loss|f1|top5"


def metric_mode(metric: str) -> Literal["min", "max"]:
    """The natural direction of a metric: losses are better low, everything else high."""
    return "min" if metric.endswith("loss") else "max"


def _check_metric(value: str | None) -> str | None:
    if value is not None and not _MONITOR.match(value):
        raise ValueError(f"{_MONITOR_HELP} (got {value!r})")
    return value


class PlateauSchedule(_Section):
    """Multiply the LR by `factor` when `monitor` has not improved for `patience` validations (seed 004)."""

    type: Literal["plateau"] = "plateau"
    monitor: str | None = Field(None, description="Metric watched; `train.monitor` by default.")
    mode: Literal["min", "max"] | None = Field(None, description="By default `min` for losses, `max` otherwise.")
    factor: float = Field(0.1, gt=0, lt=1, description="New LR = LR x factor.")
    patience: int = Field(10, ge=0, description="Validations without improvement before lowering the LR.")
    min_delta: float = Field(1e-4, ge=0, description="Smallest change that counts as an improvement.")
    min_lr: float = Field(0.0, ge=0, description="The LR never goes below this.")

    @field_validator("monitor")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        return _check_metric(value)


class CosineSchedule(_Section):
    """Linear warmup from 0, then cosine decay to `min_lr` at the last epoch; updated every batch."""

    type: Literal["cosine"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, description="Epochs (fractions allowed) of linear warmup.")
    min_lr: float = Field(0.0, ge=0, description="LR reached at the end of training.")


class StepSchedule(_Section):
    """Multiply the LR by `gamma` every `step_size` epochs."""

    type: Literal["step"] = "step"
    step_size: int = Field(gt=0, description="Epochs between two reductions.")
    gamma: float = Field(0.1, gt=0, lt=1, description="New LR = LR x gamma.")


Schedule = Annotated[Union[PlateauSchedule, CosineSchedule, StepSchedule], Field(discriminator="type")]


class EarlyStoppingSpec(_Section):
    """Stop when `monitor` has not improved by `min_delta` for `patience` validations; the best epoch's weights
    are the ones kept and tested (seed 003)."""

    patience: int = Field(gt=0, description="Validations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")
    monitor: str | None = Field(None, description="Metric watched; `train.monitor` by default.")
    mode: Literal["min", "max"] | None = Field(None, description="By default `min` for losses, `max` otherwise.")

    @field_validator("monitor")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        return _check_metric(value)


class TrainSpec(_Section):
    """The optimization: epochs, batches, optimizer, schedule and what counts as the best epoch."""

    epochs: int = Field(10, gt=0, description="Passes over the training split (the most, with early stopping).")
    batch_size: int = Field(64, gt=0, description="Images per optimizer step, across all workers (each worker "
                            "takes batch_size / num_workers), so results do not depend on the number of workers.")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="The torch.optim optimizer.")
    lr: float = Field(1e-3, gt=0, description="Learning rate (the peak one with a schedule).")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum.")
    nesterov: bool = Field(False, description="SGD with Nesterov momentum (needs momentum > 0).")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for adamw).")
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradients' global norm to this value.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the (binary) cross-entropy.")
    schedule: Schedule | None = Field(None, description="LR schedule; `type` is plateau, cosine or step.")
    early_stopping: EarlyStoppingSpec | None = Field(None, description="Stop when validation stops improving.")
    validate_every: int = Field(1, gt=0, description="Validate every N epochs (and at the last one).")
    checkpoint_every: int = Field(1, gt=0, description="Checkpoint every N epochs (and at the last one).")
    keep_checkpoints: int = Field(2, gt=0, description="Checkpoints kept: the best K by `monitor`, plus the last.")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Mixed precision on GPU (autocast; "
                                                       "fp16 with gradient scaling). CPU always runs fp32.")
    channels_last: bool = Field(False, description="channels_last memory format on GPU (faster convolutions).")
    compile: bool = Field(False, description="torch.compile the model (first epoch slower, later ones faster).")
    seed: int = Field(0, description="Seed of weights init, shuffling and dropout: same seed, same metrics.")
    monitor: str = Field("val/acc", description="Metric that picks the best epoch (and checkpoints, early stopping, "
                         "plateau, Tune by default): `val/loss`, `val/acc`, `val/f1`, or `val/<task>/acc` etc.")
    mode: Literal["min", "max"] | None = Field(None, description="Whether `monitor` is better lower or higher; "
                                               "by default `min` for losses, `max` otherwise.")

    @field_validator("monitor")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return _check_metric(value)

    @model_validator(mode="after")
    def _consistent(self) -> "TrainSpec":
        if self.nesterov and not (self.optimizer == "sgd" and self.momentum > 0):
            raise ValueError("nesterov needs optimizer: sgd and momentum > 0")
        return self

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        """`mode`, or the natural direction of `monitor`."""
        return self.mode or metric_mode(self.monitor)


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


# ---------------------------------------------------------------------------------------------- tune

# Keys a search may vary: everything a trial decides by itself. Shards are prepared once for all trials, so the
# data keys baked into them (source, size, split, ...) are fixed, and so are scaling and output.
TUNABLE = ("model.", "train.", "data.normalize")


class Dimension(_Section):
    """One searched key: exactly one of `choice`, `grid`, `uniform`, `loguniform`, `randint`."""

    choice: list[Any] | None = Field(None, min_length=1, description="Sample one of these values.")
    grid: list[Any] | None = Field(None, min_length=1, description="Try every value (crossed with other grids).")
    uniform: tuple[float, float] | None = Field(None, description="[low, high]: a float, uniformly.")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high]: a float, uniform in log space.")
    randint: tuple[int, int] | None = Field(None, description="[low, high): an integer.")

    @model_validator(mode="after")
    def _one_kind(self) -> "Dimension":
        kinds = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of choice, grid, uniform, loguniform, randint "
                             f"(got {', '.join(kinds) or 'none'})")
        bounds = self.uniform or self.loguniform or self.randint
        if bounds and not bounds[0] < bounds[1]:
            raise ValueError(f"{kinds[0]}: low must be < high (got {list(bounds)})")
        if self.loguniform and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform: bounds must be > 0 (got {list(self.loguniform)})")
        return self

    @property
    def probes(self) -> list[Any]:
        """Values a trial may get that together cover the edges: every listed value, or both bounds."""
        if self.choice is not None or self.grid is not None:
            return list(self.choice if self.choice is not None else self.grid)
        if self.randint:
            return [self.randint[0], self.randint[1] - 1]
        return list(self.uniform or self.loguniform)


class TuneSpec(_Section):
    """An architecture / hyperparameter search (`cnnjobs tune`): trials sampled from `space`, early-stopped by ASHA."""

    space: dict[str, Dimension] = Field(min_length=1, description="Dotted job key -> values to search, e.g. "
                                        "`train.lr: {loguniform: [1.0e-4, 1.0e-1]}`.")
    num_samples: int = Field(1, ge=1, description="Trials sampled from the space (each repeats every `grid`).")
    seed: int | None = Field(None, description="Seed of the sampling: the same seed samples the same trials; "
                             "`train.seed` by default.")
    scheduler: Literal["asha", "none"] = Field("asha", description="`asha` stops poor trials early; `none` runs "
                                                "every trial for `train.epochs`.")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs every trial runs before it can be stopped.")
    reduction_factor: float = Field(3, gt=1, description="ASHA: keep about 1/reduction_factor of the trials at "
                                    "each rung (epochs grace_period x reduction_factor^k).")
    metric: str | None = Field(None, description="Metric that ranks trials; `train.monitor` by default.")
    mode: Literal["min", "max"] | None = Field(None, description="Whether `metric` is better lower or higher; "
                                               "by default `min` for losses, `max` otherwise.")
    max_concurrent_trials: int | None = Field(None, ge=1, description="Upper bound on trials at once; the CPUs and "
                                              "GPUs of the cluster may allow fewer (`cnnjobs tune` says which).")
    time_budget_s: float | None = Field(None, gt=0, description="Stop the search after this many seconds.")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        return _check_metric(value)

    @field_validator("space")
    @classmethod
    def _tunable(cls, value: dict[str, Dimension]) -> dict[str, Dimension]:
        for key in value:
            if not key.startswith(TUNABLE):
                raise ValueError(f"cannot search {key!r}: only model.*, train.* and data.normalize vary between "
                                 "trials (the shards are prepared once for all of them)")
        return value


class JobSpec(_Section):
    """One training job."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Job name; names the run folder.")
    description: str = Field("", description="Free text shown by `cnnjobs show`.")
    data: DataSpec
    model: ModelSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    tune: TuneSpec | None = Field(None, description="A search over this job's keys, run by `cnnjobs tune`.")

    def to_yaml(self) -> str:
        """The resolved job (defaults filled in) as YAML that `load_job` reads back to an equal spec."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude={"tune"} if self.tune is None else None),
                              sort_keys=False)

    @property
    def tune_metric(self) -> tuple[str, Literal["min", "max"]]:
        """The metric and mode that rank the trials of a search: `tune.metric`, else `train.monitor`."""
        if self.tune is None or self.tune.metric is None:
            return self.train.monitor, (self.tune and self.tune.mode) or self.train.monitor_mode
        return self.tune.metric, self.tune.mode or metric_mode(self.tune.metric)


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
    if job.tune is not None:
        _check_space(job.tune, raw, path, lines or {})
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
        where = f"{path}:{lines[dotted]}" if dotted in lines else str(path)
        for value in dimension.probes:
            try:
                trial = JobSpec.model_validate(apply_values(raw, {key: value}))
            except ValidationError as exc:
                first = exc.errors()[0]
                if first["type"] == "extra_forbidden" or first["type"] == "model_attributes_type":
                    raise JobError(f"{where}: {dotted}: not a job key ({_problem(first)})") from None
                raise JobError(f"{where}: {dotted}: value {value!r}: {_problem(first)}") from None
            except JobError as exc:
                raise JobError(f"{where}: {dotted}: not a job key ({exc})") from None
            for _, problem in _cross_checks(trial):
                raise JobError(f"{where}: {dotted}: value {value!r}: {problem}")


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
