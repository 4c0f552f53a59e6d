"""The `data:` section: the source and its layout, the size images are stored at, split, normalization, augmentation."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from cnnjobs.spec.base import Section, Size


class BuiltinSource(Section):
    """A dataset that ships with an installed package (no download)."""

    type: Literal["builtin"] = "builtin"
    name: Literal["digits"] = Field(description="`digits`: scikit-learn's 1,797 real 8x8 handwritten digits.")


class Download(Section):
    """An archive (zip, tar, tar.gz) or single file fetched once into `<data.cache_dir>/downloads/`."""

    url: str = Field(description="http(s):// or file:// address of the archive.")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="Expected SHA-256 of the file; "
                               "a mismatch is an error. Without it the download is not verified (a warning says so).")


class _PathSource(Section):
    path: str = Field(description="Dataset folder (or file). With `download`, relative to the extracted archive.")
    hint: str | None = Field(None, description="How to get the data (a command, a URL, the offline stand-in): "
                             "printed with the error when `path` does not exist.")


class _FolderSource(_PathSource):
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

    @field_validator("images")
    @classmethod
    def _under_the_table(cls, value: str) -> str:
        if value.startswith(("/", "~")) or ".." in re.split(r"[/\\]", value):
            raise ValueError(f"must be a path under the table's folder (relative, without '..'): the table and "
                             f"its images travel together (got {value!r})")
        return value


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


class ParquetSource(_PathSource):
    """Shards written earlier by cnnjobs (a folder holding `dataset.json`; a local path or an s3:// / gs:// URI)."""

    type: Literal["parquet"] = "parquet"
    path: str = Field(description="The shard folder, e.g. `s3://bucket/shards/3f2a...`.")


Source = Annotated[Union[BuiltinSource, ImageFolderSource, CsvSource, FilenameSource, MnistSource, ParquetSource],
                   Field(discriminator="type")]


class AffineSpec(Section):
    """A random affine transform (torchvision's RandomAffine)."""

    degrees: float = Field(0.0, ge=0, le=180, description="Rotation drawn from [-degrees, degrees].")
    translate: float = Field(0.0, ge=0, lt=1, description="Shift up to this fraction of width and height.")
    scale: tuple[float, float] = Field((1.0, 1.0), description="Scale factor drawn from [low, high].")
    shear: float = Field(0.0, ge=0, lt=90, description="Shear angle (degrees) drawn from [-shear, shear].")


class ColorJitterSpec(Section):
    """Random brightness, contrast, saturation (factors drawn from [1-x, 1+x]) and hue shift ([-hue, hue] turns)."""

    brightness: float = Field(0.0, ge=0)
    contrast: float = Field(0.0, ge=0)
    saturation: float = Field(0.0, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)


class ResizedCropSpec(Section):
    """A random crop of `scale` of the area and `ratio` aspect, resized back to `data.image_size`."""

    scale: tuple[float, float] = Field((0.08, 1.0), description="Area fraction [low, high].")
    ratio: tuple[float, float] = Field((0.75, 4 / 3), description="Aspect ratio [low, high].")


class ErasingSpec(Section):
    """Random erasing: a rectangle of random noise (torchvision's RandomErasing)."""

    p: float = Field(0.5, ge=0, le=1, description="Probability per image.")
    scale: tuple[float, float] = Field((0.02, 0.33), description="Area fraction [low, high].")


class AugmentSpec(Section):
    """Random changes to training images (train split only), redrawn every epoch, seeded by `data.seed`."""

    hflip: float = Field(0.0, ge=0, le=1, description="Probability of a horizontal flip (0.5 is usual).")
    vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip.")
    rotation: float = Field(0.0, ge=0, le=180, description="Rotation in degrees, drawn from [-rotation, rotation].")
    shift: float = Field(0.0, ge=0, lt=1, description="Keras width/height_shift_range: shift up to this fraction.")
    shear: float = Field(0.0, ge=0, lt=90, description="Keras shear_range in degrees.")
    zoom: float = Field(0.0, ge=0, lt=1, description="Keras zoom_range: scale drawn from [1-zoom, 1+zoom].")
    affine: AffineSpec | None = Field(None, description="torchvision-style RandomAffine (combined with the above).")
    fill: int = Field(0, ge=0, le=255, description="Value of pixels moved in from outside the image (255 = white); "
                      "used with `fill_mode: constant`.")
    fill_mode: Literal["constant", "nearest"] = Field(
        "constant", description="Pixels moved in from outside: `constant` (`fill`, torchvision's default) or "
        "`nearest` (the closest edge pixel, Keras' default).")
    color_jitter: float | ColorJitterSpec | None = Field(
        None, description="One number x = brightness, contrast and saturation x (torchvision ColorJitter(x, x, x)).")
    random_resized_crop: ResizedCropSpec | None = Field(None, description="RandomResizedCrop.")
    random_erasing: ErasingSpec | None = Field(None, description="RandomErasing.")


class SplitSpec(Section):
    """Fractions of the data held out for validation and test when the source has no split of its own."""

    val: float = Field(0.15, ge=0, lt=1, description="Fraction of each class held out for validation.")
    test: float = Field(0.15, ge=0, lt=1, description="Fraction of each class held out for the final test.")

    @model_validator(mode="after")
    def _leaves_training_data(self) -> "SplitSpec":
        if self.val + self.test >= 1:
            raise ValueError(f"val + test must be < 1 (got {self.val + self.test:g})")
        return self


class DataSpec(Section):
    """Where the images come from and how they are stored for training."""

    source: Source = Field(description="The dataset to read; `type` selects the reader.")
    image_size: Size = Field(description="Height and width every image is resized to once, when the shards are "
                             "written (one number means a square).")
    channels: Literal[1, 3] = Field(3, description="1 = grayscale, 3 = RGB; images are converted to this.")
    split: SplitSpec = Field(default_factory=SplitSpec, description="Held-out fractions, stratified by class.")
    seed: int = Field(0, description="Seed of the train/val/test split.")
    normalize: Literal["dataset", "imagenet", "none"] = Field(
        "dataset", description="Per-channel mean/std: measured on the train split, ImageNet's, or none (x/255).")
    cache_dir: str = Field("~/.cache/cnnjobs", description="Where Parquet shards are cached (a local path or a "
                           "pyarrow URI).")
    augment: AugmentSpec | None = Field(None, description="Training-time augmentation (train split only).")
    on_error: Literal["skip", "fail"] = Field(
        "skip", description="Bad images and rows: `skip` them (listed in `<run>/skipped.csv`) or `fail` at the first.")

    @field_validator("image_size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8:
            raise ValueError(f"must be at least 8 pixels (got {list(value)})")
        return value

    @property
    def task_names(self) -> list[str] | None:
        """The tasks the source will give, known before reading it (None for shards, which say so themselves)."""
        source = self.source
        if isinstance(source, (BuiltinSource, MnistSource)):
            return ["digit"]
        if isinstance(source, CsvSource):
            return list(source.labels)
        if isinstance(source, (ImageFolderSource, FilenameSource)):
            return [source.task]
        return None
