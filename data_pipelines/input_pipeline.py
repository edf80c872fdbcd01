"""Prepared datasets -> batches: a tf.data pipeline and a TensorFlow-free one.

Both paths yield the numpy batches of `data_pipelines.batching` (question
[B, Lq], drafts [B, T, Ld] with EOS appended and the draft axis padded by
repeating the last draft, num_drafts [B]) and yield the very same batches:

  `tfdata`  reads the TFDS records, tokenizes them with the dataset's
            sentencepiece model, and gathers, pads and prefetches in tf.data.
  `numpy`   reads the pre-tokenized `tokens_<split>.npz` and pads with
            `batching.encode_token_lists`; it never imports TensorFlow (the
            path for accelerator hosts without it).

A split is small enough to hold in memory (at most ~10^5 trajectories), which
makes every batch random-access. The order of examples is a pure function:

  1. epoch e permutes the split with `np.random.default_rng([seed, e])`;
  2. process p of P takes every P-th example of that permutation from
     position p, N // P of them (disjoint across processes; the few left
     over differ from epoch to epoch);
  3. the per-process epochs are concatenated and cut into batches of B.

So the batch at step k is known without reading steps 0..k-1: an iterator
restarted at step k (`set_state`) yields exactly what an uninterrupted one
yields from step k. TensorFlow is imported lazily, by the `tfdata` path only.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib.util
import os

import numpy as np

from data_pipelines import batching, builders
from data_pipelines import tokenizer as tok_lib
from data_pipelines.builders.tokenized import (
  TokenizedSplit,
  check_not_overlength,
  count_overlength,
  overlength_flags,
  tokenize_split,
)

BACKENDS = ("auto", "tfdata", "numpy")


class ExampleOrder:
  """Which examples process p sees at each step (see the module docstring).

  Attributes:
    num_examples: size of the split.
    batch_size: examples per batch on this process.
    seed: shuffle seed; epoch e is shuffled by (seed, e).
    process_index: this process.
    process_count: all processes.
  """

  def __init__(
    self,
    num_examples: int,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
  ):
    if not 0 <= process_index < process_count:
      raise ValueError(
        f"process_index {process_index} not in [0, {process_count})"
      )
    if num_examples < process_count or batch_size < 1:
      raise ValueError(
        f"{num_examples} examples cannot feed {process_count} processes "
        f"with batches of {batch_size}"
      )
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.seed = seed
    self.process_index = process_index
    self.process_count = process_count
    self.per_epoch = num_examples // process_count
    self._cache: dict[int, np.ndarray] = {}

  def epoch(self, epoch: int) -> np.ndarray:
    """int64[per_epoch]: this process's examples in epoch `epoch`."""
    epoch = int(epoch)
    if epoch not in self._cache:
      if len(self._cache) >= 2:  # consecutive batches need <= 2 epochs
        self._cache.pop(min(self._cache))
      perm = np.random.default_rng([self.seed, epoch]).permutation(
        self.num_examples
      )
      stop = self.per_epoch * self.process_count
      self._cache[epoch] = perm[self.process_index : stop : self.process_count]
    return self._cache[epoch]

  def indices(self, step: int) -> np.ndarray:
    """int64[B]: the examples of batch `step`."""
    pos = step * self.batch_size + np.arange(self.batch_size)
    epochs, offsets = np.divmod(pos, self.per_epoch)
    out = np.empty_like(pos)
    for e in np.unique(epochs):
      sel = epochs == e
      out[sel] = self.epoch(e)[offsets[sel]]
    return out


def resolve_backend(backend: str) -> str:
  """`auto` is tf.data where TensorFlow is installed, else numpy."""
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
  if backend != "auto":
    return backend
  return "tfdata" if importlib.util.find_spec("tensorflow") else "numpy"


def load_split(
  data_dir: str | os.PathLike,
  task: str,
  split: str,
  *,
  scheme: str | None = None,
  backend: str = "numpy",
) -> TokenizedSplit:
  """A prepared split, tokenized.

  Args:
    data_dir: the `--data_dir` given to prepare.
    task: task name.
    split: split name.
    scheme: coarsening scheme (None: the task's default).
    backend: `numpy` reads `tokens_<split>.npz`; `tfdata` reads the TFDS
      records and tokenizes them with the dataset's tokenizer.

  Returns:
    The split, rows in record order.
  """
  path = builders.require_prepared(data_dir, task, scheme)
  if resolve_backend(backend) == "numpy":
    file = path / builders.tokens_file(split)
    if not file.is_file():
      raise ValueError(f"{path} has no split {split!r}")
    return TokenizedSplit.load(file)
  from data_pipelines.builders import trajectories  # noqa: PLC0415 (TF)

  tokenizer = tok_lib.Tokenizer.load(path)
  return tokenize_split(trajectories.read_split_texts(path, split), tokenizer)


class TrainIterator(abc.ABC):
  """Endless batches of one process; the position is the step count.

  Iterate it for numpy batches {question, drafts, num_drafts}; save
  `get_state()` with a checkpoint and `set_state()` it on restore.

  Attributes:
    step: the step of the next batch.
    overlength_counts: truncations in the batches yielded so far.
  """

  def __init__(
    self,
    data: TokenizedSplit,
    order: ExampleOrder,
    shapes: batching.Shapes,
    overlength: str,
    start_step: int = 0,
  ):
    self.data, self.order, self.shapes = data, order, shapes
    self.overlength = overlength
    self.step = start_step
    self.overlength_counts = batching.OverlengthCounts()

  def __iter__(self):
    return self

  @abc.abstractmethod
  def __next__(self) -> dict[str, np.ndarray]:
    """The batch of `self.step`; advances the step."""

  def get_state(self) -> dict[str, int]:
    """The data position, saved with each checkpoint."""
    return {"step": self.step}

  def set_state(self, state: dict[str, int]) -> None:
    """Continues from the saved position (the next batch is that step's)."""
    self.step = int(state["step"])


class NumpyTrainIterator(TrainIterator):
  """Batches padded by `batching.encode_token_lists` (no TensorFlow)."""

  def batch_at(self, step: int) -> dict[str, np.ndarray]:
    """The batch of `step` for this process."""
    index = self.order.indices(step)
    batch, counts = batching.encode_token_lists(
      [self.data.question(i) for i in index],
      [self.data.drafts(i) for i in index],
      self.shapes,
      self.overlength,
      where=[self.data.ids[i] for i in index],
    )
    self.overlength_counts.add(counts)
    return batch

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self.batch_at(self.step)
    self.step += 1
    return batch


class TfDataTrainIterator(TrainIterator):
  """Batches gathered, padded and prefetched by tf.data."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    import tensorflow as tf  # noqa: PLC0415 (only this path needs TF)

    self._tf, data = tf, self.data
    self._questions = tf.RaggedTensor.from_row_splits(
      data.question_tokens, data.question_offsets
    )
    # EOS goes at the end of every draft row once, here, not per batch.
    ends = data.draft_offsets[1:]
    self._drafts = tf.RaggedTensor.from_row_splits(
      np.insert(data.draft_tokens, ends, tok_lib.EOS_ID).astype(np.int32),
      data.draft_offsets + np.arange(len(data.draft_offsets)),
    )
    self._first_row = tf.constant(data.level_offsets[:-1])
    self._num_levels = tf.constant(data.num_levels())
    self._flags = overlength_flags(data, self.shapes)
    self._it = None

  def _pad(self, index):
    """int64[B] example indices -> one padded batch (TF ops)."""
    tf, s, b = self._tf, self.shapes, self.order.batch_size
    t_max = s.max_drafts
    q = tf.gather(self._questions, index)
    n = tf.gather(self._num_levels, index)
    kept = tf.minimum(n, t_max)  # the finest T drafts
    first = tf.gather(self._first_row, index) + n - kept
    # Levels past the last draft repeat it: refinement has converged.
    level = tf.minimum(tf.range(t_max, dtype=tf.int64), kept[:, None] - 1)
    rows = tf.reshape(first[:, None] + level, [-1])
    d = tf.gather(self._drafts, rows).to_tensor(
      shape=[b * t_max, s.max_draft_len]
    )
    return {
      "question": q.to_tensor(shape=[b, s.max_question_len]),
      "drafts": tf.reshape(d, [b, t_max, s.max_draft_len]),
      "num_drafts": tf.cast(kept, tf.int32),
      "index": index,
    }

  def dataset(self, start_step: int):
    """The tf.data pipeline of batches from `start_step` on."""
    tf, order = self._tf, self.order
    # Skip by epoch arithmetic: whole epochs are never materialized.
    first_epoch, skip = divmod(start_step * order.batch_size, order.per_epoch)
    ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
    ds = ds.map(
      lambda e: tf.ensure_shape(
        tf.numpy_function(order.epoch, [e], tf.int64, stateful=False),
        [order.per_epoch],
      )
    )
    ds = ds.unbatch().skip(skip).batch(order.batch_size, drop_remainder=True)
    ds = ds.map(self._pad, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)

  def __next__(self) -> dict[str, np.ndarray]:
    if self._it is None:
      self._it = self.dataset(self.step).as_numpy_iterator()
    batch = next(self._it)
    self.overlength_counts.add(count_overlength(self._flags, batch["index"]))
    del batch["index"]
    self.step += 1
    return batch

  def set_state(self, state: dict[str, int]) -> None:
    super().set_state(state)
    self._it = None  # the prefetched batches belong to the old position


def make_train_iterator(
  data_dir: str | os.PathLike,
  task: str,
  split: str = "train",
  *,
  batch_size: int,
  shapes: batching.Shapes,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  scheme: str | None = None,
  overlength: str = "truncate",
  backend: str = "auto",
  start_step: int = 0,
  transform=None,
) -> TrainIterator:
  """Endless shuffled batches of a prepared split, for one process.

  Args:
    data_dir: the `--data_dir` given to prepare.
    task: task name.
    split: split name.
    batch_size: examples per batch on this process (global / processes).
    shapes: batch shapes (Lq, Ld, T).
    seed: shuffle seed.
    process_index: this process (`jax.process_index()`).
    process_count: all processes (`jax.process_count()`).
    scheme: coarsening scheme (None: the task's default).
    overlength: `truncate` (cut and count) or `reject` (fail now if any
      example of the split does not fit `shapes`).
    backend: `tfdata`, `numpy` (no TensorFlow) or `auto`.
    start_step: the step of the first batch.
    transform: TokenizedSplit -> TokenizedSplit applied once after loading
      (a view of the drafts, `data_pipelines.views.view_split`).

  Returns:
    An iterator with `get_state`/`set_state` and `overlength_counts`.
  """
  if overlength not in ("truncate", "reject"):
    raise ValueError(f"overlength must be truncate|reject, got {overlength!r}")
  backend = resolve_backend(backend)
  data = load_split(data_dir, task, split, scheme=scheme, backend=backend)
  if transform is not None:
    data = transform(data)
  if overlength == "reject":
    check_not_overlength(data, shapes, f"{task}/{split}")
  order = ExampleOrder(
    len(data), batch_size, seed, process_index, process_count
  )
  cls = TfDataTrainIterator if backend == "tfdata" else NumpyTrainIterator
  return cls(data, order, shapes, overlength, start_step)


@dataclasses.dataclass
class EvalExamples:
  """One process's share of an evaluation split, in fixed batches.

  Attributes:
    batches: numpy batches with an extra `index` int32[B]: the row of
      `ids`/`answers` (-1 for padding rows, whose num_drafts is 0). Every
      process gets the same number of batches.
    ids: example ids of the whole split.
    answers: reference answers of the whole split.
    overlength_counts: truncations in this process's batches.
  """

  batches: list[dict[str, np.ndarray]]
  ids: list[str]
  answers: list[str]
  overlength_counts: batching.OverlengthCounts


def make_eval_examples(
  data_dir: str | os.PathLike,
  task: str,
  split: str,
  *,
  batch_size: int,
  shapes: batching.Shapes,
  process_index: int = 0,
  process_count: int = 1,
  scheme: str | None = None,
  overlength: str = "truncate",
  num_examples: int | None = None,
  backend: str = "numpy",
) -> EvalExamples:
  """Every example of a split once, in order, split across processes.

  Args:
    data_dir: the `--data_dir` given to prepare.
    task: task name.
    split: split name.
    batch_size: examples per batch on this process.
    shapes: batch shapes (Lq, Ld, T).
    process_index: this process; it takes rows p, p + P, ...
    process_count: all processes.
    scheme: coarsening scheme (None: the task's default).
    overlength: `truncate` or `reject`, as in `make_train_iterator`.
    num_examples: evaluate only the first this many examples (None: all).
    backend: where the tokens come from (`numpy` needs no TensorFlow).

  Returns:
    The batches and the split's ids and answers.
  """
  data = load_split(data_dir, task, split, scheme=scheme, backend=backend)
  n = len(data) if num_examples is None else min(num_examples, len(data))
  if overlength == "reject":
    check_not_overlength(data, shapes, f"{task}/{split}")
  mine = np.arange(process_index, n, process_count)
  per_process = -(-n // process_count)  # ceil
  num_batches = max(1, -(-per_process // batch_size))
  index = np.full(num_batches * batch_size, -1, np.int64)
  index[: len(mine)] = mine
  batches, counts = [], batching.OverlengthCounts()
  for chunk in index.reshape(num_batches, batch_size):
    real = chunk[chunk >= 0]
    part, c = batching.encode_token_lists(
      [data.question(i) for i in real],
      [data.drafts(i) for i in real],
      shapes,
      overlength,
      where=[data.ids[i] for i in real],
    )
    counts.add(c)
    batch = {}
    for k, v in part.items():
      # Padding rows are all PAD with num_drafts = 0: masked everywhere.
      batch[k] = np.zeros((batch_size,) + v.shape[1:], v.dtype)
      batch[k][: len(real)] = v
    batch["index"] = chunk.astype(np.int32)
    batches.append(batch)
  return EvalExamples(batches, data.ids[:n], data.answers[:n], counts)
