"""The catalogue of what users get wrong, each answered in one line: how to make the mistake and the line cnnjobs
prints. `python -m tests.bad_input` runs it and prints the README's Markdown table of the lines.

A case's job is YAML text, or changes (dotted key -> value, DROP to remove one) to a shipped job; `make` (see
makers.py) writes the case's files into its workspace and may return more `{name}` values. In the job, the
arguments and the message, `{ws}` is the workspace, `{job}` the job file and `{line[dotted.key]}` the key's line
in it. `at` is the key or path at fault, `file` the file the message must name.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tests.bad_input.makers import (
    HEADER,
    ROWS,
    a_zip_file,
    class_folders_at,
    download_source,
    empty_folder,
    empty_val_folder,
    images_with_a_bomb,
    lfs_pointers,
    misspelt_val_folder,
    other_run,
    photo_named_yaml,
    pickled_weights,
    run_with_a_corrupt_summary,
    search_run,
    served,
    shards,
    table,
    tar_with,
    unmatched_photos,
    zip_with,
)
from tests.bad_input.workspace import DROP, EARLIER_RUN

AREAS = ("config", "data", "runs", "security")


@dataclass(frozen=True)
class Case:
    """One mistake: how to make it, and the line cnnjobs answers it with."""

    id: str
    area: str
    message: str  # the line after `cnnjobs: error: `; a regex matching all of it when `regex`
    at: str  # the key or path the message must name
    job: str | dict | None = None
    base: str = "jobs/digits_lenet.yaml"
    args: tuple[str, ...] = ("submit", "{job}")
    make: Callable[[Path], dict[str, str] | None] | None = field(default=None, compare=False)
    file: str = "{job}"
    regex: bool = False
    loads_only: bool = False  # refused while the job file is read: run in-process, imports neither torch nor ray
    needs_no_gpu: bool = False  # only a mistake on a machine without a GPU


def early(id: str, message: str, at: str, job: str | dict | None = None, area: str = "config", **more) -> Case:
    """A case refused while the job file is read (in-process: no torch, no Ray)."""
    return Case(id, area, message, at, job, loads_only=True, **more)


SHARDS = {"data.source": {"type": "parquet", "path": "{ws}/data/shards"}, "data.image_size": 16,
          "data.channels": 1}
TABLE = {"data.source.path": "{ws}/data/fashion/styles.csv", "data.source.images": "images/{id}.png",
         "data.source.keep_size": None, "data.source.min_count": 1}
RUN = "{ws}/" + EARLIER_RUN
OTHER_RUN = "{ws}/runs/digits_lenet/20260101-000000-0002"
SEARCH_RUN = "{ws}/runs/arch_search/20260101-000000-0003"
HINT = "cnnjobs data synth folder /tmp/cfl, then --set data.source.path=/tmp/cfl/car_frog_lizard"
CFL = "jobs/cfl_folder.yaml"
FASHION = "jobs/fashion_multi.yaml"
TOO_DEEP = "a: " + "[" * 40 + "]" * 40 + "\n"
BOMB = "name: t\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))


CASES: list[Case] = [
    # ------------------------------------------------------------- config: the job file alone (no torch, no Ray)
    early("not_yaml", "{job}:3: invalid YAML: mapping values are not allowed here", "{job}:3",
          "import torch\nmodel = Net()\nfor epoch in range(10):\n    train(model)\n"),
    early("binary_job_file", "{ws}/photo.yaml: not a YAML job file (not UTF-8 text)", "{ws}/photo.yaml",
          args=("submit", "{ws}/photo.yaml"), file="{ws}/photo.yaml", make=photo_named_yaml),
    early("empty_file", "{job}: the job file is empty (it needs name, data and model; see jobs/digits_lenet.yaml)",
          "{job}", ""),
    early("top_level_list", "{job}: a job file must be a mapping of sections (name, data, model, ...), not a list",
          "{job}", "- name: t\n- model: {arch: lenet5}\n"),
    early("tab_indent", "{job}:3: invalid YAML: a tab character: YAML is indented with spaces only", "{job}:3",
          "name: t\ntrain:\n\tepochs: 3\n"),
    early("duplicate_key", "{job}:5: train.lr: duplicate key, first given on line 3 (only one of them can count: "
          "remove the other)", "train.lr", "name: t\ntrain:\n  lr: 0.1\n  epochs: 2\n  lr: 0.01\n"),
    early("unknown_key_suggest", "{job}:{line[train.epocs]}: train.epocs: unknown key; did you mean 'epochs'?",
          "train.epocs", {"train.epocs": 3}),
    early("unknown_key_list", "{job}:{line[scaling.gpus]}: scaling.gpus: unknown key; allowed: num_workers, "
          "use_gpu, cpus_per_worker, placement, in_process", "scaling.gpus", {"scaling.gpus": 2}),
    early("unknown_section_suggest", "{job}:{line[training]}: training: unknown key; did you mean 'train'?",
          "training", {"training": {"epochs": 3}}),
    early("section_not_a_mapping", "{job}:{line[train]}: train: must be a section (key: value pairs) (got 5)",
          "train", {"train": 5}),
    early("wrong_type", "{job}:{line[train.epochs]}: train.epochs: must be an integer (got 'ten')", "train.epochs",
          {"train.epochs": "ten"}),
    early("negative_lr", "{job}:{line[train.lr]}: train.lr: must be > 0 (got -1)", "train.lr", {"train.lr": -1}),
    early("batch_size_zero", "{job}:{line[train.batch_size]}: train.batch_size: must be > 0 (got 0)",
          "train.batch_size", {"train.batch_size": 0}),
    early("epochs_zero", "{job}:{line[train.epochs]}: train.epochs: must be > 0 (got 0)", "train.epochs",
          {"train.epochs": 0}),
    early("split_val_too_big", "{job}:{line[data.split.val]}: data.split.val: must be < 1 (got 1.5)",
          "data.split.val", {"data.split": {"val": 1.5, "test": 0.15}}),
    early("split_leaves_no_train", "{job}:{line[data.split]}: data.split: val + test must be < 1 (got 1)",
          "data.split", {"data.split": {"val": 0.5, "test": 0.5}}),
    early("missing_model", "{job}: model: required key is missing", "model", {"model": DROP}),
    early("missing_name", "{job}: name: required key is missing", "name", {"name": DROP}),
    early("bad_name", "{job}:{line[name]}: name: must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$ (got 'my job')", "name",
          {"name": "my job"}),
    early("unknown_arch_suggest", "{job}:{line[model.arch]}: model.arch: unknown architecture 'lenet'; did you "
          "mean 'lenet5'?", "model.arch", {"model.arch": "lenet"}),
    early("unknown_arch_list", "{job}:{line[model.arch]}: model.arch: unknown architecture 'transformer'; known: "
          "bn_cnn, catsdogs_cnn, cfl_cnn, convnext_tiny, efficientnet_b0, lenet5, mobilenet_v2, resnet18, "
          "resnet50, resnext50_32x4d", "model.arch", {"model.arch": "transformer"}),
    early("unknown_optimizer", "{job}:{line[train.optimizer]}: train.optimizer: must be one of 'sgd', 'adam' or "
          "'adamw' (got 'rmsprop')", "train.optimizer", {"train.optimizer": "rmsprop"}),
    early("unknown_schedule", "{job}:{line[train.schedule.type]}: train.schedule.type: unknown type "
          "'exponential'; expected one of 'plateau', 'cosine', 'step'", "train.schedule.type",
          {"train.schedule": {"type": "exponential"}}),
    early("nesterov_without_sgd", "{job}:{line[train]}: train: nesterov needs optimizer: sgd and momentum > 0",
          "train", {"train.nesterov": True, "train.optimizer": "adam"}),
    early("monitor_bad_shape", "{job}:{line[train.monitor]}: train.monitor: must look like val/loss, val/acc, "
          "val/f1 or val/<task>/acc|loss|f1|top5 (got 'val/accuracy')", "train.monitor",
          {"train.monitor": "val/accuracy"}),
    early("monitor_test_split", "{job}:{line[train.monitor]}: train.monitor: the test split is measured once, at "
          "the end; monitor val/... instead (got 'test/acc')", "train.monitor", {"train.monitor": "test/acc"}),
    early("monitor_unknown_task", "{job}:{line[train.monitor]}: train.monitor: no task 'colour' in the data "
          "(tasks: digit)", "train.monitor", {"train.monitor": "val/colour/acc"}),
    early("tune_unknown_key", "{job}:{line[tune.space.train.lrr]}: tune.space.train.lrr: not a job key (unknown "
          "key; did you mean 'lr'?)", "tune.space.train.lrr", {"tune": {"space": {"train.lrr": {"choice": [0.1]}}}}),
    early("tune_invalid_value", "{job}:{line[tune.space.train.lr]}: tune.space.train.lr: value -1: must be > 0 "
          "(got -1)", "tune.space.train.lr", {"tune": {"space": {"train.lr": {"choice": [0.1, -1]}}}}),
    early("tune_data_key", "{job}:{line[tune.space]}: tune.space: cannot search 'data.image_size': only model.*, "
          "train.* and data.normalize vary between trials (the shards are prepared once for all of them)",
          "tune.space", {"tune": {"space": {"data.image_size": {"choice": [28, 32]}}}}),
    early("set_without_equals", "{job}: --set train.lr: expected key.path=value, e.g. train.lr=0.01", "train.lr",
          args=("submit", "{job}", "--set", "train.lr")),
    early("set_bad_path", "{job}: --set name.x: name is not a section", "name.x",
          args=("submit", "{job}", "--set", "name.x=1")),
    early("set_wrong_type", "{job}: train.epochs (from --set): must be an integer (got 'ten')", "train.epochs",
          args=("submit", "{job}", "--set", "train.epochs=ten")),
    early("set_unknown_key", "{job}: train.epocs (from --set): unknown key; did you mean 'epochs'?", "train.epocs",
          args=("submit", "{job}", "--set", "train.epocs=3")),
    early("job_file_missing", "{ws}/jobs/x.yaml: no such file", "{ws}/jobs/x.yaml",
          args=("submit", "{ws}/jobs/x.yaml"), file="{ws}/jobs/x.yaml"),
    early("job_file_is_folder", "{ws}/runs: is a folder, not a job file", "{ws}/runs", args=("submit", "{ws}/runs"),
          file="{ws}/runs"),
    early("width_on_resnet18", "{job}:{line[model.width]}: model.width: resnet18 has a fixed width (only the seed "
          "CNNs and mobilenet_v2 take one)", "model.width", {"model.arch": "resnet18", "model.width": 2}),
    early("conv_dropout_on_lenet5", "{job}:{line[model.conv_dropout]}: model.conv_dropout: lenet5 has no dropout "
          "in its conv blocks", "model.conv_dropout", {"model.conv_dropout": 0.2}),
    early("pretrained_on_seed_cnn", "{job}:{line[model.pretrained]}: model.pretrained: lenet5 has no pretrained "
          "weights (only the torchvision architectures do); use model.weights: PATH for weights of your own",
          "model.pretrained", {"model.pretrained": True}),
    early("image_too_small", "{job}:{line[data.image_size]}: data.image_size: lenet5 needs images of at least 16 "
          "px (got [12, 12])", "data.image_size", {"data.image_size": 12}),
    early("image_size_one_item", "{job}:{line[data.image_size]}: data.image_size: must be one number or [height, "
          "width] (got [28])", "data.image_size", {"data.image_size": [28]}),
    early("in_process_two_workers", "{job}:{line[scaling.in_process]}: scaling.in_process: true runs one loop in "
          "the driver process; it cannot run 2 workers (set it to auto or false)", "scaling.in_process",
          {"scaling.in_process": True, "scaling.num_workers": 2}),
    early("batch_not_divisible", "{job}:{line[train.batch_size]}: train.batch_size: the batch (32) must split "
          "evenly among scaling.num_workers (3)", "train.batch_size", {"scaling.num_workers": 3}),
    early("use_gpu_bad_value", "{job}:{line[scaling.use_gpu]}: scaling.use_gpu: must be true or false, or 'auto' "
          "(got 'yes please')", "scaling.use_gpu", {"scaling.use_gpu": "yes please"}),
    early("source_without_type", "{job}:{line[data.source]}: data.source: needs a `type` key", "data.source",
          {"data.source": {"path": "data/x"}}),
    early("unknown_source_type", "{job}:{line[data.source.type]}: data.source.type: unknown type 'folder'; "
          "expected one of 'builtin', 'image_folder', 'csv', 'filenames', 'mnist', 'parquet'", "data.source.type",
          {"data.source": {"type": "folder", "path": "data/x"}}),
    # ------------------------------------------------------------- data: refused once the data is listed, before Ray
    Case("data_path_missing_hint", "data", "{job}: data.source.path: {ws}/data/car_frog_lizard does not exist; "
         + HINT, "{ws}/data/car_frog_lizard", {"data.source.path": "{ws}/data/car_frog_lizard",
                                                "data.source.hint": HINT}, CFL),
    Case("data_path_is_file", "data", "{job}: data.source.path: {ws}/data/cfl.zip is a file; type image_folder "
         "reads a folder; extract the archive, or name it in data.source.download", "{ws}/data/cfl.zip",
         {"data.source.path": "{ws}/data/cfl.zip"}, CFL, make=a_zip_file),
    Case("csv_path_is_folder", "data", "{job}: data.source.path: {ws}/data/fashion is a folder; a csv source reads "
         "the table file, e.g. {ws}/data/fashion/styles.csv", "{ws}/data/fashion",
         {**TABLE, "data.source.path": "{ws}/data/fashion"}, FASHION, make=table()),
    Case("data_empty_folder", "data", "{job}: data.source.path: {ws}/data/cfl has no class subfolders (expected "
         "{ws}/data/cfl/<class>/<image>)", "{ws}/data/cfl", {"data.source.path": "{ws}/data/cfl"}, CFL,
         make=empty_folder("data/cfl")),
    Case("data_one_class", "data", "{job}: data.source: task 'label' has 1 class (car); a classifier needs two or "
         "more", "data.source", {"data.source.path": "{ws}/data/cfl"}, CFL,
         make=class_folders_at("data/cfl", ("car",))),
    Case("split_folder_empty", "data", "{job}: data.source.path: the val split folder {ws}/data/cfl/val has no "
         "images", "{ws}/data/cfl/val", {"data.source.path": "{ws}/data/cfl"}, CFL, make=empty_val_folder),
    Case("class_missing_from_train", "data", "{job}: data.source.path: class 'lizzard' has images in the val split "
         "folder {ws}/data/cfl/val but none in train (which has 'lizard': misspelt?); a class must be trained on",
         "{ws}/data/cfl/val", {"data.source.path": "{ws}/data/cfl"}, CFL, make=misspelt_val_folder),
    Case("csv_missing_label_column", "data", "{job}: data.source.labels: {ws}/data/fashion/styles.csv has no "
         "column 'baseColour' (columns: id, gender, articleType)", "data.source.labels", TABLE, FASHION,
         make=table([row[:3] for row in ROWS], HEADER[:3])),
    Case("csv_template_missing_column", "data", "{job}: data.source.images: 'images/{image_id}.png' names a column "
         "'image_id' that {ws}/data/fashion/styles.csv does not have (columns: id, gender, articleType, baseColour)",
         "data.source.images", {**TABLE, "data.source.images": "images/{image_id}.png"}, FASHION, make=table()),
    Case("csv_no_usable_rows", "data", "{job}: data.source.path: {ws}/data/fashion/styles.csv: no usable rows (3 "
         "skipped; first: {ws}/data/fashion/styles.csv:2: image file not found: {ws}/data/fashion/img/0.png)",
         "{ws}/data/fashion/styles.csv", {**TABLE, "data.source.images": "img/{id}.png"}, FASHION, make=table()),
    Case("every_image_corrupt", "data", r"{job}: data\.source: the train split has no usable images \(9 skipped; "
         r"first: {ws}/data/cfl/\w+/\w+\.png: not an image or an unsupported format\)", "data.source",
         {"data.source.path": "{ws}/data/cfl"}, CFL, ("data", "prepare", "{job}"), lfs_pointers, file="{ws}/data/cfl",
         regex=True),
    Case("filenames_no_match", "data", "{job}: data.source.pattern: no file name under {ws}/data/photos matches "
         "'^(?P<label>cat|dog)\\\\.'", "data.source.pattern",
         {"data.source": {"type": "filenames", "path": "{ws}/data/photos", "pattern": r"^(?P<label>cat|dog)\."}},
         CFL, make=unmatched_photos),
    Case("mnist_files_missing", "data", "{job}: data.source.path: {ws}/data/mnist has no train-images-idx3-ubyte[.gz] "
         "(the four MNIST IDX files)", "{ws}/data/mnist", {"data.source.path": "{ws}/data/mnist"},
         "jobs/mnist_lenet.yaml", make=empty_folder("data/mnist")),
    Case("too_many_workers", "data", r"{job}: scaling\.num_workers: 64 worker\(s\) x 1 CPU need 64 CPUs but this "
         r"machine has \d+; lower scaling\.num_workers or scaling\.cpus_per_worker, or submit to a cluster with "
         r"--address", "scaling.num_workers", {"scaling.num_workers": 64, "train.batch_size": 64}, regex=True),
    Case("use_gpu_without_gpu", "data", "{job}: scaling.use_gpu: true needs 1 GPU(s), one per worker, but this "
         "machine has 0; set scaling.use_gpu: auto (GPU when there is one) or false", "scaling.use_gpu",
         {"scaling.use_gpu": True}, needs_no_gpu=True),
    Case("parquet_without_shards", "data", "{job}: data.source.path: {ws}/data/shards holds no cnnjobs shards (no "
         "dataset.json)", "{ws}/data/shards", SHARDS, make=empty_folder("data/shards")),
    Case("shards_other_format", "data", "{job}: data.source.path: {ws}/data/shards holds shards of format 2, written "
         "by another version of cnnjobs (this one reads format 1); write them again from the original images",
         "{ws}/data/shards", SHARDS, make=shards(lambda manifest: manifest.update(format=2))),
    Case("shards_other_size", "data", "{job}: data.image_size: the shards at {ws}/data/shards hold 16x16 images with "
         "1 channel(s); set data.image_size: [16, 16] and data.channels: 1", "data.image_size",
         {**SHARDS, "data.image_size": 28}, make=shards()),
    Case("head_for_missing_task", "data", "{job}: model.heads.colour: no task 'colour' in the data (tasks: label)",
         "model.heads.colour", {**SHARDS, "model.heads": {"colour": {"weight": 2}}}, make=shards()),
    Case("sigmoid_on_three_classes", "data", "{job}: model.heads.label.output: sigmoid needs two classes (label "
         "has 3)", "model.heads.label.output",
         {"data.source.path": "{ws}/data/cfl", "model.heads": {"label": {"output": "sigmoid"}}}, CFL,
         make=class_folders_at("data/cfl")),
    Case("top5_on_three_classes", "data", "{job}: train.monitor: label has 3 classes; top5 needs more than 5",
         "train.monitor", {"data.source.path": "{ws}/data/cfl", "train.monitor": "val/label/top5"}, CFL,
         make=class_folders_at("data/cfl")),
    Case("weights_missing", "data", "{job}: model.weights: no such file {ws}/weights/best.pt", "model.weights",
         {"model.weights": "{ws}/weights/best.pt"}),
    Case("download_unreachable", "data", r"{job}: data\.source\.download\.url: cannot download "
         r"file://{ws}/www/cfl\.zip: .*No such file or directory.*", "data.source.download.url",
         download_source("file://{ws}/www/cfl.zip", "0" * 64), CFL, regex=True),
    Case("tune_without_space", "data", "{job}: no `tune:` section to search (see jobs/arch_search.yaml)", "tune",
         args=("tune", "{job}")),
    # ------------------------------------------------------------- runs: earlier runs, looked up and reopened
    Case("show_missing_run", "runs", "nope: no such run (not a run folder, and no run id 'nope' under {ws}/runs/)",
         "nope", args=("show", "nope", "--dir", "{ws}/runs"), file="{ws}/runs"),
    Case("show_incomplete_run", "runs", OTHER_RUN + ": incomplete run folder (no summary.json: the run stopped "
         "before writing it)", OTHER_RUN, args=("show", OTHER_RUN), file=OTHER_RUN,
         make=other_run("20260101-000000-0002", ("job.yaml",))),
    Case("show_newer_summary", "runs", OTHER_RUN + "/summary.json: written by a newer cnnjobs (summary schema 99; "
         "this one reads up to 2); upgrade cnnjobs to read it", "summary.json", args=("show", OTHER_RUN),
         file=OTHER_RUN, make=other_run("20260101-000000-0002", ("job.yaml", "summary.json"), schema_version=99)),
    Case("show_corrupt_summary", "runs", OTHER_RUN + "/summary.json:1:12: unreadable summary "
         "(Unterminated string)", "summary.json", args=("show", OTHER_RUN), file=OTHER_RUN,
         make=run_with_a_corrupt_summary),
    Case("resume_missing_run", "runs", "nope: no such run (not a run folder, and no run id 'nope' under {ws}/runs/)",
         "nope", args=("submit", "--resume", "nope", "--dir", "{ws}/runs"), file="{ws}/runs"),
    Case("resume_succeeded_run", "runs", RUN + ": the run finished already (succeeded at epoch 2); nothing to resume. "
         "To train again: cnnjobs submit " + RUN + "/job.yaml", RUN, args=("submit", "--resume", RUN), file=RUN),
    Case("resume_search", "runs", SEARCH_RUN + ": a search; continue it with cnnjobs tune --resume " + SEARCH_RUN,
         SEARCH_RUN, args=("submit", "--resume", SEARCH_RUN), make=search_run,
         file=SEARCH_RUN),
    Case("export_missing_run", "runs", "nope: no such run (not a run folder, and no run id 'nope' under {ws}/runs/)",
         "nope", args=("export", "nope", "--format", "torchscript", "--dir", "{ws}/runs"), file="{ws}/runs"),
    Case("export_without_best_model", "runs", OTHER_RUN + ": the run has no best_model.pt (status failed); it did not "
         "finish an epoch", "best_model.pt", args=("export", OTHER_RUN, "--format", "torchscript"), file=OTHER_RUN,
         make=other_run("20260101-000000-0002", ("job.yaml", "summary.json", "metrics.csv"), status="failed",
                   best_model=None)),
    # ------------------------------------------------------------- security: untrusted files, refused or skipped
    early("python_tag", "{job}:1: invalid YAML: tag !!python/object/apply:os.system is not allowed: a job file "
          "holds plain values (safe loading builds no Python objects)", "{job}:1",
          "name: !!python/object/apply:os.system ['touch {ws}/PWNED']\n", area="security"),
    early("yaml_bomb", "{job}:6: invalid YAML: its aliases expand to more than 100,000 values (a YAML bomb?)",
          "{job}:6", BOMB, area="security"),
    early("yaml_recursive_alias", "{job}:2: invalid YAML: an alias refers to a value that contains it", "{job}:2",
          "name: t\ndata: &d\n  source: *d\n", area="security"),
    early("yaml_too_deep", "{job}:1: invalid YAML: nested more than 32 levels deep", "{job}:1", TOO_DEEP,
          area="security"),
    early("csv_template_escapes", "{job}:{line[data.source.images]}: data.source.images: must be a path under the "
          "table's folder (relative, without '..'): the table and its images travel together (got "
          "'../../{id}.jpg')", "data.source.images", {"data.source.images": "../../{id}.jpg"}, base=FASHION,
          area="security"),
    Case("csv_row_escapes", "security", "{ws}/data/fashion/styles.csv:3: image path {ws}/secret.png is outside the "
         "table's folder {ws}/data/fashion (data.on_error: fail)", "{ws}/data/fashion/styles.csv:3",
         {**TABLE, "data.on_error": "fail"}, FASHION,
         make=table([ROWS[0], ["../../../secret", *ROWS[1][1:]], ROWS[2]]), file="{ws}/data/fashion/styles.csv"),
    Case("csv_row_absolute_path", "security", "{ws}/data/fashion/styles.csv:3: image path {ws}/secret.png is outside "
         "the table's folder {ws}/data/fashion (data.on_error: fail)", "{ws}/data/fashion/styles.csv:3",
         {**TABLE, "data.source.images": "{file}", "data.on_error": "fail"}, FASHION,
         make=table([["images/0.png", *ROWS[0][1:]], ["{ws}/secret.png", *ROWS[1][1:]],
                      ["images/2.png", *ROWS[2][1:]]], ("file", *HEADER[1:])), file="{ws}/data/fashion/styles.csv"),
    Case("csv_value_with_newline", "security", "{ws}/data/fashion/styles.csv:4: image file not found: "
         "{ws}/data/fashion/images/a\\nb.png (data.on_error: fail)", "{ws}/data/fashion/styles.csv:4",
         {**TABLE, "data.on_error": "fail"}, FASHION, make=table([ROWS[0], ["a\nb", *ROWS[1][1:]], ROWS[2]]),
         file="{ws}/data/fashion/styles.csv"),
    Case("zip_parent_member", "security", "{job}: data.source.download: evil.zip: member '../escape.txt' would be "
         "written outside the extraction folder; refusing to extract", "../escape.txt", download_source(), CFL,
         make=served("evil.zip", zip_with({"../escape.txt": "gotcha"})), file="evil.zip"),
    Case("zip_absolute_member", "security", "{job}: data.source.download: evil.zip: member '{ws}/outside.txt' would "
         "be written outside the extraction folder; refusing to extract", "{ws}/outside.txt", download_source(), CFL,
         make=lambda ws: served("evil.zip", zip_with({f"{ws}/outside.txt": "gotcha"}))(ws), file="evil.zip"),
    Case("tar_symlink_outside", "security", "{job}: data.source.download: evil.tar.gz: member 'cfl/car/link.png' "
         "links to '../../../../../../secret.png', outside the extraction folder; refusing to extract",
         "cfl/car/link.png", download_source(), CFL,
         make=served("evil.tar.gz", tar_with(tarfile.SYMTYPE, "cfl/car/link.png", "../../../../../../secret.png")),
         file="evil.tar.gz"),
    Case("tar_hardlink_outside", "security", "{job}: data.source.download: evil.tar.gz: member 'cfl/car/hard.png' "
         "links to '../secret.png', outside the extraction folder; refusing to extract", "cfl/car/hard.png",
         download_source(), CFL,
         make=served("evil.tar.gz", tar_with(tarfile.LNKTYPE, "cfl/car/hard.png", "../secret.png")),
         file="evil.tar.gz"),
    Case("tar_device_member", "security", "{job}: data.source.download: evil.tar.gz: member 'cfl/car/pipe' is not a "
         "file, folder or link (a device or a pipe); refusing to extract", "cfl/car/pipe", download_source(), CFL,
         make=served("evil.tar.gz", tar_with(tarfile.FIFOTYPE, "cfl/car/pipe", "")), file="evil.tar.gz"),
    Case("checksum_mismatch", "security", "{job}: data.source.download.sha256: {url} has SHA-256 {sha}, expected "
         + "0" * 64 + " (file removed)", "data.source.download.sha256", download_source(sha="0" * 64), CFL,
         make=served("cfl.zip", zip_with({})), file="{url}"),
    Case("decompression_bomb", "security", "{ws}/data/cfl/car/bomb.png: decompression bomb: 1,600,000,000 pixels "
         "claimed, more than 89,478,485 (data.on_error: fail)", "{ws}/data/cfl/car/bomb.png",
         {"data.source.path": "{ws}/data/cfl", "data.on_error": "fail"}, CFL, ("data", "prepare", "{job}"),
         images_with_a_bomb, file="{ws}/data/cfl/car/bomb.png"),
    Case("weights_pickled_object", "security", "{job}: model.weights: {ws}/weights/model.pt holds pickled Python "
         "objects (io.open), not only tensors; refused (read with weights_only=True, which runs no code): save a "
         "state dict, torch.save(model.state_dict(), PATH)", "model.weights",
         {"model.weights": "{ws}/weights/model.pt"}, make=pickled_weights),
]
