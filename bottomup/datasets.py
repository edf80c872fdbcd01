"""What the trainer needs from `data_pipelines`: tokenizer, shapes, streams.

`source=generator` streams a generated task (multiplication) straight from
its seeded generator with a char tokenizer trained on a fixed generated
sample; `source=prepared` reads a dataset made by `data_pipelines.prepare`.
The tokenizer is saved in the workdir so that evaluation and sampling
reload exactly the one training used.

`data.view` (default: the model's, see `bottomup.models.default_view`)
picks what the model writes from each trajectory: all drafts for the
refiner, one sequence for the baselines (`data_pipelines.views`). Training
streams, shapes and evaluation problems all go through the same view.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import zlib

import jax
import ml_collections

from data_pipelines import batching, tasks, views
from data_pipelines import tokenizer as tok_lib
from data_pipelines.trajectory import Task, Trajectory


@dataclasses.dataclass
class Data:
  """A task with its tokenizer and padded shapes."""

  task: Task
  scheme: str
  tokenizer: tok_lib.Tokenizer
  shapes: batching.Shapes
  cfg: ml_collections.ConfigDict
  seed: int
  view: str = "trajectory"

  def apply_view(self, trajs) -> list[Trajectory]:
    """Trajectories as the model sees them (see `data_pipelines.views`)."""
    return [views.view_trajectory(self.task, t, self.view) for t in trajs]

  @property
  def hint_prob(self) -> float:
    return float(self.cfg.get("hint_prob", 0.0))

  def hinted(self, trajs) -> list[Trajectory]:
    """`trajs` with the answer as a hint in the question (`views.with_hint`)."""
    return [views.with_hint(self.task, t) for t in trajs]

  def _maybe_hint(self, trajs) -> list[Trajectory]:
    """Hints a `hint_prob` share of fresh generated problems (by a hash of
    the seed and the question, so a restarted stream repeats itself)."""
    p = self.hint_prob
    out = []
    for t in trajs:
      h = zlib.crc32(f"{self.seed}:{t.question}".encode()) / 2**32
      out.append(views.with_hint(self.task, t) if h < p else t)
    return out

  def train_problems(self, num: int | None) -> list[Trajectory]:
    """The first `num` training problems, viewed (generated or prepared;
    None = the whole prepared split).

    `data.train_examples=N` trains on `train_problems(N)`. A generated
    task draws each `num` afresh, so `train_problems(N)` is not a prefix
    of `train_problems(M)`: for problems other than those N, use
    `problems_after`, which compares questions, not positions.
    """
    if self.cfg.source == "generator":
      if num is None:
        raise ValueError(f"task {self.task.name!r} is generated: give `num`")
      trajs = self.task.trajectories(
        "train", scheme=self.scheme, num=num, seed=self.seed
      )
      return self.apply_view(list(trajs))
    from data_pipelines import input_pipeline

    rows = input_pipeline.load_split(
      self.cfg.data_dir, self.task.name, "train", scheme=self.scheme
    )
    num = len(rows.ids) if num is None else num
    if num > len(rows.ids):
      raise ValueError(
        f"{self.task.name}: asked for {num} training problems, the prepared "
        f"train split has {len(rows.ids)}"
      )
    return self.apply_view(
      _decode_split(rows, self.tokenizer, self.task.name, num)
    )

  def problems_after(
    self, n: int, nums: tuple[int, ...]
  ) -> tuple[list[Trajectory], ...]:
    """`train_problems(n)`, then disjoint groups of further training
    problems of sizes `nums`, none of whose questions is in an earlier
    group (prepared: the problems after the first n, in file order;
    generated: a larger draw with the earlier questions removed). The same
    arguments give the same groups, so a later stage can recompute what an
    earlier one used (the bootstrap rounds' questions, then the PRM's)."""
    first = self.train_problems(n) if n else []
    seen = {t.question for t in first}
    pool = self.train_problems(n + sum(nums))
    fresh = []
    for t in pool:
      if t.question not in seen:
        seen.add(t.question)
        fresh.append(t)
    groups, lo = [first], 0
    for k in nums:
      groups.append(fresh[lo : lo + k])
      lo += k
    return tuple(groups)

  def list_stream(self, trajs, batch_size: int, start_step: int = 0):
    """Batches of a fixed list of (viewed) trajectories, in epochs; a
    `hint_prob` share of the rows carries its answer hint."""
    n_proc = jax.process_count()
    hint = self.hint_prob > 0
    return batching.ListStream(
      trajs,
      self.tokenizer,
      self.shapes,
      batch_size=batch_size // n_proc,
      seed=self.seed,
      process_index=jax.process_index(),
      process_count=n_proc,
      overlength=self.cfg.overlength,
      start_step=start_step,
      variants=[self.hinted(trajs)] if hint else [],
      variant_probs=[self.hint_prob] if hint else [],
    )

  def train_stream(self, batch_size: int, start_step: int = 0, trajs=None):
    """This process's share of the training batches, from `start_step`.

    Args:
      batch_size: the global batch.
      start_step: the data position to start from.
      trajs: train on this list (viewed trajectories) instead of the task's
        training data.
    """
    n_proc = jax.process_count()
    if batch_size % n_proc:
      raise ValueError(f"batch {batch_size} not divisible by {n_proc} hosts")
    n = int(self.cfg.get("train_examples", 0))
    hint_prepared = self.hint_prob > 0 and self.cfg.source != "generator"
    if trajs is None and (n > 0 or hint_prepared):
      # A fixed list: the first N problems, or a prepared split whose
      # questions get hints (the tf.data path has no hint transform).
      trajs = self.train_problems(n or None)
    if trajs is not None:
      return self.list_stream(trajs, batch_size, start_step)
    if self.cfg.source == "generator":
      return batching.GeneratorStream(
        self.task,
        self.tokenizer,
        self.shapes,
        batch_size=batch_size // n_proc,
        seed=self.seed,
        scheme=self.scheme,
        process_index=jax.process_index(),
        process_count=n_proc,
        overlength=self.cfg.overlength,
        start_step=start_step,
        transform=(
          (lambda ts: self._maybe_hint(self.apply_view(ts)))
          if self.hint_prob
          else self.apply_view
        ),
      )
    from data_pipelines import input_pipeline

    return input_pipeline.make_train_iterator(
      self.cfg.data_dir,
      self.task.name,
      batch_size=batch_size // n_proc,
      shapes=self.shapes,
      seed=self.seed,
      process_index=jax.process_index(),
      process_count=n_proc,
      scheme=self.scheme,
      overlength=self.cfg.overlength,
      start_step=start_step,
      transform=self._view_split,
    )

  def _view_split(self, split):
    return views.view_split(self.task, self.tokenizer, split, self.view)

  def trajectories(self, split: str, num: int) -> list[Trajectory]:
    """The first `num` problems of `split` (generated or prepared)."""
    if self.cfg.source == "generator":
      # A seed that differs from training's; splits are disjoint anyway.
      return self.apply_view(
        self.task.trajectories(
          split, scheme=self.scheme, num=num, seed=self.seed + 1
        )
      )
    from data_pipelines import input_pipeline

    rows = input_pipeline.load_split(
      self.cfg.data_dir, self.task.name, split, scheme=self.scheme
    )
    return self.apply_view(
      _decode_split(rows, self.tokenizer, self.task.name, num)
    )

  def encode(self, trajs):
    """A numpy batch of `trajs` at the training shapes (counts over-length)."""
    return batching.encode_trajectories(
      trajs, self.tokenizer, self.shapes, "truncate"
    )


def _decode_split(rows, tokenizer, task_name, num) -> list[Trajectory]:
  """Trajectories back from a pre-tokenized split (decoding is exact)."""
  out = []
  for i in range(min(num, len(rows))):
    q = rows.question_tokens[
      rows.question_offsets[i] : rows.question_offsets[i + 1]
    ]
    drafts = []
    for r in range(rows.level_offsets[i], rows.level_offsets[i + 1]):
      lo, hi = rows.draft_offsets[r], rows.draft_offsets[r + 1]
      drafts.append(tokenizer.decode(rows.draft_tokens[lo:hi]))
    out.append(
      Trajectory(
        id=rows.ids[i],
        task=task_name,
        question=tokenizer.decode(q),
        drafts=drafts,
        answer=rows.answers[i],
      )
    )
  return out


def _auto_shapes(cfg, tokenizer, sample: list[Trajectory]) -> batching.Shapes:
  q = tokenizer.encode_many([t.question for t in sample])
  d = tokenizer.encode_many([x for t in sample for x in t.drafts])
  return batching.Shapes(
    max_question_len=cfg.max_question_len or max(map(len, q)),
    max_draft_len=cfg.max_draft_len or max(map(len, d)) + 1,
    max_drafts=cfg.max_drafts or max(len(t.drafts) for t in sample),
  )


def _view_shapes(cfg, rows) -> batching.Shapes:
  """Shapes that fit a viewed split entirely (one draft per example)."""
  return batching.Shapes(
    max_question_len=cfg.max_question_len or int(rows.question_lengths().max()),
    max_draft_len=cfg.max_draft_len or int(rows.draft_lengths().max()) + 1,
    max_drafts=1,
  )


def _with_hint_room(cfg, task, tokenizer, sample, shapes) -> batching.Shapes:
  """Room in the question for an answer hint when `data.hint_prob` > 0."""
  if not cfg.get("hint_prob", 0.0) or cfg.max_question_len:
    return shapes
  hinted = [views.with_hint(task, t).question for t in sample]
  # +2: an answer a little longer than any in the sample still fits.
  longest = max(map(len, tokenizer.encode_many(hinted))) + 2
  return dataclasses.replace(
    shapes, max_question_len=max(shapes.max_question_len, longest)
  )


def build(config: ml_collections.ConfigDict, workdir) -> Data:
  """Task, tokenizer (trained or reloaded from the workdir) and shapes."""
  from bottomup.models import default_view

  cfg = config.data
  task = tasks.get_task(cfg.task)
  view = views.check_view(cfg.get("view") or default_view(config.model.name))
  # A model that writes the final draft only learns the usual full chain.
  default = task.cot_scheme if view == "final" else None
  scheme = task.check_scheme(cfg.scheme or default)
  spm_path = pathlib.Path(workdir) / tok_lib.MODEL_FILE
  if cfg.source == "generator":
    sample = list(
      task.trajectories(
        "train", scheme=scheme, num=cfg.tokenizer_examples, seed=config.seed
      )
    )
    if spm_path.exists():
      tokenizer = tok_lib.Tokenizer.load(spm_path)
    else:
      # Trained on the full trajectories whatever the view, so that every
      # model of a comparison reads the same tokens.
      texts = [t.question for t in sample] + [
        x for t in sample for x in t.drafts
      ]
      tokenizer = tok_lib.Tokenizer.train(texts, model_type="char")
      if jax.process_index() == 0:
        spm_path.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(spm_path)
  elif cfg.source == "prepared":
    from data_pipelines import builders, input_pipeline

    path = builders.require_prepared(cfg.data_dir, task.name, scheme)
    tokenizer = tok_lib.Tokenizer.load(path)
    stats = json.loads((path / builders.STATS_FILE).read_text())
    suggested = stats["suggested_shapes"]
    rows = input_pipeline.load_split(
      cfg.data_dir, task.name, "train", scheme=scheme
    )
    sample = _decode_split(rows, tokenizer, task.name, cfg.tokenizer_examples)
    if jax.process_index() == 0:
      spm_path.parent.mkdir(parents=True, exist_ok=True)
      tokenizer.save(spm_path)
    if view in views.MULTI_DRAFT_VIEWS:
      check = int(view == "checked")  # the check pass's draft
      shapes = batching.Shapes(
        max_question_len=cfg.max_question_len or suggested["max_question_len"],
        max_draft_len=cfg.max_draft_len or suggested["max_draft_len"],
        max_drafts=cfg.max_drafts or suggested["max_drafts"] + check,
      )
    else:
      viewed = views.view_split(task, tokenizer, rows, view)
      shapes = _view_shapes(cfg, viewed)
    shapes = _with_hint_room(cfg, task, tokenizer, sample, shapes)
    return Data(task, scheme, tokenizer, shapes, cfg, config.seed, view)
  else:
    raise ValueError(f"data.source must be generator|prepared: {cfg.source!r}")
  viewed = [views.view_trajectory(task, t, view) for t in sample]
  shapes = _auto_shapes(cfg, tokenizer, viewed)
  shapes = _with_hint_room(cfg, task, tokenizer, sample, shapes)
  return Data(task, scheme, tokenizer, shapes, cfg, config.seed, view)
