"""Shared building blocks: mixed-precision dense, RMSNorm, RoPE, attention, MLP.

Dtype policy: parameters are float32 (the master weights); matmul inputs are
cast to `compute_dtype` (bf16 by default) and accumulate in float32
(`preferred_element_type`). The backward matmuls are bf16 too, through a
custom VJP: letting autodiff differentiate a bf16 matmul keeps the weight
gradient's matmul in float32 and loses most of the speed-up. The residual
stream, norms and softmax stay float32.

Every parameter carries logical axis names (`nn.with_logical_partitioning`);
`bottomup.sharding` maps them to mesh axes. Shapes: B batch, L length,
S memory length, D model width, H heads, K head width, F MLP width.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype
_F32 = jnp.float32


def mp_matmul(x, w, compute_dtype):
  """x [..., K] @ w [K, ...] with inputs in `compute_dtype`, f32 accumulation.

  Forward and both backward matmuls run in `compute_dtype`.
  """
  return _mp_matmul_fn(jnp.dtype(compute_dtype).name)(x, w)


@functools.cache
def _mp_matmul_fn(dtype_name: str):
  cd = jnp.dtype(dtype_name)

  def contract(a, b, a_axes, b_axes):
    return jax.lax.dot_general(
      a.astype(cd),
      b.astype(cd),
      ((a_axes, b_axes), ((), ())),
      preferred_element_type=_F32,
    )

  @jax.custom_vjp
  def matmul(x, w):
    return contract(x, w, (x.ndim - 1,), (0,))

  def fwd(x, w):
    xc, wc = x.astype(cd), w.astype(cd)
    # Zero-size placeholders carry the primal dtypes through the residuals.
    return matmul(x, w), (
      xc,
      wc,
      jnp.zeros((0,), x.dtype),
      jnp.zeros((0,), w.dtype),
    )

  def bwd(res, g):
    xc, wc, x_like, w_like = res
    n_out = wc.ndim - 1
    # dx[..., k] = sum_n g[..., n] w[k, n]
    dx = contract(
      g, wc, tuple(range(g.ndim - n_out, g.ndim)), tuple(range(1, wc.ndim))
    )
    # dw[k, n] = sum over batch axes of x[..., k] g[..., n]
    batch = tuple(range(xc.ndim - 1))
    dw = contract(xc, g, batch, batch)
    return dx.astype(x_like.dtype), dw.astype(w_like.dtype)

  matmul.defvjp(fwd, bwd)
  return matmul


class Dense(nn.Module):
  """Dense layer over the last axis with the mixed-precision policy.

  Attributes:
    features: output shape (an int or a tuple, e.g. (heads, head_dim)).
    axes: logical names of the kernel, input axis first.
    compute_dtype: matmul input dtype; accumulation is always float32.
    use_bias: add a float32 bias.
  """

  features: int | Sequence[int]
  axes: tuple[str, ...]
  compute_dtype: Dtype = jnp.bfloat16
  use_bias: bool = False
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    feats = (
      (self.features,) if isinstance(self.features, int) else self.features
    )
    feats = tuple(feats)
    in_dim = x.shape[-1]
    init = self.kernel_init
    if len(feats) > 1:
      # Fan-in is `in_dim`, whatever the output shape.
      flat_init = self.kernel_init

      def init(key, shape, dtype=_F32):
        k = flat_init(key, (shape[0], math.prod(shape[1:])), dtype)
        return k.reshape(shape).astype(dtype)

    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(init, self.axes),
      (in_dim, *feats),
      _F32,
    )
    y = mp_matmul(x, kernel, self.compute_dtype)
    if self.use_bias:
      bias = self.param(
        "bias",
        nn.with_logical_partitioning(nn.initializers.zeros, self.axes[1:]),
        feats,
        _F32,
      )
      y = y + bias
    return y


class DenseIn(nn.Module):
  """Dense layer contracting the trailing `(heads, head_dim)` axes (out-proj)."""

  features: int
  axes: tuple[str, ...]
  compute_dtype: Dtype = jnp.bfloat16

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [..., H, K] -> [..., D]
    h, k = x.shape[-2:]
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(
        nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2), self.axes
      ),
      (h, k, self.features),
      _F32,
    )
    flat = x.reshape(*x.shape[:-2], h * k)
    return mp_matmul(
      flat, kernel.reshape(h * k, self.features), self.compute_dtype
    )


class RMSNorm(nn.Module):
  """Root-mean-square norm, computed in float32."""

  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param(
      "scale",
      nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
      (x.shape[-1],),
      _F32,
    )
    x = x.astype(_F32)
    var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(var + self.eps) * scale


class RopeTables(NamedTuple):
  """sin/cos of the rotary angles, [B, L, 1, K/2] each."""

  sin: jax.Array
  cos: jax.Array


def rope_tables(positions: jax.Array, head_dim: int, base: float = 10_000.0):
  """Rotary tables for positions [B, L]: compute once, use in every layer."""
  freqs = base ** (-jnp.arange(0, head_dim, 2, dtype=_F32) / head_dim)
  angles = positions[..., None].astype(_F32) * freqs  # [B, L, K/2]
  return RopeTables(jnp.sin(angles)[:, :, None], jnp.cos(angles)[:, :, None])


def rope(x: jax.Array, positions: jax.Array | RopeTables):
  """Rotary position embedding. x: [B, L, H, K]; positions [B, L] or tables."""
  t = positions
  if not isinstance(t, RopeTables):
    t = rope_tables(positions, x.shape[-1])
  x1, x2 = jnp.split(x.astype(_F32), 2, axis=-1)
  return jnp.concatenate([x1 * t.cos - x2 * t.sin, x2 * t.cos + x1 * t.sin], -1)


def attend(q, k, v, mask, compute_dtype):
  """Softmax attention. q [B,L,H,K], k/v [B,S,H,K], mask [B,L,S] or [B,1,S]."""
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum(
    "blhk,bshk->bhls",
    (q * scale).astype(compute_dtype),
    k.astype(compute_dtype),
    preferred_element_type=_F32,
  )
  logits = jnp.where(mask[:, None], logits, jnp.finfo(_F32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum(
    "bhls,bshk->blhk",
    probs.astype(compute_dtype),
    v.astype(compute_dtype),
    preferred_element_type=_F32,
  )


class Attention(nn.Module):
  """Multi-head attention; self-attention uses RoPE, cross-attention not.

  `kv` may be given precomputed (decoding: cross-attention keys/values are
  computed once per pass; self-attention keys/values come from the cache).
  """

  num_heads: int
  head_dim: int
  compute_dtype: Dtype = jnp.bfloat16

  def setup(self):
    hk = (self.num_heads, self.head_dim)
    kw = dict(compute_dtype=self.compute_dtype)
    self.query = Dense(hk, ("embed", "heads", "kv"), **kw)
    self.key = Dense(hk, ("embed", "heads", "kv"), **kw)
    self.value = Dense(hk, ("embed", "heads", "kv"), **kw)
    d = self.num_heads * self.head_dim
    self.out = DenseIn(d, ("heads", "kv", "embed"), **kw)

  def project_kv(self, x, positions=None):
    """Keys and values of `x` [B, S, D] (RoPE'd when positions are given)."""
    k, v = self.key(x), self.value(x)
    if positions is not None:
      k = rope(k, positions)
    return k, v

  def __call__(self, x, mask, positions=None, kv=None, memory=None):
    """x [B, L, D]; mask [B, L, S]; kv or memory gives the keys/values."""
    q = self.query(x)
    if positions is not None:
      q = rope(q, positions)
    if kv is None:
      src = x if memory is None else memory
      kv = self.project_kv(src, positions if memory is None else None)
    y = attend(q, *kv, mask, self.compute_dtype)
    return self.out(y)


# Plain MLP activations. On CPU the activation's elementwise cost rivals the
# matmuls at these widths: relu is several times cheaper than tanh-GELU.
_ACTIVATIONS = {
  "gelu": jax.nn.gelu,
  "relu": jax.nn.relu,
  "relu2": lambda x: jnp.square(jax.nn.relu(x)),
}


class Mlp(nn.Module):
  """SwiGLU or plain (GELU, ReLU, squared ReLU) MLP."""

  hidden: int
  kind: str = "swiglu"
  compute_dtype: Dtype = jnp.bfloat16

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    kw = dict(compute_dtype=self.compute_dtype)
    if self.kind == "swiglu":
      gate = Dense(self.hidden, ("embed", "mlp"), name="gate", **kw)(x)
      up = Dense(self.hidden, ("embed", "mlp"), name="up", **kw)(x)
      h = jax.nn.silu(gate) * up
    elif self.kind in _ACTIVATIONS:
      up = Dense(self.hidden, ("embed", "mlp"), name="up", **kw)(x)
      h = _ACTIVATIONS[self.kind](up)
    else:
      raise ValueError(
        f"unknown mlp kind {self.kind!r} (swiglu|{'|'.join(_ACTIVATIONS)})"
      )
    h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
    return Dense(d, ("mlp", "embed"), name="down", **kw)(h)


def constrain(x):
  """Logical sharding constraint for a [B, L, D] activation."""
  return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class Embed(nn.Module):
  """Embedding table lookup.

  Small tables are read with a one-hot matmul: its backward is a matmul too,
  while a gather's backward is a scatter-add, which XLA on CPU runs as a
  slow serial loop (it dominated the whole train step before this).

  Attributes:
    num_embeddings: rows of the table.
    features: width.
    axes: logical names of the table's axes.
    stddev: init scale.
    one_hot_max: largest table read through a one-hot matmul.
  """

  num_embeddings: int
  features: int
  axes: tuple[str | None, str | None]
  stddev: float = 1.0
  one_hot_max: int = 1024

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    table = self.param(
      "embedding",
      nn.with_logical_partitioning(
        nn.initializers.normal(self.stddev), self.axes
      ),
      (self.num_embeddings, self.features),
      _F32,
    )
    if self.num_embeddings <= self.one_hot_max:
      one_hot = jax.nn.one_hot(ids, self.num_embeddings, dtype=_F32)
      return jnp.dot(one_hot, table, preferred_element_type=_F32)
    return jnp.take(table, ids, axis=0)
