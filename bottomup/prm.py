"""Process reward model: Monte-Carlo rollouts, training and calibration.

    python -m bottomup.prm --workdir=DIR [--prm.x=y ...]

For the refiner trained in DIR (DESIGN §3-§4):

1. Sample `prm.samples_per_problem` trajectories d_0 ... d_{T-1} for each
   of `prm.num_problems` training problems that the refiner did not train
   on (`unseen_train_problems`; temperature `prm.temperature`,
   top-p `prm.top_p`). With one, every question has one draft per pass and
   the PRM can only learn how hard the question is; with several it also
   sees drafts of the same question that are worth different amounts,
   which is what ranking samples at test time needs.
2. Continue from every prefix d_0..d_t, t < T-1, `prm.rollouts` times
   (`sampling.refine(..., forced=prefix)`: the given drafts are read, the
   rest sampled); the value of d_t is the fraction of rollouts whose final
   answer verifies. The final draft's value is its own correctness.
3. Train the process reward model (`models/prm.py`, a small encoder over
   [question; d_t] and t; with `prm.init_from_refiner` it has the
   refiner's encoder sizes and starts from the refiner's embeddings and
   encoder: a value head on the features that already solve the task)
   with binary cross-entropy against the values,
   holding out the last `prm.holdout_fraction` of the training problems
   (all their drafts) and keeping the parameters with the lowest held-out
   loss, checked every `prm.eval_every` steps (early stopping: the drafts
   of one problem are strongly correlated, and a PRM trained to the end
   memorises the training questions' difficulty).
4. Roll out `prm.valid_problems` valid problems the same way and report
   the Brier score and AUROC of the predictions against the outcome of
   every rollout (and the Brier score of always predicting the base rate),
   and the within-question ranking accuracy: over pairs of drafts of the
   same problem and pass whose values differ, how often the PRM scores the
   better one higher (ties count half; what PRM selection relies on).

Writes DIR/prm/: `params.msgpack` (written atomically), `prm.json` (its
config), `prm_results.json` and `rollouts.npz`, the rollout values, which a
rerun with the same rollout settings on the same checkpoint reuses (to
train another PRM on the same rollouts, e.g. `--prm.init_from_refiner`).
Then

    python -m bottomup.evaluate --workdir=DIR --selection=prm \
        --num_samples=4 --temperature=0.7 [--beam_width=2]

keeps, at every pass, the samples the PRM scores highest.
"""

from __future__ import annotations

import json
import pathlib
import time

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags

from bottomup import answers, evaluate, metrics, prm_metrics, sampling
from bottomup.models import prm as prm_lib

PRM_DIR = "prm"
PARAMS_FILE = "params.msgpack"
ROLLOUTS_FILE = "rollouts.npz"


def default_config() -> ml_collections.ConfigDict:
  """The `prm` config group's defaults (see experiments/base.py)."""
  from experiments import base

  return base.get_config().prm


# -- Rollouts ------------------------------------------------------------------


def rollout_values(model, params, data, trajs, cfg, latent, seed, batch_size):
  """Per draft of sampled trajectories: its Monte-Carlo value.

  Args:
    model: the Refiner.
    params: its parameters.
    data: the run's `datasets.Data`.
    trajs: problems (questions and answers are read).
    cfg: the `prm` config group.
    latent: bool [T], the latent passes (no draft to score).
    seed: PRNG seed.
    batch_size: problems per sampler call.

  Returns:
    dict of numpy arrays over the scored drafts: question [N, Lq], draft
    [N, Ld], t [N], value [N], outcomes [N, R] (float, NaN-free: the final
    draft's single outcome is repeated), problem [N] (index into `trajs`;
    `cfg.samples_per_problem` trajectories are sampled for each).
  """
  shapes = data.shapes
  t_len = shapes.max_drafts
  s_cfg = sampling.SamplingConfig(
    max_draft_len=shapes.max_draft_len,
    trained_passes=t_len,
    temperature=cfg.temperature,
    top_p=cfg.top_p,
    latent=tuple(bool(x) for x in latent),
  )
  m = cfg.rollouts
  task, tok = data.task, data.tokenizer
  k = cfg.get("samples_per_problem", 1)
  batch, _ = data.encode(trajs)
  questions = np.repeat(batch["question"], k, axis=0)
  answers_all = [t.answer for t in trajs for _ in range(k)]
  problems = np.repeat(np.arange(len(trajs)), k)
  rng = jax.random.key(seed)
  out = {
    k: [] for k in ("question", "draft", "t", "value", "outcomes", "problem")
  }

  def correct(final_rows, answers_):
    texts = answers.decode_text(tok, np.asarray(final_rows)[:, None])
    return np.array(
      [task.verify(x[0], a) for x, a in zip(texts, answers_)], np.float32
    )

  for lo in range(0, len(questions), batch_size):
    q = jnp.asarray(questions[lo : lo + batch_size])
    ans = answers_all[lo : lo + batch_size]
    b = q.shape[0]
    rng, key = jax.random.split(rng)
    drafts = sampling.refine(model, params, q, s_cfg, key).drafts
    final_ok = correct(drafts[:, -1], ans)
    q_m = jnp.repeat(q, m, axis=0)
    ans_m = [a for a in ans for _ in range(m)]
    for t in range(t_len):
      if latent[t]:
        continue
      if t == t_len - 1:
        outcomes = np.repeat(final_ok[:, None], m, axis=1)
      else:
        rng, key = jax.random.split(rng)
        forced = jnp.repeat(drafts[:, : t + 1], m, axis=0)
        res = sampling.refine(model, params, q_m, s_cfg, key, forced=forced)
        outcomes = correct(res.drafts[:, -1], ans_m).reshape(b, m)
      out["question"].append(np.asarray(q))
      out["draft"].append(np.asarray(drafts[:, t]))
      out["t"].append(np.full((b,), t, np.int32))
      out["value"].append(outcomes.mean(1))
      out["outcomes"].append(outcomes)
      out["problem"].append(problems[lo : lo + b])
  return {k: np.concatenate(v) for k, v in out.items()}


# -- Training ------------------------------------------------------------------


_FIELDS = ("question", "draft", "t", "value")


def split_by_problem(arrays, fraction: float):
  """(fit, holdout): the drafts of the last `fraction` of the problems are
  held out (None when that is no problem)."""
  n_prob = int(arrays["problem"].max()) + 1
  n_hold = int(round(n_prob * fraction))
  if n_hold == 0 or n_hold == n_prob:
    return arrays, None
  hold = arrays["problem"] >= n_prob - n_hold
  return (
    {k: v[~hold] for k, v in arrays.items()},
    {k: v[hold] for k, v in arrays.items()},
  )


def train_prm(prm, data_arrays, cfg, seed: int, holdout=None, init=None):
  """Trains the PRM on rollout values.

  Args:
    prm: the ProcessRewardModel.
    data_arrays: `rollout_values` output to fit.
    cfg: the `prm` config group (steps, batch_size, learning_rate,
      eval_every).
    seed: PRNG seed (init and batches).
    holdout: rollout values to stop on, or None: then the last step's
      parameters are kept.
    init: None, or a function of the freshly initialized parameters that
      returns the starting ones (e.g. the refiner's encoder put in).

  Returns:
    (params, info): the kept parameters; info has `final_loss` (the last
    training batch's), `best_step` and `holdout_loss` (the held-out loss of
    the kept parameters; None without a holdout) and `curve`, the
    [step, held-out loss] checks.
  """
  n = len(data_arrays["value"])
  rng = np.random.default_rng(seed)
  params = flax.linen.meta.unbox(
    prm.init(
      jax.random.key(seed),
      data_arrays["question"][:2],
      data_arrays["draft"][:2],
      data_arrays["t"][:2],
    )["params"]
  )
  if init is not None:
    params = init(params)
  warmup = min(100, cfg.steps // 10 + 1)
  sched = optax.warmup_cosine_decay_schedule(
    0.0, cfg.learning_rate, warmup, max(cfg.steps, warmup + 1), 1e-5
  )
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched))
  opt = tx.init(params)

  def loss_fn(p, batch):
    logits = prm.apply(
      {"params": p}, batch["question"], batch["draft"], batch["t"]
    )
    return optax.sigmoid_binary_cross_entropy(logits, batch["value"]).mean()

  @jax.jit
  def step(p, o, batch):
    loss, g = jax.value_and_grad(loss_fn)(p, batch)
    updates, o = tx.update(g, o, p)
    return optax.apply_updates(p, updates), o, loss

  eval_loss = jax.jit(loss_fn)

  def held_out(p) -> float:
    total, bs = 0.0, 1024
    for i in range(0, len(holdout["value"]), bs):
      part = {k: holdout[k][i : i + bs] for k in _FIELDS}
      total += float(eval_loss(p, part)) * len(part["value"])
    return total / len(holdout["value"])

  every = cfg.get("eval_every", 0) or cfg.steps
  curve, best = [], (float("inf"), 0, params)
  loss = float("nan")
  bs = min(cfg.batch_size, n)
  for i in range(1, cfg.steps + 1):
    idx = rng.choice(n, bs, replace=False)
    params, opt, loss = step(
      params, opt, {k: data_arrays[k][idx] for k in _FIELDS}
    )
    if holdout is not None and (i % every == 0 or i == cfg.steps):
      h = held_out(params)
      curve.append([i, round(h, 5)])
      if h < best[0]:
        best = (h, i, params)
  info = dict(final_loss=float(loss), curve=curve)
  if holdout is None:
    return params, dict(info, best_step=cfg.steps, holdout_loss=None)
  h, i, params = best
  return params, dict(info, best_step=i, holdout_loss=h)


def predict(prm, params, arrays, batch_size: int = 512) -> np.ndarray:
  """P(correct) of every draft."""
  fn = jax.jit(
    lambda p, q, d, t: jax.nn.sigmoid(prm.apply({"params": p}, q, d, t))
  )
  out = [
    np.asarray(
      fn(
        params,
        arrays["question"][i : i + batch_size],
        arrays["draft"][i : i + batch_size],
        arrays["t"][i : i + batch_size],
      )
    )
    for i in range(0, len(arrays["t"]), batch_size)
  ]
  return np.concatenate(out)


# -- Files ---------------------------------------------------------------------


def save(prm_dir: pathlib.Path, prm_cfg: ml_collections.ConfigDict, params):
  """Writes the PRM's config and parameters (atomically)."""
  prm_dir.mkdir(parents=True, exist_ok=True)
  tmp = prm_dir / (PARAMS_FILE + ".tmp")
  tmp.write_bytes(flax.serialization.msgpack_serialize(jax.device_get(params)))
  tmp.replace(prm_dir / PARAMS_FILE)
  metrics.write_json(prm_dir / "prm.json", prm_cfg.to_dict())


# The rollouts' settings: a saved rollout file is reused only when these
# (and the refiner's checkpoint step) are the same.
_ROLLOUT_FIELDS = (
  "num_problems",
  "samples_per_problem",
  "valid_problems",
  "rollouts",
  "temperature",
  "top_p",
)


def rollouts_key(cfg, refiner_step: int) -> str:
  """What the rollouts depend on, as a string stored with them."""
  fields = {k: cfg.get(k) for k in _ROLLOUT_FIELDS}
  return json.dumps(
    dict(fields, refiner_step=int(refiner_step)), sort_keys=True
  )


def save_rollouts(path: pathlib.Path, key: str, train_arrays, valid_arrays):
  """Writes both splits' rollout values (atomically) with their key."""
  if jax.process_index() != 0:
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  arrays = {f"train/{k}": v for k, v in train_arrays.items()}
  arrays.update({f"valid/{k}": v for k, v in valid_arrays.items()})
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez(tmp, key=np.array(key), **arrays)
  tmp.replace(path)


def load_rollouts(path: pathlib.Path, key: str):
  """(train, valid) rollout values saved under `key`, or (None, None) when
  there are none or they were made with other settings."""
  if not path.exists():
    return None, None
  with np.load(path) as f:
    if str(f["key"]) != key:
      print(f"{path}: rollouts of other settings, sampled again", flush=True)
      return None, None
    split = lambda s: {
      k.split("/", 1)[1]: f[k] for k in f.files if k.startswith(s + "/")
    }
    train_arrays, valid_arrays = split("train"), split("valid")
  print(f"reusing the rollouts saved in {path}", flush=True)
  return train_arrays, valid_arrays


def load(prm_dir, vocab_size: int, digit_ids=()):
  """(ProcessRewardModel, params) saved by `save`."""
  prm_dir = pathlib.Path(prm_dir)
  path = prm_dir / PARAMS_FILE
  if not path.exists():
    raise FileNotFoundError(
      f"{path} not found: train one with `python -m bottomup.prm --workdir=...`"
    )
  cfg = ml_collections.ConfigDict(
    json.loads((prm_dir / "prm.json").read_text())
  )
  prm = prm_lib.make_prm(cfg, vocab_size, digit_ids)
  params = flax.serialization.msgpack_restore(path.read_bytes())
  return prm, params


def unseen_train_problems(config, data, num: int) -> list:
  """`num` training problems whose solutions the refiner never trained on.

  With `data.train_examples=N` the refiner read the first N problems for
  many epochs (and a bootstrap round's model, its own solutions of the
  `bootstrap.num_questions` after them): their rollouts would be almost
  all correct, unlike the problems it is judged on. They are skipped. With
  fresh problems (N = 0) every problem was read at most once: none are.
  """
  n_sup = int(config.data.get("train_examples", 0) or 0)
  if not n_sup:
    return data.train_problems(num)
  *_, unseen = data.problems_after(
    n_sup, (int(config.bootstrap.num_questions), num)
  )
  return unseen


def run(workdir, cfg: ml_collections.ConfigDict | None = None) -> dict:
  """Rollouts, training and calibration for the refiner of `workdir`."""
  workdir = pathlib.Path(workdir)
  config, data, model, mesh, params, step = evaluate.restore_run(workdir)
  if config.model.name != "refiner":
    raise ValueError(f"the PRM scores refiner drafts, not {config.model.name}")
  cfg = cfg or config.prm
  from bottomup import train

  latent = train.latent_mask(
    config, config.train.num_steps, data.shapes.max_drafts
  )
  t0 = time.time()
  bs = config.eval.batch_size
  train_probs = unseen_train_problems(config, data, cfg.num_problems)
  valid_probs = data.trajectories("valid", cfg.valid_problems)
  out = workdir / PRM_DIR
  cache = out / ROLLOUTS_FILE
  key = rollouts_key(cfg, step)
  tr, va = load_rollouts(cache, key)
  reused = tr is not None
  if not reused:
    tr = rollout_values(
      model, params, data, train_probs, cfg, latent, config.seed, bs
    )
    va = rollout_values(
      model, params, data, valid_probs, cfg, latent, config.seed + 1, bs
    )
    save_rollouts(cache, key, tr, va)
  t_roll = time.time() - t0
  init = None
  if cfg.get("init_from_refiner", False):
    cfg = prm_lib.refiner_sized(cfg, config.model)
    refiner_params = jax.device_get(params)
    init = lambda p: prm_lib.refiner_parts(p, refiner_params)
  prm = prm_lib.make_prm(
    cfg, data.tokenizer.vocab_size, data.tokenizer.digit_ids
  )
  fit, hold = split_by_problem(tr, cfg.get("holdout_fraction", 0.0))
  prm_params, info = train_prm(
    prm, fit, cfg, config.seed, holdout=hold, init=init
  )
  p_va = predict(prm, prm_params, va)
  groups = va["problem"] * (int(va["t"].max()) + 1) + va["t"]
  rank_acc, rank_pairs = prm_metrics.ranking_accuracy(p_va, va["value"], groups)
  results = dict(
    refiner_step=step,
    train_drafts=int(len(fit["t"])),
    holdout_drafts=0 if hold is None else int(len(hold["t"])),
    train_value_mean=float(tr["value"].mean()),
    **info,
    valid=dict(
      prm_metrics.calibration(p_va, va["outcomes"]),
      ranking_accuracy=rank_acc,
      ranking_pairs=rank_pairs,
    ),
    valid_by_pass={
      int(t): prm_metrics.calibration(
        p_va[va["t"] == t], va["outcomes"][va["t"] == t]
      )
      for t in np.unique(va["t"])
    },
    rollout_seconds=round(t_roll, 1),
    rollouts_reused=reused,
    seconds=round(time.time() - t0, 1),
  )
  save(out, cfg, prm_params)
  metrics.write_json(out / "prm_results.json", results)
  v = results["valid"]
  print(
    f"PRM on {v['num_drafts']} valid drafts: Brier {v['brier']:.4f} (base "
    f"rate {v['brier_base_rate']:.4f}), AUROC {v['auroc']}, ranking "
    f"accuracy {v['ranking_accuracy']} ({v['ranking_pairs']} pairs); kept step "
    f"{results['best_step']}/{cfg.steps}; wrote {out}",
    flush=True,
  )
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  evaluate.quiet_libraries()
  f = flags.FLAGS
  saved = json.loads((pathlib.Path(f.workdir) / "config.json").read_text())
  cfg = default_config()
  cfg.update(saved.get("prm", {}))  # the run's own prm settings
  from ml_collections import config_flags

  # Then the fields given on the command line.
  for k, v in config_flags.get_override_values(f["prm"]).items():
    cfg[k] = v
  run(f.workdir, cfg)


if __name__ == "__main__":
  from ml_collections import config_flags

  config_flags.DEFINE_config_dict("prm", default_config())
  flags.DEFINE_string("workdir", None, "A refiner training workdir.")
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
