"""Evaluation: final-answer accuracy through the sampler, plus per-pass figures.

    python -m bottomup.evaluate --workdir=DIR [--split=S | --eval_file=F] \
        [--output=JSON] [--num=N] [--config.sampling.x=y ...]

Restores the latest checkpoint of DIR, solves the problems of a split (or of
a file in the task's own format, e.g. an iCoT `.txt`) with the model's
sampler (`bottomup.generate.make_sampler`: passes for the refiner, one
left-to-right or diffusion draft for the baselines), and
reports `accuracy` (exact match of the verified final answer), the exact
match of every pass's draft against the reference draft, and the
teacher-forced loss per pass.

`--forced_passes=K` (the refiner; a diagnosis of where free-running goes
wrong): the first K drafts of every problem are its reference drafts and
the model writes the rest from them, e.g. K = T-1 asks whether the last
pass is right given a correct previous draft.
"""

from __future__ import annotations

import pathlib
import sys
import time

import jax
import numpy as np
from absl import app
from jax.experimental import multihost_utils

from bottomup import answers, flops, generate, sampling, steps
from data_pipelines.trajectory import Trajectory
from data_pipelines.views import format_viewed


class Evaluator:
  """Solves held-out problems and scores them (used by the trainer too)."""

  def __init__(self, config, data, model, mesh, forced_passes: int = 0):
    """`forced_passes` > 0: the first drafts are given (module docstring)."""
    self.config, self.data, self.model, self.mesh = config, data, model, mesh
    self._compiled = False  # the sampler has run once (see `score`)
    shapes = data.shapes
    if forced_passes:
      from bottomup.models.refiner import Refiner

      if not isinstance(model, Refiner):
        raise ValueError(
          f"forced_passes: implemented for the refiner, not "
          f"{type(model).__name__}"
        )
      if not 0 < forced_passes < shapes.max_drafts:
        raise ValueError(
          f"forced_passes={forced_passes}: must be in [1, "
          f"{shapes.max_drafts - 1}] (the model writes {shapes.max_drafts} "
          "drafts and at least the last is sampled)"
        )
    self.forced_passes = forced_passes
    from bottomup import train  # local: train imports this module

    self.latent = train.latent_mask(
      config, config.train.num_steps, shapes.max_drafts
    )
    s = config.sampling
    self.sampling_cfg = sampling.SamplingConfig(
      trained_passes=shapes.max_drafts,
      extra_passes=s.extra_passes,
      temperature=s.temperature,
      top_k=s.top_k,
      top_p=s.top_p,
      num_samples=s.num_samples,
      max_draft_len=shapes.max_draft_len,
      latent=tuple(bool(x) for x in self.latent),
      diffusion_steps=s.get("diffusion_steps", 0),
      unmask_order=s.get("unmask_order", "random"),
      guidance=s.get("guidance", 1.0),
      selection=s.get("selection", "likelihood"),
      beam_width=s.get("beam_width", 1),
      prm=self._load_prm(s),
    )
    base_sampler = generate.make_sampler(model, self.sampling_cfg)
    sel = self._prm_params

    def sampler(params, question, rng, *forced):
      return base_sampler(params, question, rng, sel, *forced)

    eval_step = steps.make_eval_step(
      model, train.pass_weights(config, shapes.max_drafts)
    )
    self.batch_size = config.eval.batch_size
    if mesh is None:  # this process's default device
      self._refine, self._eval_step = sampler, jax.jit(eval_step)
      self._put, self._fetch = (lambda x: x), np.asarray
      return
    # Data-parallel over the mesh (every process of a multi-host job takes
    # part): problems are split over (data, fsdp) and the results gathered
    # back to every process.
    from bottomup import sharding

    rows = sharding.batch_sharding(mesh)
    repl = sharding.replicated(mesh)
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    self.batch_size = -(-self.batch_size // ways) * ways
    self._refine = jax.jit(
      sampler, out_shardings=sampling.RefineResult(rows, rows, repl)
    )
    self._eval_step = jax.jit(eval_step, out_shardings=repl)
    self._put = lambda x: jax.make_array_from_callback(
      x.shape, rows, lambda index: x[index]
    )
    self._fetch = lambda x: multihost_utils.process_allgather(x, tiled=True)

  def run(self, params, split: str, num: int, show: int = 0, trajs=None):
    """Scores `num` problems of `split` (or the given `trajs`)."""
    if trajs is None:
      trajs = self.data.trajectories(split, num)
    return self.score(params, trajs, show)

  def _load_prm(self, s):
    """The PRM module for `selection=prm` (its params: `_prm_params`)."""
    self._prm_params = None
    if s.get("selection", "likelihood") not in sampling.PRM_SELECTIONS:
      return None
    from bottomup import prm as prm_io

    if not s.get("prm_dir"):
      raise ValueError(
        "sampling.selection=prm needs sampling.prm_dir (evaluate sets it to "
        "WORKDIR/prm)"
      )
    tok = self.data.tokenizer
    module, self._prm_params = prm_io.load(
      s.prm_dir, tok.vocab_size, tok.digit_ids
    )
    return module

  def _chunks(self, batch, n):
    """(offset, chunk, padding rows) over a batch, in fixed-size chunks."""
    bs = self.batch_size
    for lo in range(0, n, bs):
      chunk = {k: v[lo : lo + bs] for k, v in batch.items()}
      pad = bs - len(chunk["question"])
      if pad:  # fixed shapes: one compilation for every chunk
        chunk = {
          k: np.concatenate([v, np.repeat(v[-1:], pad, 0)])
          for k, v in chunk.items()
        }
        # Padding rows have no written passes, so they add nothing.
        chunk["num_drafts"][bs - pad :] = 0
      yield lo, chunk, pad

  def _forced(self, chunk) -> tuple:
    """The sampler's `forced` argument for a chunk: () when none."""
    if not self.forced_passes:
      return ()
    return (self._put(chunk["drafts"][:, : self.forced_passes]),)

  def solve(self, params, trajs: list[Trajectory], rng) -> list[list[str]]:
    """The drafts (text, one per pass) the sampler writes for each problem.

    Only the questions of `trajs` are read. Every process gets all rows.
    """
    batch, _ = self.data.encode(trajs)
    out: list[list[str]] = []
    for _, chunk, pad in self._chunks(batch, len(trajs)):
      rng, key = jax.random.split(rng)
      question = self._put(chunk["question"])
      result = self._refine(params, question, key, *self._forced(chunk))
      drafts = self._fetch(result.drafts)[: self.batch_size - pad]
      out.extend(answers.decode_text(self.data.tokenizer, drafts))
    return out

  def score(self, params, trajs: list[Trajectory], show: int = 0) -> dict:
    """Accuracy and per-pass figures of `trajs`."""
    task, tok = self.data.task, self.data.tokenizer
    bs, put, fetch = self.batch_size, self._put, self._fetch
    batch, counts = self.data.encode(trajs)
    n = len(trajs)
    texts: list[list[str]] = []
    votes: list[list[str | None]] = [[] for _ in trajs]
    tf_sums = None
    rng = jax.random.key(self.config.seed + 7)
    shape = (self.data.shapes.max_drafts, self.data.shapes.max_draft_len)
    pos_hits, pos_n = np.zeros(shape), np.zeros(shape)
    if n and not self._compiled:
      # Compile before the timer (once per Evaluator), so that problems/s
      # is the steady-state rate.
      _, first, _ = next(self._chunks(batch, n))
      q, forced = put(first["question"]), self._forced(first)
      jax.block_until_ready(self._refine(params, q, jax.random.key(0), *forced))
      self._compiled = True
    t0 = time.time()
    for lo, chunk, pad in self._chunks(batch, n):
      rng, key = jax.random.split(rng)
      question, forced = put(chunk["question"]), self._forced(chunk)
      result = self._refine(params, question, key, *forced)
      drafts = fetch(result.drafts)[: bs - pad]
      texts.extend(answers.decode_text(tok, drafts))
      hits, valid = position_matches(
        drafts, chunk["drafts"][: bs - pad], chunk["num_drafts"][: bs - pad]
      )
      pos_hits += hits
      pos_n += valid
      for _ in range(self.config.sampling.num_votes - 1):
        rng, key = jax.random.split(rng)
        final = self._refine(params, question, key, *forced).final
        final = fetch(final)[: bs - pad]
        for i, row in enumerate(final):
          votes[lo + i].append(task.extract_answer(tok.decode(row)))
      m = self._eval_step(
        params, {k: put(v) for k, v in chunk.items()}, self.latent
      )
      m = {k: fetch(v) for k, v in m.items() if k != "loss"}
      tf_sums = m if tf_sums is None else {k: tf_sums[k] + m[k] for k in m}
    seconds = time.time() - t0
    correct, per_pass = [], np.zeros(self.data.shapes.max_drafts)
    per_pass_n = np.zeros_like(per_pass)
    samples = []
    first_correct = []
    for traj, drafts, others in zip(trajs, texts, votes):
      final = drafts[-1] if drafts else ""
      ok = task.verify(final, traj.answer)
      first_correct.append(ok)
      if others:  # self-consistency: the first sample votes too
        voted = answers.majority_vote([[task.extract_answer(final), *others]])
        ok = voted[0] == task.canonical_answer(traj.answer)
      correct.append(ok)
      for t, ref in enumerate(traj.drafts[: len(per_pass)]):
        if self.latent[t] or t >= len(drafts):
          continue
        per_pass[t] += drafts[t] == ref
        per_pass_n[t] += 1
      if len(samples) < show:
        samples.append(
          dict(
            id=traj.id,
            question=traj.question,
            drafts=drafts,
            answer=traj.answer,
            correct=ok,
          )
        )
    tf = steps.summarize(tf_sums) if tf_sums is not None else {}
    return dict(
      accuracy=float(np.mean(correct)) if correct else 0.0,
      num_examples=n,
      num_correct=int(np.sum(correct)),
      # Without voting this equals `accuracy`.
      first_sample_accuracy=float(np.mean(first_correct)) if trajs else 0.0,
      per_pass_exact_match=[
        round(float(a / b), 4) if b else None
        for a, b in zip(per_pass, per_pass_n)
      ],
      teacher_forced={k: round(v, 5) for k, v in tf.items()},
      # Free-running accuracy of every token position of every pass.
      per_position_accuracy=[
        [round(float(h / c), 4) for h, c in zip(hs, cs) if c]
        for hs, cs in zip(pos_hits, pos_n)
      ],
      overlength=counts.total(),
      problems_per_second=round(n / max(seconds, 1e-9), 1),
      # Estimated matmul FLOPs per problem (`flops.sampling_flops`).
      flops_per_problem=flops.sampling_flops(
        self.config.model.name,
        params,
        self.sampling_cfg,
        self.data.shapes,
        num_slots=self.config.model.get("num_slots", 0),
        num_votes=self.config.sampling.num_votes,
        prm_params=self._prm_params,
      ),
      samples=samples,
    )

  def report(self, results: dict, timing: dict | None = None) -> None:
    """Prints the accuracy and the sample trajectories, human-readable."""
    task = self.data.task
    fmt_q = getattr(task, "format_question", lambda q: q)
    forced = results.get("forced_passes", self.forced_passes)
    print(
      f"\n{results.get('task', task.name)}: accuracy "
      f"{results['accuracy']:.4f} ({results['num_correct']}/"
      f"{results['num_examples']}) on held-out problems; per-pass exact "
      f"match {results['per_pass_exact_match']}"
      + (f" (the first {forced} drafts given)" if forced else "")
    )
    if timing:
      print(f"timing: {timing}")
    for s in results["samples"]:
      print(f"\nQ: {fmt_q(s['question'])}")
      for t, d in enumerate(s["drafts"]):
        print(f"  pass {t}: {format_viewed(task, d) if d else '(latent)'}")
      mark = "correct" if s["correct"] else "wrong"
      print(f"  reference answer: {task.format_answer(s['answer'])} ({mark})")
    sys.stdout.flush()


def position_matches(sampled, reference, num_drafts):
  """Per-(pass, position) hits and counts of sampled vs reference drafts.

  Args:
    sampled: int [B, T', Ld] drafts written by `refine` (T' >= T).
    reference: int [B, T, Ld] reference drafts (+ EOS, PAD-padded).
    num_drafts: int [B].

  Returns:
    (hits, counts), each float [T, Ld], over the reference's real tokens.
  """
  t_len = reference.shape[1]
  valid = (reference != 0) & (
    np.arange(t_len)[None, :, None] < num_drafts[:, None, None]
  )
  hits = (sampled[:, :t_len] == reference) & valid
  return hits.sum(0).astype(float), valid.sum(0).astype(float)


def _load_file(task, path, scheme) -> list[Trajectory]:
  return list(task.load(pathlib.Path(path), split="eval", scheme=scheme))


# `sampling` config fields that evaluate's flags of the same name override.
SAMPLING_FLAGS = (
  "temperature",
  "top_k",
  "top_p",
  "num_samples",
  "extra_passes",
  "num_votes",
  "diffusion_steps",
  "unmask_order",
  "guidance",
  "selection",
  "beam_width",
)


def quiet_libraries() -> None:
  """orbax and clu log every step at INFO; keep WARNING unless asked."""
  from absl import flags, logging

  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def restore_run(workdir, sampling_overrides: dict | None = None):
  """Config, data, model, mesh and latest params of a training workdir.

  Args:
    workdir: a workdir written by `train_and_evaluate`.
    sampling_overrides: values replacing fields of the `sampling` group.

  Returns:
    (config, data, model, mesh, params, step).
  """
  import flax.linen as nn
  import ml_collections

  from bottomup import checkpoint, datasets, sharding, train
  from bottomup.models import get_model
  from experiments import base

  workdir = pathlib.Path(workdir)
  cfg_path = workdir / "config.json"
  if not cfg_path.exists():
    raise FileNotFoundError(f"{cfg_path} not found: is {workdir} a workdir?")
  import json

  saved = json.loads(cfg_path.read_text())
  # Fields added to the base config after this run was trained take their
  # defaults, so that older workdirs still load.
  for group, values in base.get_config().to_dict().items():
    if isinstance(values, dict):
      for k, v in values.items():
        saved.setdefault(group, {}).setdefault(k, v)
    else:
      saved.setdefault(group, values)
  config = ml_collections.ConfigDict(saved)
  for k, v in (sampling_overrides or {}).items():
    if v is not None:
      config.sampling[k] = v
  config.lock()
  data = datasets.build(config, workdir)
  model = get_model(
    config.model, data.tokenizer.vocab_size, data.tokenizer.digit_ids
  )
  mesh = sharding.make_mesh(config.mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config.mesh)):
    init, rng, state_sharding = train.init_state(
      config, model, data.shapes, mesh
    )
    ckpt = checkpoint.Checkpointer(
      workdir / "checkpoints",
      save_interval_steps=1,
      max_to_keep=1,
      read_only=True,
    )
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}")
    abstract = checkpoint.abstract_like(
      jax.eval_shape(init, rng), state_sharding
    )
    state, _ = ckpt.restore(step, abstract)
    ckpt.close()
  return config, data, model, mesh, state.params, step


def main(argv):
  from absl import flags

  from bottomup import metrics

  f = flags.FLAGS
  quiet_libraries()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if f.split and f.eval_file:
    raise app.UsageError("give --split or --eval_file, not both")
  if f.eval_file and not pathlib.Path(f.eval_file).is_file():
    raise app.UsageError(f"--eval_file={f.eval_file}: no such file")
  overrides = {name: getattr(f, name) for name in SAMPLING_FLAGS}
  if f.selection in sampling.PRM_SELECTIONS:
    overrides["prm_dir"] = f.prm_dir or str(pathlib.Path(f.workdir) / "prm")
  config, data, model, mesh, params, step = restore_run(f.workdir, overrides)
  split = f.split or config.eval.final_split
  if f.eval_file:
    trajs = data.apply_view(_load_file(data.task, f.eval_file, data.scheme))
    if f.num:
      trajs = trajs[: f.num]
    source = f.eval_file
  else:
    trajs = data.trajectories(split, f.num or config.eval.final_num_examples)
    source = split
  try:
    evaluator = Evaluator(config, data, model, mesh, f.forced_passes)
  except ValueError as e:
    raise app.UsageError(f"--{e}") from e
  results = evaluator.score(params, trajs, show=f.show)
  results.update(
    step=step, source=str(source), task=data.task.name, model=config.model.name
  )
  if f.forced_passes:
    results["forced_passes"] = f.forced_passes
  evaluator.report(results)
  if f.output:
    metrics.write_json(f.output, results)
    print(f"wrote {f.output}")


if __name__ == "__main__":
  from absl import app, flags

  flags.DEFINE_string("workdir", None, "A training workdir.")
  flags.DEFINE_string("split", "", "Split to evaluate (default: the final).")
  flags.DEFINE_string("eval_file", "", "A file in the task's own format.")
  flags.DEFINE_string("output", "", "Write the results JSON here.")
  flags.DEFINE_integer("num", 0, "At most this many problems (0 = all).")
  flags.DEFINE_integer("show", 1, "Trajectories to print.")
  flags.DEFINE_float("temperature", None, "Sampling temperature override.")
  flags.DEFINE_integer("top_k", None, "Top-k override.")
  flags.DEFINE_float("top_p", None, "Top-p override.")
  flags.DEFINE_integer("num_samples", None, "Samples per pass override.")
  flags.DEFINE_integer("extra_passes", None, "Extra passes override.")
  flags.DEFINE_integer("num_votes", None, "Self-consistency votes override.")
  flags.DEFINE_integer(
    "diffusion_steps", None, "Masked diffusion: denoising steps override."
  )
  flags.DEFINE_enum(
    "unmask_order",
    None,
    ["random", "confidence"],
    "Masked diffusion: unmasking order override.",
  )
  flags.DEFINE_float(
    "guidance",
    None,
    "Classifier-free guidance weight override (refiner trained with "
    "model.question_dropout > 0; 1 = off).",
  )
  flags.DEFINE_enum(
    "selection",
    None,
    ["likelihood", "prm", "prm_likelihood"],
    "How the samples of a pass are ranked (prm: a process reward model "
    "from `python -m bottomup.prm`; prm_likelihood: log-likelihood + log "
    "PRM probability).",
  )
  flags.DEFINE_string("prm_dir", "", "The PRM folder (default WORKDIR/prm).")
  flags.DEFINE_integer("beam_width", None, "Drafts kept per pass (beam).")
  flags.DEFINE_integer(
    "forced_passes",
    0,
    "Diagnosis (refiner): the first K drafts are the reference drafts, "
    "the rest are sampled from them.",
  )
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
