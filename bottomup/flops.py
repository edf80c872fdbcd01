"""Matmul FLOPs of a jitted function, counted from its jaxpr.

Counts 2*M*N*K for every `dot_general` the function runs, recursing into
scans (times their length), loops' bodies (once: unknown trip count),
remat, custom-VJP and nested jit calls. With remat off, the count of a
train step is its model FLOPs (forward + backward); with remat on it also
counts the recomputation (hardware FLOPs).
"""

from __future__ import annotations

import math

import jax
from jax.extend import core as jex_core


def _dot_flops(eqn) -> int:
  lhs, rhs = (v.aval for v in eqn.invars[:2])
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  contract = math.prod(lhs.shape[d] for d in lc)
  batch = math.prod(lhs.shape[d] for d in lb)
  lhs_free = math.prod(
    s for d, s in enumerate(lhs.shape) if d not in lc and d not in lb
  )
  rhs_free = math.prod(
    s for d, s in enumerate(rhs.shape) if d not in rc and d not in rb
  )
  return 2 * batch * lhs_free * rhs_free * contract


def _sub_jaxprs(eqn):
  for v in eqn.params.values():
    for item in v if isinstance(v, (list, tuple)) else (v,):
      if isinstance(item, jex_core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jex_core.Jaxpr):
        yield item


def jaxpr_matmul_flops(jaxpr) -> int:
  """Matmul FLOPs of a (open) jaxpr."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
      continue
    mult = eqn.params.get("length", 1) if name == "scan" else 1
    if name == "custom_vjp_call":
      # Only the forward runs here; its backward appears where it is used.
      subs = [eqn.params["call_jaxpr"].jaxpr]
    else:
      subs = list(_sub_jaxprs(eqn))
      if name == "cond":
        subs = subs[:1]  # branches are alternatives: count one
    total += mult * sum(jaxpr_matmul_flops(j) for j in subs)
  return total


def matmul_flops(fn, *args, **kwargs) -> int:
  """Matmul FLOPs of one call of `fn(*args, **kwargs)`."""
  return jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)


def _count(tree) -> int:
  return sum(int(math.prod(x.shape)) for x in jax.tree.leaves(tree))


def _matmul_params(params) -> int:
  """Parameters used in matmuls: all but the embedding tables (lookups)."""
  return _count(params) - sum(
    _count(v) for k, v in params.items() if "embed" in k
  )


def sampling_flops(
  model_name: str,
  params,
  cfg,
  shapes,
  *,
  num_slots: int = 0,
  num_votes: int = 1,
  prm_params=None,
) -> float:
  """Matmul FLOPs to solve one problem, estimated as 2 x params x positions.

  What each network runs over, per problem:
    refiner  per pass (trained passes + extra passes): the encoder over the
             question, the previous draft and the slots; per sample, the
             decoder and output head over the draft. Guidance (w != 1) runs
             both conditioned and unconditioned; a PRM scores every sample;
             a beam multiplies all of it by its width.
    mdlm     the whole network over question + answer, once per denoising
             step (one per position by default).
    others   the whole network over question + answer once (KV cache).
  Attention scores (quadratic in the length) are left out: at these
  lengths they are a few percent of the total. Votes multiply everything.

  Args:
    model_name: config.model.name.
    params: the model's parameters (arrays or shape structs).
    cfg: the `sampling.SamplingConfig`.
    shapes: the data's `batching.Shapes`.
    num_slots: the refiner's carried slots.
    num_votes: self-consistency votes.
    prm_params: the PRM's parameters when it ranks the samples.
  """
  lq, ld = shapes.max_question_len, shapes.max_draft_len
  if model_name == "refiner":
    enc = _count(params["encoder"])
    dec = _count(params["decoder"]) + _count(params["head"])
    n = max(cfg.num_samples, 1)
    per_pass = 2 * enc * (lq + ld + num_slots) + n * 2 * dec * ld
    if cfg.guidance != 1.0:
      per_pass *= 2
    if prm_params is not None:
      per_pass += n * 2 * _matmul_params(prm_params) * (lq + ld)
    passes = cfg.trained_passes + cfg.extra_passes
    total = per_pass * passes * max(cfg.beam_width, 1)
  elif model_name == "mdlm":
    steps_ = cfg.diffusion_steps or ld
    total = 2 * _matmul_params(params) * (lq + ld) * steps_
  else:
    total = 2 * _matmul_params(params) * (lq + ld)
  return float(total * max(num_votes, 1))
