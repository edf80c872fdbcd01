"""Training throughput and model-FLOPs utilization of a config.

    python benchmarks/train_throughput.py \
        [--config=experiments/multiplication.py:cpu] [--steps=20] \
        [--config.model.remat=False ...] [--output=FILE.json]

Measures, in one run: the dense-matmul peak of this machine (float32, and
bf16 inputs accumulated in float32), then the train step of the config with
float32 compute and with bf16 compute (float32 accumulation, bf16 backward
matmuls). Model FLOPs are the matmul FLOPs of one train step, counted from
its jaxpr (`bottomup.flops`); MFU is achieved model FLOP/s over the float32
peak (and over the bf16 peak for the bf16 row).
"""

from __future__ import annotations

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
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per dtype.")
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


def time_train_step(config, compute_dtype: str, num_steps: int) -> dict:
  """Steps/s, tokens/s and matmul FLOPs of the config's train step."""
  with config.unlocked():
    config.model.compute_dtype = compute_dtype
  with tempfile.TemporaryDirectory() as workdir:
    data = datasets.build(config, workdir)
  model = get_model(
    config.model, data.tokenizer.vocab_size, data.tokenizer.digit_ids
  )
  mesh = sharding.make_mesh(config.mesh)
  with jax.set_mesh(mesh):
    init, rng, state_sharding = train.init_state(
      config, model, data.shapes, mesh
    )
    state = init(rng)
    n_params = train.num_params(state.params)
    weights = train.pass_weights(config, data.shapes.max_drafts)
    latent = np.zeros((data.shapes.max_drafts,), bool)
    stream = data.train_stream(config.train.batch_size)
    host_batches = [next(stream) for _ in range(4)]
    model_flops = flops.matmul_flops(
      steps.make_train_step(model, weights), state, host_batches[0], latent
    )
    # The trainer's own step: explicit shardings, state donated, compiled
    # ahead of time (what `train_and_evaluate` runs).
    t0 = time.perf_counter()
    train_step = train.compile_train_step(
      config, model, weights, mesh, state, state_sharding, data.shapes
    )
    compile_s = time.perf_counter() - t0
    batches = [sharding.put_batch(b, mesh) for b in host_batches]
    for i in range(2):  # warm-up
      state, m = train_step(state, batches[i], latent)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(num_steps):
      state, m = train_step(state, batches[i % len(batches)], latent)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t0) / num_steps
  b = host_batches[0]["drafts"]
  target_tokens = int((b != 0).sum())
  return dict(
    dtype=compute_dtype,
    params=n_params,
    step_s=dt,
    tokens_per_s=target_tokens / dt,
    examples_per_s=b.shape[0] / dt,
    model_gflop_per_step=model_flops / 1e9,
    model_gflops=model_flops / dt / 1e9,
    compile_s=compile_s,
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  print(f"devices: {jax.devices()}")
  peak32 = matmul_peak(_PEAK_N.value, jnp.float32)
  peak16 = matmul_peak(_PEAK_N.value, jnp.bfloat16)
  print(
    f"matmul peak ({_PEAK_N.value}^3): float32 {peak32:.1f} GFLOP/s, "
    f"bf16->f32 {peak16:.1f} GFLOP/s"
  )
  bad = set(_DTYPES.value) - {"float32", "bfloat16"}
  if bad:
    raise app.UsageError(f"--dtypes: unknown {sorted(bad)}")
  rows = [time_train_step(config, d, _STEPS.value) for d in _DTYPES.value]
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
        rows=rows,
        bf16_speedup=speedup,
      ),
    )
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
