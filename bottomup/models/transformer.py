"""Transformer stacks: a bidirectional encoder and a causal decoder.

The decoder cross-attends to a memory (the encoder's states) and can run in
two ways with the same parameters: a full teacher-forced forward over a
whole sequence, and `step`, one token at a time with a key/value cache
(`DecodeCache`) and cross-attention keys/values computed once per pass
(`cross_kv`). Both operate on embeddings [B, L, D] and return hidden states;
token embeddings and the output head belong to the model that owns them.
"""

from __future__ import annotations

import dataclasses

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from bottomup.models import layers


@dataclasses.dataclass(frozen=True)
class StackConfig:
  """Sizes shared by the encoder and decoder stacks."""

  d_model: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  mlp_kind: str = "swiglu"
  compute_dtype: str = "bfloat16"


def stack_config(cfg) -> StackConfig:
  """The StackConfig of a model config with the usual size fields."""
  return StackConfig(
    d_model=cfg.d_model,
    num_heads=cfg.num_heads,
    head_dim=cfg.d_model // cfg.num_heads,
    mlp_dim=cfg.mlp_dim,
    mlp_kind=cfg.mlp_kind,
    compute_dtype=cfg.compute_dtype,
  )


class EncoderBlock(nn.Module):
  """Pre-norm block: bidirectional self-attention + MLP."""

  cfg: StackConfig

  @nn.compact
  def __call__(self, x, mask, positions):
    c = self.cfg
    cd = jnp.dtype(c.compute_dtype)
    h = layers.RMSNorm(name="attn_norm")(x)
    x = x + layers.Attention(c.num_heads, c.head_dim, cd, name="attn")(
      h, mask, positions
    )
    h = layers.RMSNorm(name="mlp_norm")(x)
    x = x + layers.Mlp(c.mlp_dim, c.mlp_kind, cd, name="mlp")(h)
    return layers.constrain(x)


class Encoder(nn.Module):
  """`num_layers` bidirectional blocks and a final norm."""

  cfg: StackConfig
  num_layers: int

  @nn.compact
  def __call__(self, x, valid, positions):
    """x [B, L, D]; valid [B, L] (False for padding); positions [B, L]."""
    mask = valid[:, None, :]  # every query sees every valid key
    positions = layers.rope_tables(positions, self.cfg.head_dim)
    for i in range(self.num_layers):
      x = EncoderBlock(self.cfg, name=f"block_{i}")(x, mask, positions)
    return layers.RMSNorm(name="final_norm")(x)


@flax.struct.dataclass
class DecodeCache:
  """Self-attention keys/values of the tokens written so far, per layer."""

  keys: tuple[jax.Array, ...]  # each [B, L, H, K]
  values: tuple[jax.Array, ...]


class DecoderBlock(nn.Module):
  """Pre-norm block: causal self-attention, cross-attention, MLP."""

  cfg: StackConfig

  def setup(self):
    c = self.cfg
    cd = jnp.dtype(c.compute_dtype)
    self.self_norm = layers.RMSNorm()
    self.self_attn = layers.Attention(c.num_heads, c.head_dim, cd)
    self.cross_norm = layers.RMSNorm()
    self.cross_attn = layers.Attention(c.num_heads, c.head_dim, cd)
    self.mlp_norm = layers.RMSNorm()
    self.mlp = layers.Mlp(c.mlp_dim, c.mlp_kind, cd)

  def __call__(self, x, positions, self_mask, memory, memory_mask):
    h = self.self_norm(x)
    x = x + self.self_attn(h, self_mask, positions)
    h = self.cross_norm(x)
    x = x + self.cross_attn(h, memory_mask, memory=memory)
    x = x + self.mlp(self.mlp_norm(x))
    return layers.constrain(x)

  def cross_kv(self, memory):
    return self.cross_attn.project_kv(memory)

  def step(self, x, pos, cache_kv, cross_kv, memory_mask):
    """One token. x [B, 1, D]; pos [] int; cache_kv ([B,L,H,K], [B,L,H,K])."""
    b = x.shape[0]
    positions = jnp.full((b, 1), pos, jnp.int32)
    h = self.self_norm(x)
    k_new, v_new = self.self_attn.project_kv(h, positions)
    keys = jax.lax.dynamic_update_slice_in_dim(cache_kv[0], k_new, pos, 1)
    values = jax.lax.dynamic_update_slice_in_dim(cache_kv[1], v_new, pos, 1)
    length = keys.shape[1]
    mask = jnp.broadcast_to(jnp.arange(length) <= pos, (b, 1, length))
    x = x + self.self_attn(h, mask, positions, kv=(keys, values))
    h = self.cross_norm(x)
    x = x + self.cross_attn(h, memory_mask, kv=cross_kv)
    x = x + self.mlp(self.mlp_norm(x))
    return x, (keys, values)


class Decoder(nn.Module):
  """`num_layers` causal blocks with cross-attention and a final norm."""

  cfg: StackConfig
  num_layers: int

  def setup(self):
    self.blocks = [DecoderBlock(self.cfg) for _ in range(self.num_layers)]
    self.final_norm = layers.RMSNorm()

  def __call__(self, x, memory, memory_mask):
    """Teacher-forced. x [B, L, D]; memory [B, S, D]; memory_mask [B, S]."""
    b, length = x.shape[:2]
    positions = jnp.broadcast_to(jnp.arange(length), (b, length))
    positions = layers.rope_tables(positions, self.cfg.head_dim)
    causal = jnp.tril(jnp.ones((length, length), bool))[None]
    mm = memory_mask[:, None, :]
    for block in self.blocks:
      x = block(x, positions, causal, memory, mm)
    return self.final_norm(x)

  def cross_kv(self, memory):
    """Cross-attention keys/values of every layer, computed once per pass."""
    return tuple(block.cross_kv(memory) for block in self.blocks)

  def init_cache(self, batch: int, length: int) -> DecodeCache:
    c = self.cfg
    shape = (batch, length, c.num_heads, c.head_dim)
    zeros = tuple(jnp.zeros(shape, jnp.float32) for _ in self.blocks)
    return DecodeCache(keys=zeros, values=zeros)

  def step(self, x, pos, cache: DecodeCache, cross_kv, memory_mask):
    """One token at position `pos`: x [B, 1, D] -> hidden [B, 1, D]."""
    mm = memory_mask[:, None, :]
    keys, values = [], []
    for i, block in enumerate(self.blocks):
      x, (k, v) = block.step(
        x, pos, (cache.keys[i], cache.values[i]), cross_kv[i], mm
      )
      keys.append(k)
      values.append(v)
    return self.final_norm(x), DecodeCache(tuple(keys), tuple(values))
