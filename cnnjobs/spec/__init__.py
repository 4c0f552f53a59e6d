"""The job schema: YAML in, a typed and frozen `JobSpec` out, or one `JobError` naming file, line and key.

One module per section (`data`, `model`, `train`, `scaling`, `tune`), the whole job and its cross-section rules
in `job`, reading and overrides in `loader`, error wording in `messages`, the README reference and JSON Schema in
`docs`. Imports neither torch nor ray: validating a job is instant.
"""

from cnnjobs.spec.data import (
                               AffineSpec,
                               AugmentSpec,
                               BuiltinSource,
                               ColorJitterSpec,
                               CsvSource,
                               DataSpec,
                               Download,
                               ErasingSpec,
                               FilenameSource,
                               ImageFolderSource,
                               MnistSource,
                               ParquetSource,
                               ResizedCropSpec,
                               SplitSpec,
)
from cnnjobs.spec.job import JobSpec, cross_checks, task_problems
from cnnjobs.spec.loader import apply_values, load_job, parse_override, validate_job
from cnnjobs.spec.model import HeadSpec, ModelSpec
from cnnjobs.spec.scaling import MlflowSpec, OutputSpec, ScalingSpec
from cnnjobs.spec.train import CosineSchedule, EarlyStoppingSpec, PlateauSchedule, StepSchedule, TrainSpec
from cnnjobs.spec.tune import TUNABLE, Dimension, TuneSpec

__all__ = [
    "AffineSpec", "AugmentSpec", "BuiltinSource", "ColorJitterSpec", "CosineSchedule", "CsvSource", "DataSpec",
    "Dimension", "Download", "EarlyStoppingSpec", "ErasingSpec", "FilenameSource", "HeadSpec", "ImageFolderSource",
    "JobSpec", "MlflowSpec", "MnistSource", "ModelSpec", "OutputSpec", "ParquetSource", "PlateauSchedule",
    "ResizedCropSpec", "ScalingSpec", "SplitSpec", "StepSchedule", "TUNABLE", "TrainSpec", "TuneSpec", "apply_values",
    "cross_checks", "load_job", "parse_override", "task_problems", "validate_job",
]
