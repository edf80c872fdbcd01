"""Trajectories -> fixed-shape numpy batches (no TensorFlow needed).

A batch (DESIGN §1):

    question    int32[B, Lq]     question tokens, PAD-padded (no specials)
    drafts      int32[B, T, Ld]  draft tokens + EOS, PAD-padded; the draft
                                 axis is padded to T by repeating the last
                                 draft (refinement has converged)
    num_drafts  int32[B]         how many drafts are real

Both input paths use `encode_trajectories`: the tf.data pipeline over a
prepared dataset, and `GeneratorStream`, which streams a generated task
straight from its seeded generator (the path for hosts without TensorFlow).
Over-long examples are truncated and counted, or rejected, by `overlength`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from data_pipelines import tokenizer as tok_lib
from data_pipelines.trajectory import DataError, Task, Trajectory


@dataclasses.dataclass
class OverlengthCounts:
  """How many examples/drafts were truncated (or would have been)."""

  questions: int = 0
  drafts: int = 0
  levels: int = 0  # examples with more drafts than T

  def total(self) -> int:
    return self.questions + self.drafts + self.levels

  def add(self, other: OverlengthCounts) -> None:
    self.questions += other.questions
    self.drafts += other.drafts
    self.levels += other.levels


@dataclasses.dataclass(frozen=True)
class Shapes:
  """Padded sizes of a batch."""

  max_question_len: int  # Lq
  max_draft_len: int  # Ld, including the EOS
  max_drafts: int  # T


def pad_row(ids: Sequence[int], length: int) -> tuple[np.ndarray, bool]:
  """`ids` PAD-padded or truncated to `length`; also whether it was cut."""
  out = np.full((length,), tok_lib.PAD_ID, np.int32)
  n = min(len(ids), length)
  out[:n] = ids[:n]
  return out, len(ids) > length


def encode_token_lists(
  questions: Sequence[Sequence[int]],
  drafts: Sequence[Sequence[Sequence[int]]],
  shapes: Shapes,
  overlength: str = "truncate",
  where: Sequence[str] | None = None,
) -> tuple[dict[str, np.ndarray], OverlengthCounts]:
  """Pads pre-tokenized examples into a batch (EOS appended to drafts)."""
  if overlength not in ("truncate", "reject"):
    raise ValueError(f"overlength must be truncate|reject, got {overlength!r}")
  b, t_max = len(questions), shapes.max_drafts
  q = np.zeros((b, shapes.max_question_len), np.int32)
  d = np.zeros((b, t_max, shapes.max_draft_len), np.int32)
  nd = np.zeros((b,), np.int32)
  counts = OverlengthCounts()
  for i, (qi, di) in enumerate(zip(questions, drafts)):
    q[i], cut_q = pad_row(qi, shapes.max_question_len)
    counts.questions += cut_q
    cut_any = cut_q
    if len(di) > t_max:
      counts.levels += 1
      cut_any = True
      # Keep the finest drafts: the last one is the full solution.
      di = di[-t_max:]
    for t in range(t_max):
      row = list(di[min(t, len(di) - 1)]) + [tok_lib.EOS_ID]
      d[i, t], cut_d = pad_row(row, shapes.max_draft_len)
      if t < len(di):
        counts.drafts += cut_d
        cut_any |= cut_d
    nd[i] = len(di)
    if cut_any and overlength == "reject":
      name = where[i] if where else f"example {i}"
      raise DataError(
        f"{name}: longer than the configured shapes {shapes} "
        "(set overlength='truncate' to cut and count instead)"
      )
  return {"question": q, "drafts": d, "num_drafts": nd}, counts


def encode_trajectories(
  trajs: Sequence[Trajectory],
  tokenizer: tok_lib.Tokenizer,
  shapes: Shapes,
  overlength: str = "truncate",
) -> tuple[dict[str, np.ndarray], OverlengthCounts]:
  """Tokenizes and pads trajectories into one batch."""
  questions = tokenizer.encode_many([t.question for t in trajs])
  flat = tokenizer.encode_many([d for t in trajs for d in t.drafts])
  drafts, k = [], 0
  for t in trajs:
    drafts.append(flat[k : k + len(t.drafts)])
    k += len(t.drafts)
  return encode_token_lists(
    questions, drafts, shapes, overlength, where=[t.id for t in trajs]
  )


class _StepStream:
  """Iteration over `batch_at(step)`, with the step as the saved state."""

  step: int

  def batch_at(self, step: int) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self.batch_at(self.step)
    self.step += 1
    return batch

  def get_state(self) -> dict[str, int]:
    """The data position, saved with each checkpoint."""
    return {"step": self.step}

  def set_state(self, state: dict[str, int]) -> None:
    self.step = int(state["step"])


class GeneratorStream(_StepStream):
  """Deterministic batches straight from a task's generator.

  The batch at step s of process p is a pure function of (seed, s, p), so a
  stream restarted at step k yields exactly what an uninterrupted one yields
  from step k; processes take disjoint blocks of one global batch that
  depends on (seed, s) only, so a run on any number of processes trains on
  the same examples.
  """

  def __init__(
    self,
    task: Task,
    tokenizer: tok_lib.Tokenizer,
    shapes: Shapes,
    *,
    batch_size: int,
    seed: int,
    scheme: str | None = None,
    split: str = "train",
    process_index: int = 0,
    process_count: int = 1,
    overlength: str = "truncate",
    start_step: int = 0,
    transform=None,
  ):
    """See the class docstring; `transform` maps each batch's trajectories
    (e.g. a view, `data_pipelines.views`) before they are tokenized."""
    if not task.generated:
      raise ValueError(f"task {task.name!r} has no generator")
    self.task, self.tokenizer, self.shapes = task, tokenizer, shapes
    self.batch_size, self.seed, self.split = batch_size, seed, split
    self.scheme = task.check_scheme(scheme)
    self.process_index, self.process_count = process_index, process_count
    self.overlength = overlength
    self.step = start_step
    self.transform = transform
    self.overlength_counts = OverlengthCounts()

  def batch_at(self, step: int) -> dict[str, np.ndarray]:
    """The batch of `step` for this process.

    The global batch of `step` is generated from (seed, step) alone and
    process p keeps its block of rows, so the examples a step trains on do
    not depend on how many processes share them (generation is cheap next
    to a train step).
    """
    seed = self.seed * (1 << 32) + step
    trajs = list(
      self.task.generate(
        self.split,
        num=self.batch_size * self.process_count,
        seed=seed,
        scheme=self.scheme,
      )
    )
    lo = self.process_index * self.batch_size
    trajs = trajs[lo : lo + self.batch_size]
    if self.transform is not None:
      trajs = self.transform(trajs)
    batch, counts = encode_trajectories(
      trajs, self.tokenizer, self.shapes, self.overlength
    )
    self.overlength_counts.add(counts)
    return batch


class ListStream(_StepStream):
  """Deterministic batches from a fixed list of trajectories, in epochs.

  For data-scarce training (a few hundred solved problems) and for the
  bootstrap rounds' fine-tuning sets. The list is tokenized once. Global
  row i of step s is example `perm_e[(s * G + i) % N]`, where G is the
  global batch, e = (s * G + i) // N the epoch and perm_e a permutation
  seeded by (seed, e); process p keeps its block of rows, so, as for
  `GeneratorStream`, a batch is a pure function of (seed, step) and a
  restarted stream continues exactly.

  `variants` gives alternative versions of every example (e.g. the question
  with an answer hint); each row takes variant v with probability
  `variant_probs[v]`, drawn from (seed, step, row).
  """

  def __init__(
    self,
    trajs: Sequence[Trajectory],
    tokenizer: tok_lib.Tokenizer,
    shapes: Shapes,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    overlength: str = "truncate",
    start_step: int = 0,
    variants: Sequence[Sequence[Trajectory]] = (),
    variant_probs: Sequence[float] = (),
  ):
    if not trajs:
      raise ValueError("ListStream needs at least one trajectory")
    if len(variants) != len(variant_probs):
      raise ValueError("give one probability per variant")
    if sum(variant_probs) > 1 or any(p < 0 for p in variant_probs):
      raise ValueError(f"bad variant probabilities {list(variant_probs)}")
    self.num_examples = len(trajs)
    self.overlength_counts = OverlengthCounts()
    self._arrays = []
    for version in (trajs, *variants):
      if len(version) != len(trajs):
        raise ValueError("every variant must have one row per example")
      arrays, counts = encode_trajectories(
        version, tokenizer, shapes, overlength
      )
      self.overlength_counts.add(counts)
      self._arrays.append(arrays)
    self._probs = np.asarray(variant_probs, np.float64)
    self.batch_size, self.seed = batch_size, seed
    self.process_index, self.process_count = process_index, process_count
    self.step = start_step
    self._perms: dict[int, np.ndarray] = {}

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      if len(self._perms) > 4:
        self._perms.clear()
      rng = np.random.default_rng([self.seed, epoch, 0x5EED])
      self._perms[epoch] = rng.permutation(self.num_examples)
    return self._perms[epoch]

  def batch_at(self, step: int) -> dict[str, np.ndarray]:
    """The batch of `step` for this process."""
    g = self.batch_size * self.process_count
    lo = self.process_index * self.batch_size
    flat = step * g + lo + np.arange(self.batch_size)
    epochs, pos = np.divmod(flat, self.num_examples)
    idx = np.array([self._perm(int(e))[p] for e, p in zip(epochs, pos)])
    batch = {k: v[idx] for k, v in self._arrays[0].items()}
    if len(self._probs):
      rng = np.random.default_rng([self.seed, step, 0xA17])
      u = rng.random(g)[lo : lo + self.batch_size]
      edges = np.cumsum(self._probs)
      for v, (a, b) in enumerate(zip(np.r_[0, edges[:-1]], edges)):
        rows = (u >= a) & (u < b)
        for k, arr in self._arrays[v + 1].items():
          batch[k][rows] = arr[idx[rows]]
    return batch
