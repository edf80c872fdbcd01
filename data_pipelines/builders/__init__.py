"""Prepared datasets: TFDS config names and the on-disk layout.

`python -m data_pipelines.prepare --task=T --data_dir=D` writes one folder
per (task, scheme), in the standard TFDS place:

    D/bottomup_trajectories/<config>/<version>/
        dataset_info.json, features.json, *.tfrecord*   the TFDS dataset
        spm.model                                       its tokenizer
        tokens_<split>.npz                              pre-tokenized splits
        stats.json                                      sizes, lengths, shapes
        PREPARED.json                                   written last

`<config>` is the task name for the task's default scheme and
`<task>-<scheme>` otherwise. A folder without `PREPARED.json` is never a
prepared dataset: prepare builds in a temporary folder and renames it into
place only once everything above is written.

This module imports neither TensorFlow nor TFDS: hosts without them read the
`.npz` files (`data_pipelines.input_pipeline`). The builder class itself is
in `data_pipelines.builders.trajectories`.
"""

from __future__ import annotations

import json
import os
import pathlib

from data_pipelines.tasks import get_task

BUILDER_NAME = "bottomup_trajectories"
VERSION = "1.0.0"
# Tasks with a predefined builder config (their default scheme).
CONFIG_TASKS = (
  "multiplication_4x4",
  "multiplication_5x5",
  "multiplication_7x7",
  "multiplication_9x9",
  "prontoqa",
  "gsm8k",
)
# Split sizes of generated tasks, unless prepare is told otherwise.
DEFAULT_NUM_EXAMPLES = {"train": 100_000, "valid": 1_000, "test": 1_000}
MARKER_FILE = "PREPARED.json"
STATS_FILE = "stats.json"


def config_name(task: str, scheme: str | None = None) -> str:
  """The builder config of `task` under `scheme` (None: the default)."""
  task_obj = get_task(task)
  scheme = task_obj.check_scheme(scheme)
  if scheme == task_obj.default_scheme:
    return task
  return f"{task}-{scheme}"


def dataset_dir(
  data_dir: str | os.PathLike, task: str, scheme: str | None = None
) -> pathlib.Path:
  """Where the prepared dataset of (task, scheme) lives under `data_dir`."""
  return (
    pathlib.Path(data_dir) / BUILDER_NAME / config_name(task, scheme) / VERSION
  )


def tokens_file(split: str) -> str:
  """File name of the pre-tokenized form of `split`."""
  return f"tokens_{split}.npz"


def read_marker(path: str | os.PathLike) -> dict | None:
  """The settings a complete dataset folder was prepared with, or None."""
  marker = pathlib.Path(path) / MARKER_FILE
  if not marker.is_file():
    return None
  return json.loads(marker.read_text())


def require_prepared(
  data_dir: str | os.PathLike, task: str, scheme: str | None = None
) -> pathlib.Path:
  """The folder of a complete prepared dataset, or an error saying how.

  Args:
    data_dir: the `--data_dir` given to prepare.
    task: task name.
    scheme: coarsening scheme (None: the task's default).

  Returns:
    The dataset folder (holding `PREPARED.json`).

  Raises:
    FileNotFoundError: the dataset is missing or incomplete.
  """
  path = dataset_dir(data_dir, task, scheme)
  if read_marker(path) is None:
    flag = f" --scheme={scheme}" if scheme else ""
    raise FileNotFoundError(
      f"no prepared dataset at {path}; run: python -m "
      f"data_pipelines.prepare --task={task}{flag} --data_dir={data_dir}"
    )
  return path
