"""Training throughput and model-FLOPs utilization of a config.

    python benchmarks/train_throughput.py \
        [--config=experiments/multiplication.py:cpu] [--steps=10] \
        [--rounds=3] [--dtypes=float32,bfloat16] \
        [--config.model.remat=False ...] [--output=FILE.json]

Measures, in one run: the dense-matmul peak of this machine (float32, and
bf16 inputs accumulated in float32), and the trainer's own compiled train
step of the config with float32 compute and with bf16 compute (float32
accumulation, bf16 backward matmuls); rounds alternate them, and the
medians over rounds are reported (a shared VM's speed drifts). Model FLOPs
are the matmul FLOPs of one train step, counted from its jaxpr
(`bottomup.flops`); MFU is achieved model FLOP/s over the float32 peak (and
over the bf16 peak for the bf16 row).
"""

from __future__ import annotations

import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from bottomup import datasets, flops, metrics, sharding, steps, train
from bottomup.models import get_model

_CONFIG = config_flags.DEFINE_config_file(
  "config", "experiments/multiplication.py:cpu", "Experiment file."
)
_STEPS = flags.DEFINE_integer(
  "steps", 10, "Timed steps per dtype in each round."
)
_ROUNDS = flags.DEFINE_integer(
  "rounds", 3, "Rounds of (peak, each dtype); medians are reported."
)
_PEAK_N = flags.DEFINE_integer("peak_n", 1536, "Matmul size for the peak.")
_DTYPES = flags.DEFINE_list(
  "dtypes",
  ["float32", "bfloat16"],
  "Compute dtypes to time, in this order (the speedup needs both).",
)
_OUTPUT = flags.DEFINE_string(
  "output", "", "Also write the figures as JSON here (launch.reproduce)."
)


def matmul_peak(n: int, dtype, reps: int = 10) -> float:
  """GFLOP/s of an n x n x n matmul with inputs in `dtype`, f32 accumulate."""
  a = jnp.ones((n, n), dtype)
  b = jnp.ones((n, n), dtype)
  f = jax.jit(
    lambda a, b: jax.lax.dot(a, b, preferred_element_type=jnp.float32)
  )
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best / 1e9


class StepTimer:
  """The trainer's compiled train step for one compute dtype, ready to time.

  It is the step `train_and_evaluate` runs: explicit shardings, the state
  donated, compiled ahead of time (`train.compile_train_step`).
  """

  def __init__(self, config, compute_dtype: str):
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.model.compute_dtype = compute_dtype
    self.dtype = compute_dtype
    with tempfile.TemporaryDirectory() as workdir:
      data = datasets.build(config, workdir)
    model = get_model(
      config.model, data.tokenizer.vocab_size, data.tokenizer.digit_ids
    )
    self.mesh = sharding.make_mesh(config.mesh)
    with jax.set_mesh(self.mesh):
      init, rng, state_sharding = train.init_state(
        config, model, data.shapes, self.mesh
      )
      self.state = init(rng)
      self.params = train.num_params(self.state.params)
      weights = train.pass_weights(config, data.shapes.max_drafts)
      self.latent = np.zeros((data.shapes.max_drafts,), bool)
      stream = data.train_stream(config.train.batch_size)
      host = [next(stream) for _ in range(4)]
      self.model_flops = flops.matmul_flops(
        steps.make_train_step(model, weights), self.state, host[0], self.latent
      )
      t0 = time.perf_counter()
      self.step = train.compile_train_step(
        config,
        model,
        weights,
        self.mesh,
        self.state,
        state_sharding,
        data.shapes,
      )
      self.compile_s = time.perf_counter() - t0
      self.batches = [sharding.put_batch(b, self.mesh) for b in host]
    drafts = host[0]["drafts"]
    self.target_tokens = int((drafts != 0).sum())
    self.examples = drafts.shape[0]
    self.seconds_per_step(2)  # warm-up

  def seconds_per_step(self, num_steps: int) -> float:
    """Mean wall seconds of `num_steps` steps (the state carries on)."""
    with jax.set_mesh(self.mesh):
      t0 = time.perf_counter()
      for i in range(num_steps):
        self.state, m = self.step(
          self.state, self.batches[i % len(self.batches)], self.latent
        )
      jax.block_until_ready(m)
    return (time.perf_counter() - t0) / num_steps

  def row(self, step_s: float, rounds: list[float]) -> dict:
    return dict(
      dtype=self.dtype,
      params=self.params,
      step_s=step_s,
      step_s_rounds=rounds,
      tokens_per_s=self.target_tokens / step_s,
      examples_per_s=self.examples / step_s,
      model_gflop_per_step=self.model_flops / 1e9,
      model_gflops=self.model_flops / step_s / 1e9,
      compile_s=self.compile_s,
    )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  print(f"devices: {jax.devices()}")
  bad = set(_DTYPES.value) - {"float32", "bfloat16"}
  if bad:
    raise app.UsageError(f"--dtypes: unknown {sorted(bad)}")
  timers = [StepTimer(config, d) for d in _DTYPES.value]
  # Rounds alternate the dtypes and re-measure the peak, so that a slow
  # spell of the machine (a shared VM varies by tens of percent from one
  # minute to the next) hits every figure alike; medians are reported.
  peaks32, peaks16 = [], []
  times = {t.dtype: [] for t in timers}
  for r in range(_ROUNDS.value):
    peaks32.append(matmul_peak(_PEAK_N.value, jnp.float32))
    peaks16.append(matmul_peak(_PEAK_N.value, jnp.bfloat16))
    for t in timers:
      times[t.dtype].append(t.seconds_per_step(_STEPS.value))
    print(
      f"round {r + 1}/{_ROUNDS.value}: peak f32 {peaks32[-1]:.0f} / bf16 "
      f"{peaks16[-1]:.0f} GFLOP/s; step s "
      + ", ".join(f"{d} {v[-1]:.3f}" for d, v in times.items()),
      flush=True,
    )
  peak32 = statistics.median(peaks32)
  peak16 = statistics.median(peaks16)
  print(
    f"matmul peak ({_PEAK_N.value}^3, median of {_ROUNDS.value}): float32 "
    f"{peak32:.1f} GFLOP/s, bf16->f32 {peak16:.1f} GFLOP/s"
  )
  rows = [
    t.row(statistics.median(times[t.dtype]), times[t.dtype]) for t in timers
  ]
  print(
    f"\nconfig: {config.data.task} d={config.model.d_model} "
    f"enc={config.model.num_encoder_layers} "
    f"dec={config.model.num_decoder_layers} batch={config.train.batch_size}"
    f" remat={config.model.remat}"
  )
  print(
    f"{'dtype':9} {'params':>9} {'step s':>7} {'tok/s':>9} {'ex/s':>7} "
    f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'MFU/f32':>8} {'MFU/own':>8}"
  )
  for r in rows:
    own = peak32 if r["dtype"] == "float32" else peak16
    print(
      f"{r['dtype']:9} {r['params']:>9,} {r['step_s']:7.3f} "
      f"{r['tokens_per_s']:9.0f} {r['examples_per_s']:7.1f} "
      f"{r['model_gflop_per_step']:10.2f} {r['model_gflops']:8.1f} "
      f"{r['model_gflops'] / peak32:8.1%} {r['model_gflops'] / own:8.1%}"
    )
  by_dtype = {r["dtype"]: r for r in rows}
  speedup = None
  if len(by_dtype) == 2:
    speedup = (
      by_dtype["bfloat16"]["tokens_per_s"] / by_dtype["float32"]["tokens_per_s"]
    )
    print(f"\nbf16 / float32 tokens/s: {speedup:.2f}x")
  if _OUTPUT.value:
    for r in rows:
      r["mfu_f32_peak"] = r["model_gflops"] / peak32
      r["mfu_own_peak"] = r["model_gflops"] / (
        peak32 if r["dtype"] == "float32" else peak16
      )
    metrics.write_json(
      _OUTPUT.value,
      dict(
        config=f"{config.data.task} {config.model.name}",
        peak_gflops_f32=peak32,
        peak_gflops_bf16=peak16,
        peak_gflops_f32_rounds=peaks32,
        peak_gflops_bf16_rounds=peaks16,
        rows=rows,
        bf16_speedup=speedup,
      ),
    )
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
