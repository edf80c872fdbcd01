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
