r"""Sampling throughput: KV-cache decoding vs recomputing the prefix.

    python -m benchmarks.sampling            # ~2 minutes on 2 CPU cores

Solves multiplication 4x4 problems (the generator's `valid` split, with a
char tokenizer trained on them) with `bottomup.sampling.refine`, greedy, at
the multiplication 4x4 model size (random initialization: timing only, the
drafts are nonsense and, lacking EOS, run to the full draft length, the
worst case for both paths). It prints:

  1. problems/s with the KV cache and with the full decoder prefix
     recomputed at every token (`kv_cache=False`), and the speedup, at
     draft lengths Ld = 20 (the 4x4 `scale` drafts) and longer (32, 64);
  2. the cost of an extra pass: the time with k passes forced on top of the
     trained T (`num_passes=T+k`) against T passes, per problem and pass,
     and how many passes the fixed-point mode (`extra_passes=k`) ran.

The no-cache path costs O(Ld^2) decoder tokens per pass, so the longer
draft lengths solve fewer problems (`--long_problems`).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np

from bottomup import sampling
from bottomup.models.refiner import Refiner, RefinerConfig
from data_pipelines import batching
from data_pipelines import tokenizer as tok_lib
from data_pipelines.tasks import get_task


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--num_problems", type=int, default=1000, help="at Ld=20")
  p.add_argument("--long_problems", type=int, default=128, help="at Ld > 20")
  p.add_argument("--batch_size", type=int, default=250)
  p.add_argument("--passes", type=int, default=4, help="trained passes T")
  p.add_argument("--draft_len", type=int, default=20, help="Ld of the task")
  p.add_argument("--long_draft_lens", type=int, nargs="*", default=[32, 64])
  p.add_argument("--extra_passes", type=int, default=2, help="k")
  p.add_argument(
    "--compute_dtype", default="float32", help="bf16 is slow on CPU"
  )
  p.add_argument("--d_model", type=int, default=128)
  p.add_argument("--encoder_layers", type=int, default=4)
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def load_questions(num: int, seed: int):
  """Tokenized 4x4 questions [num, Lq] and the tokenizer trained on them."""
  task = get_task("multiplication_4x4")
  trajs = list(task.generate("valid", num=num, seed=seed, scheme="scale"))
  tok = tok_lib.Tokenizer.train(
    [t.question for t in trajs] + [d for t in trajs for d in t.drafts]
  )
  ids = tok.encode_many([t.question for t in trajs])
  lq = max(map(len, ids))
  question = np.stack([batching.pad_row(q, lq)[0] for q in ids])
  return question, tok


def build_model(args, tok, lq: int):
  """The multiplication 4x4 model size, randomly initialized."""
  cfg = RefinerConfig(
    vocab_size=tok.vocab_size,
    d_model=args.d_model,
    num_heads=4,
    mlp_dim=4 * args.d_model,
    mlp_kind="gelu",
    num_encoder_layers=args.encoder_layers,
    num_decoder_layers=1,
    num_slots=8,
    digit_ids=tuple(int(i) for i in tok.digit_ids),
    compute_dtype=args.compute_dtype,
  )
  model = Refiner(cfg)
  # The parameters do not depend on the lengths used at init.
  question = jnp.zeros((1, lq), jnp.int32)
  drafts = jnp.zeros((1, args.passes, args.draft_len), jnp.int32)
  variables = model.init(
    {"params": jax.random.key(args.seed)}, question, drafts, jnp.ones((1,))
  )
  return model, flax.linen.meta.unbox(variables["params"])


def solve(model, params, question, cfg, batch_size, rng):
  """Solves the questions in equal batches, timed after a compiling run.

  Returns:
    (seconds, problems solved, passes run, mean final-draft length).
  """
  batches = [
    jnp.asarray(question[i : i + batch_size])
    for i in range(0, len(question), batch_size)
  ]
  if len(batches[-1]) != batch_size:  # one shape, one compilation
    batches = batches[:-1]
  jax.block_until_ready(
    sampling.refine(model, params, batches[0], cfg, rng).drafts
  )
  start = time.perf_counter()
  results = [sampling.refine(model, params, b, cfg, rng) for b in batches]
  jax.block_until_ready([r.drafts for r in results])
  seconds = time.perf_counter() - start
  final = np.concatenate([np.asarray(r.final) for r in results])
  length = float(np.mean(np.sum(final != tok_lib.PAD_ID, axis=-1)))
  run = max(int(r.num_passes_run) for r in results)
  return seconds, len(batches) * batch_size, run, length


def cache_rows(args, model, params, question, rng):
  """Step 1: problems/s with and without the KV cache at each Ld."""
  rows = []
  lens = [args.draft_len] + list(args.long_draft_lens)
  for ld in lens:
    num = args.num_problems if ld == args.draft_len else args.long_problems
    q = question[:num]
    bs = min(args.batch_size, len(q))
    cfg = sampling.SamplingConfig(max_draft_len=ld, trained_passes=args.passes)
    rates = []
    for kv_cache in (True, False):
      c = dataclasses.replace(cfg, kv_cache=kv_cache)
      sec, n, _, length = solve(model, params, q, c, bs, rng)
      rates.append(n / sec)
    rows.append((ld, n, length, *rates, rates[0] / rates[1]))
  return rows


def extra_pass_rows(args, model, params, question, rng):
  """Step 2: the time of T passes, T + k forced, and fixed-point mode."""
  cfg = sampling.SamplingConfig(
    max_draft_len=args.draft_len, trained_passes=args.passes
  )
  k = args.extra_passes
  modes = [
    (f"T = {args.passes}", cfg),
    (f"T + {k} forced", dataclasses.replace(cfg, num_passes=args.passes + k)),
    (f"T + fixed point (<= {k})", dataclasses.replace(cfg, extra_passes=k)),
  ]
  rows = []
  for name, c in modes:
    sec, n, run, _ = solve(model, params, question, c, args.batch_size, rng)
    rows.append((name, run, n / sec, 1e3 * sec / n))
  return rows


def main(argv=None):
  args = parse_args(argv)
  question, tok = load_questions(args.num_problems, args.seed)
  model, params = build_model(args, tok, question.shape[1])
  rng = jax.random.key(args.seed)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  print(
    f"multiplication_4x4 questions (Lq={question.shape[1]}, "
    f"vocab {tok.vocab_size}); model d={args.d_model}, "
    f"{args.encoder_layers}+1 layers, {n_params / 1e6:.2f}M params, "
    f"{args.compute_dtype}; T={args.passes} passes, greedy, "
    f"batch {args.batch_size}; {jax.devices()[0].platform}"
  )
  print(
    "\nKV cache vs the full prefix recomputed every token\n"
    f"{'Ld':>4} {'problems':>9} {'draft len':>10} {'cached p/s':>11} "
    f"{'no-cache p/s':>13} {'speedup':>8}"
  )
  for ld, n, length, cached, nocache, speedup in cache_rows(
    args, model, params, question, rng
  ):
    print(
      f"{ld:>4} {n:>9} {length:>10.1f} {cached:>11.1f} {nocache:>13.1f} "
      f"{speedup:>7.2f}x"
    )
  rows = extra_pass_rows(args, model, params, question, rng)
  print(
    f"\nExtra passes (Ld={args.draft_len}, KV cache)\n"
    f"{'mode':<26} {'passes run':>10} {'problems/s':>11} {'ms/problem':>11}"
  )
  for name, run, rate, ms in rows:
    print(f"{name:<26} {run:>10} {rate:>11.1f} {ms:>11.3f}")
  per_pass = (rows[1][3] - rows[0][3]) / args.extra_passes
  print(
    f"cost per extra pass: {per_pass:.3f} ms/problem "
    f"= {100 * per_pass / rows[0][3]:.0f}% of a {args.passes}-pass solve, "
    f"{100 * per_pass * args.passes / rows[0][3]:.0f}% of its average pass"
  )


if __name__ == "__main__":
  main()
