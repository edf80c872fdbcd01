"""TFDS builder `bottomup_trajectories`: one config per task, built offline.

There is no download step: file tasks read their raw files from
`source_dir` (or $BOTTOMUP_DATA_DIR) through `Task.trajectories`, generated
tasks (multiplication) draw fixed-size splits from their seeded generator.
Every example is one trajectory:

    id        Text            unique within the split
    question  Text
    drafts    Sequence(Text)  coarse -> fine; the last is the full solution
    answer    Text            the canonical final answer

Examples are written in the order the task yields them (shuffling is the
input pipeline's job, seeded by (seed, epoch)), so record i of a split is
row i of its pre-tokenized `.npz` form.

Usage (what `data_pipelines.prepare` does):

    builder = BottomupTrajectories(
        data_dir=d, config=make_config("gsm8k"), source_dir=raw)
    builder.download_and_prepare()
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from data_pipelines import builders
from data_pipelines.tasks import get_task
from data_pipelines.trajectory import DataError


@dataclasses.dataclass(eq=False)
class TrajectoryConfig(tfds.core.BuilderConfig):
  """A task and its coarsening scheme (the dataset's identity).

  Attributes:
    task: task name, e.g. `multiplication_4x4`.
    scheme: coarsening scheme; empty for the task's default.
  """

  task: str = ""
  scheme: str = ""


def _default_config(task: str) -> TrajectoryConfig:
  return TrajectoryConfig(
    name=task,
    task=task,
    description=f"{task} trajectories, default coarsening scheme.",
  )


_PREDEFINED = {task: _default_config(task) for task in builders.CONFIG_TASKS}


def make_config(task: str, scheme: str | None = None) -> TrajectoryConfig:
  """The builder config of (task, scheme): predefined when it exists.

  TFDS refuses a custom config that reuses a predefined name, so the
  predefined object is returned whenever the name matches.

  Args:
    task: task name.
    scheme: coarsening scheme (None: the task's default).

  Returns:
    The config, named by `builders.config_name`.
  """
  name = builders.config_name(task, scheme)
  if name in _PREDEFINED:
    return _PREDEFINED[name]
  return TrajectoryConfig(
    name=name,
    task=task,
    scheme=scheme or "",
    description=f"{task} trajectories, coarsening scheme {scheme!r}.",
  )


class BottomupTrajectories(tfds.core.GeneratorBasedBuilder):
  """Coarse-to-fine trajectories of one bottomup task."""

  VERSION = tfds.core.Version(builders.VERSION)
  RELEASE_NOTES = {builders.VERSION: "First release."}
  BUILDER_CONFIGS = list(_PREDEFINED.values())

  def __init__(
    self,
    *,
    source_dir: str | os.PathLike | None = None,
    num_examples: dict[str, int] | None = None,
    seed: int = 0,
    **kwargs,
  ):
    """Makes the builder.

    Args:
      source_dir: raw data folder of file tasks (else $BOTTOMUP_DATA_DIR).
      num_examples: split -> size. Generated tasks need every split (None:
        `builders.DEFAULT_NUM_EXAMPLES`); file tasks read whole files unless
        a split is capped here.
      seed: generator seed of generated tasks.
      **kwargs: `tfds.core.DatasetBuilder` arguments (data_dir, config, ...).
    """
    self._source_dir = source_dir
    self._num_examples = dict(num_examples or {})
    self._seed = seed
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=self.builder_config.description,
      features=tfds.features.FeaturesDict(
        {
          "id": tfds.features.Text(),
          "question": tfds.features.Text(),
          "drafts": tfds.features.Sequence(tfds.features.Text()),
          "answer": tfds.features.Text(),
        }
      ),
      # Record order = task order; the input pipeline shuffles.
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Offline: everything comes from the task.
    task = get_task(self.builder_config.task)
    return {split: self._generate_examples(split) for split in task.splits}

  def _generate_examples(self, split: str):
    """Yields (id, example) for every trajectory of `split`."""
    task = get_task(self.builder_config.task)
    num = self._num_examples.get(split)
    if task.generated and num is None:
      num = builders.DEFAULT_NUM_EXAMPLES[split]
    trajs = task.trajectories(
      split,
      scheme=self.builder_config.scheme or None,
      source_dir=self._source_dir,
      num=num,
      seed=self._seed,
    )
    for traj in trajs:
      yield (
        traj.id,
        {
          "id": traj.id,
          "question": traj.question,
          "drafts": list(traj.drafts),
          "answer": traj.answer,
        },
      )


def read_split_texts(path: str | os.PathLike, split: str) -> dict[str, list]:
  """The columns of one split of a prepared TFDS dataset, in record order.

  Records are parsed in large batches with `tf.io.parse_example` (the
  per-example TFDS decoder is ~20x slower on these tiny records).

  Args:
    path: the dataset folder (`data_pipelines.builders.dataset_dir`).
    split: split name.

  Returns:
    {"id": [str], "question": [str], "drafts": [[str]], "answer": [str]}.
  """
  info = tfds.builder_from_directory(os.fspath(path)).info
  if split not in info.splits:
    raise ValueError(
      f"{path} has no split {split!r}; known: {', '.join(info.splits)}"
    )
  text = tf.io.FixedLenFeature([], tf.string)
  spec = {
    "id": text,
    "question": text,
    "answer": text,
    "drafts": tf.io.RaggedFeature(tf.string),
  }
  files = [os.fspath(f) for f in info.splits[split].filepaths]
  ds = tf.data.TFRecordDataset(files).batch(8192)
  cols = {k: [] for k in spec}
  for ex in ds.map(lambda r: tf.io.parse_example(r, spec)).as_numpy_iterator():
    for k in ("id", "question", "answer"):
      cols[k].extend(x.decode("utf-8") for x in ex[k])
    for row in ex["drafts"]:  # an object array of per-example arrays
      cols["drafts"].append([x.decode("utf-8") for x in row])
  if len(cols["id"]) != info.splits[split].num_examples:
    raise DataError(f"{path}: split {split!r} has missing records")
  return cols
