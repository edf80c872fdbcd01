"""The training loop: `train_and_evaluate(config, workdir)`.

1. Data: task, tokenizer (saved in the workdir) and padded shapes.
2. Mesh, then the abstract train state (`jax.eval_shape`), its shardings from
   the parameters' logical axis names, then a jitted init that allocates the
   state already sharded.
3. Restore the latest checkpoint (state + data position) if there is one,
   so rerunning the same command resumes exactly where the run stopped.
4. The step loop: place the host batch on the mesh, take a jitted,
   state-donating train step; log, check for NaN/Inf, checkpoint on the
   interval and on SIGTERM, and evaluate on the valid split periodically.
5. Final evaluation on `eval.final_split` through the sampler, written to
   `eval_results.json`, with one coarse-to-fine trajectory printed.
"""

from __future__ import annotations

import math
import pathlib
import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from bottomup import (
  checkpoint,
  datasets,
  evaluate,
  metrics,
  optim,
  sharding,
  steps,
)
from bottomup.models import get_model
from bottomup.train_state import TrainState


class NonFiniteLossError(FloatingPointError):
  """The loss or gradient became NaN/Inf; nothing bad was checkpointed."""


def latent_mask(config, step: int, num_passes: int) -> np.ndarray:
  """Which passes are latent at `step` (the curriculum of DESIGN §2)."""
  k = config.model.latent_passes
  every = config.train.latent_curriculum_steps
  if every > 0:
    k = min(k, step // every)
  k = min(k, num_passes - 1)  # the last pass always writes the answer
  return np.arange(num_passes) < k


def pass_weights(config, num_passes: int) -> np.ndarray:
  w = tuple(config.train.pass_weights) or (1.0,) * num_passes
  if len(w) < num_passes:
    raise ValueError(f"train.pass_weights needs {num_passes} entries: {w}")
  return np.asarray(w[:num_passes], np.float32)


def dummy_batch(shapes, batch: int = 1) -> dict[str, np.ndarray]:
  return {
    "question": np.zeros((batch, shapes.max_question_len), np.int32),
    "drafts": np.zeros(
      (batch, shapes.max_drafts, shapes.max_draft_len), np.int32
    ),
    "num_drafts": np.ones((batch,), np.int32),
  }


def make_state_factory(config, model, shapes):
  """An init function (rng -> boxed TrainState) and its optimizer."""
  tx = optim.make_optimizer(config.optim, config.train.num_steps)
  batch = dummy_batch(shapes)

  def init_boxed(rng):
    params_rng, state_rng = jax.random.split(rng)
    variables = model.init(
      {"params": params_rng},
      batch["question"],
      batch["drafts"],
      batch["num_drafts"],
    )
    return TrainState.create(variables["params"], tx, state_rng)

  return init_boxed


def init_state(config, model, shapes, mesh):
  """The sharded train state and its shardings (shapes -> specs -> alloc)."""
  init_boxed = make_state_factory(config, model, shapes)
  rng = jax.random.key(config.seed)
  abstract_boxed = jax.eval_shape(init_boxed, rng)
  state_sharding = sharding.logical_shardings(abstract_boxed, mesh, config.mesh)
  init = jax.jit(
    lambda r: nn.meta.unbox(init_boxed(r)), out_shardings=state_sharding
  )
  return init, rng, state_sharding


def num_params(params) -> int:
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))


def _check_finite(m: dict, step: int, ckpt_step, ckpt) -> None:
  loss, gnorm = float(m["loss"]), float(m["grad_norm"])
  if not (math.isfinite(loss) and math.isfinite(gnorm)):
    # The last good step may still be saving in the background: let it
    # finish, or the checkpoint the message names would never exist.
    ckpt.wait_until_finished()
    raise NonFiniteLossError(
      f"loss={loss} grad_norm={gnorm} at step {step}: stopping without "
      f"checkpointing this state (last checkpoint: step {ckpt_step}). "
      "Lower optim.learning_rate or check the data."
    )


def compile_train_step(
  config, model, weights, mesh, state, state_sharding, shapes
):
  """The train step jitted with explicit shardings, compiled ahead of time.

  (state, batch, latent) -> (state, metrics): the state keeps its
  shardings and is donated; batches are split over (data, fsdp); the
  latent mask and the metrics are replicated.
  """
  b = config.train.batch_size
  batch_sh = sharding.batch_sharding(mesh)
  repl = sharding.replicated(mesh)
  jitted = jax.jit(
    steps.make_train_step(model, weights),
    in_shardings=(state_sharding, batch_sh, repl),
    out_shardings=(state_sharding, repl),
    donate_argnums=0,
  )
  batch = {
    k: jax.ShapeDtypeStruct((b, *v.shape[1:]), v.dtype, sharding=batch_sh)
    for k, v in dummy_batch(shapes).items()
  }
  latent = np.zeros((shapes.max_drafts,), bool)
  return jitted.lower(state, batch, latent).compile()


def state_bytes_per_device(state) -> int:
  """Bytes of one device's shards of a (sharded) train state."""
  total = 0
  for leaf in jax.tree.leaves(state):
    if hasattr(leaf, "sharding") and hasattr(leaf, "shape"):
      shard = leaf.sharding.shard_shape(leaf.shape)
      total += math.prod(shard) * leaf.dtype.itemsize
  return total


def memory_report(compiled, state, mesh) -> str:
  """Per-device memory of the train state and of the compiled step."""
  mib = lambda x: f"{x / 2**20:.3f} MiB"
  params = state_bytes_per_device(state.params)
  opt = state_bytes_per_device(state.opt_state)
  line = (
    f"memory per device (mesh {dict(mesh.shape)}): params {mib(params)}, "
    f"optimizer state {mib(opt)}"
  )
  analysis = compiled.memory_analysis()
  if analysis is not None:
    line += (
      f"; compiled step: arguments {mib(analysis.argument_size_in_bytes)}, "
      f"outputs {mib(analysis.output_size_in_bytes)}, "
      f"temporaries {mib(analysis.temp_size_in_bytes)}"
    )
  return line


def stop_requested(guard) -> bool:
  """Whether any process got SIGTERM (all processes agree on the answer).

  Saving is a collective, so on a multi-host job every process must decide
  to save at the same step: the flags are gathered every step (one tiny
  all-gather; a single process just reads its own).
  """
  if jax.process_count() == 1:
    return guard.requested
  flags = multihost_utils.process_allgather(np.asarray(guard.requested))
  return bool(np.any(flags))


def restore_params(workdir, abstract_state):
  """The parameters of the latest checkpoint of a training workdir."""
  ckpt = checkpoint.Checkpointer(
    pathlib.Path(workdir) / "checkpoints",
    save_interval_steps=1,
    max_to_keep=1,
    read_only=True,
  )
  step = ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
  state, _ = ckpt.restore(step, abstract_state)
  ckpt.close()
  return state.params


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  train_trajs=None,
  init_from=None,
):
  """Trains, checkpoints and evaluates; returns the final eval results.

  Args:
    config: an experiment config (see experiments/base.py).
    workdir: where checkpoints, metrics, config.json and eval_results.json
      go. Rerunning with the same workdir resumes from the last checkpoint.
    train_trajs: train on these (viewed) trajectories, in epochs, instead
      of the task's training data (the bootstrap rounds' fine-tuning sets).
    init_from: a training workdir whose latest parameters start this run
      (fresh optimizer, step 0) when this workdir has no checkpoint yet.

  Returns:
    The final evaluation dict (also written to WORKDIR/eval_results.json),
    or None when the run stopped early on SIGTERM after saving.
  """
  t_start = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  if is_main:
    metrics.write_json(workdir / "config.json", config.to_dict())

  # 1. Data.
  data = datasets.build(config, workdir)
  shapes = data.shapes
  model = get_model(
    config.model, data.tokenizer.vocab_size, data.tokenizer.digit_ids
  )
  weights = pass_weights(config, shapes.max_drafts)

  # 2. Mesh and sharded state.
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config.mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    init, rng, state_sharding = init_state(config, model, shapes, mesh)
    ckpt = checkpoint.Checkpointer(
      workdir / "checkpoints",
      save_interval_steps=config.train.checkpoint_every,
      max_to_keep=config.train.keep_checkpoints,
      async_save=config.train.async_checkpoint,
    )
    # 3. Restore or start.
    latest = ckpt.latest_step()
    if latest is not None:
      abstract = checkpoint.abstract_like(
        jax.eval_shape(init, rng), state_sharding
      )
      state, data_state = ckpt.restore(latest, abstract)
      start = int(data_state["step"])
      logging.info("resumed from step %d", latest)
      print(f"Resuming from checkpoint step {latest}.", flush=True)
    else:
      state = init(rng)
      start = 0
      if init_from is not None:
        abstract = checkpoint.abstract_like(
          jax.eval_shape(init, rng), state_sharding
        )
        state = state.replace(params=restore_params(init_from, abstract))
        print(f"Starting from the parameters of {init_from}.", flush=True)
    stream = data.train_stream(
      config.train.batch_size, start_step=start, trajs=train_trajs
    )
    n_params = num_params(state.params)
    print(
      f"{config.model.name}: {n_params:,} params; task {data.task.name} "
      f"({data.scheme}); shapes {shapes}; mesh {dict(mesh.shape)}",
      flush=True,
    )
    train_step = compile_train_step(
      config, model, weights, mesh, state, state_sharding, shapes
    )
    if is_main:
      print(memory_report(train_step, state, mesh), flush=True)
    evaluator = evaluate.Evaluator(config, data, model, mesh)
    writer = metrics.MetricWriter(workdir, tensorboard=config.train.tensorboard)
    bar = metrics.ProgressBar(
      config.train.num_steps,
      start_step=start,
      enabled=is_main and config.train.progress_bar,
    )
    if start == 0:
      writer.write_hparams(config.to_dict() | {"num_params": n_params})

    # 4. The step loop.
    train_time, t0 = 0.0, time.time()
    rate_step, rate_t = start, time.time()  # for steps/s between logs
    last_saved = latest
    m = None
    with checkpoint.PreemptionGuard() as guard:
      for step in range(start + 1, config.train.num_steps + 1):
        batch = sharding.put_batch(next(stream), mesh)
        latent = latent_mask(config, step, shapes.max_drafts)
        state, m = train_step(state, batch, latent)
        if step % config.train.log_every == 0 or step == config.train.num_steps:
          m = jax.device_get(m)
          _check_finite(m, step, last_saved, ckpt)
          scalars = steps.summarize(m)
          now = time.time()
          scalars["steps_per_s"] = (step - rate_step) / (now - rate_t)
          rate_step, rate_t = step, now
          writer.write_scalars(step, scalars)
          bar.update(step, {"loss": scalars["loss"]})
        stop = stop_requested(guard)
        if ckpt.should_save(step) or stop:
          _check_finite(jax.device_get(m), step, last_saved, ckpt)
          if ckpt.save(step, state, stream.get_state(), force=stop):
            last_saved = step
        if stop:
          ckpt.wait_until_finished()
          ckpt.close()
          print(f"SIGTERM: saved step {step}; rerun to resume.", flush=True)
          return None
        if (
          step % config.eval.every_steps == 0 and step < config.train.num_steps
        ):
          train_time += time.time() - t0
          valid = evaluator.run(state.params, "valid", config.eval.num_examples)
          writer.write_scalars(
            step,
            {
              f"valid/{k}": v
              for k, v in valid.items()
              if isinstance(v, (int, float))
            },
          )
          print(
            f"step {step}: valid accuracy {valid['accuracy']:.4f}", flush=True
          )
          t0 = rate_t = time.time()
      bar.close()
      train_time += time.time() - t0
      final_step = config.train.num_steps
      if last_saved != final_step:
        ckpt.save(final_step, state, stream.get_state(), force=True)
      ckpt.wait_until_finished()

    # 5. Final evaluation.
    t_eval = time.time()
    results = evaluator.run(
      state.params,
      config.eval.final_split,
      config.eval.final_num_examples,
      show=config.eval.show_trajectories,
    )
  results.update(
    step=final_step,
    num_params=n_params,
    task=data.task.name,
    scheme=data.scheme,
    model=config.model.name,
  )
  # Timings differ between a resumed and an uninterrupted run, so they go
  # to their own file: eval_results.json depends on the computation only.
  timing = dict(
    train_seconds_this_run=round(train_time, 1),
    eval_seconds=round(time.time() - t_eval, 1),
    eval_problems_per_second=results.pop("problems_per_second"),
    wall_seconds_this_run=round(time.time() - t_start, 1),
    resumed_from=latest,
  )
  writer.write_scalars(
    final_step,
    {f"{config.eval.final_split}/accuracy": results["accuracy"]},
  )
  writer.close()
  ckpt.close()
  if is_main:
    metrics.write_json(workdir / "eval_results.json", results)
    metrics.write_json(workdir / "timing.json", timing)
  evaluator.report(results, timing)
  return results
