"""Left-to-right baselines: a decoder-only causal language model.

One module serves `ar_nocot`, `ar_cot` and `ar_trajectory`; they differ only
in the view of the data they are trained on (`data_pipelines.views`: the
answer, the final draft, or all drafts joined by <sep>). The sequence is

    [question ; BOS ; target]      (causal self-attention over all of it)

with the question PAD-padded in place: padding keys are masked out and RoPE
positions count only real tokens, so a row is computed exactly as if it were
packed. The blocks, the mixed-precision policy, the segment embeddings and
the place-value embedding of digits are the refiner's (`layers`,
`refiner.place_index`), so a comparison differs only in how the solution is
written.

Decoding (`bottomup.generate`) prefills the key/value cache with the
question in one forward pass, then writes one token per step.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from bottomup.models import baseline, layers, transformer
from bottomup.models.refiner import BOS_ID, PAD_ID


@dataclasses.dataclass(frozen=True)
class CausalLMConfig(baseline.BaselineConfig):
  """Architecture (see `baseline.BaselineConfig`)."""


class CausalBlock(nn.Module):
  """Pre-norm block: causal self-attention + MLP, with a cached step."""

  cfg: transformer.StackConfig

  def setup(self):
    c = self.cfg
    cd = jnp.dtype(c.compute_dtype)
    self.attn_norm = layers.RMSNorm()
    self.attn = layers.Attention(c.num_heads, c.head_dim, cd)
    self.mlp_norm = layers.RMSNorm()
    self.mlp = layers.Mlp(c.mlp_dim, c.mlp_kind, cd)

  def __call__(self, x, mask, rope):
    """x [B, L, D]; mask [B, L, L]; rope tables -> (x, (keys, values))."""
    h = self.attn_norm(x)
    kv = self.attn.project_kv(h, rope)
    x = x + self.attn(h, mask, rope, kv=kv)
    x = x + self.mlp(self.mlp_norm(x))
    return layers.constrain(x), kv

  def step(self, x, rope, cache_kv, index, mask):
    """One token at cache slot `index`. x [B, 1, D]; mask [B, 1, S]."""
    h = self.attn_norm(x)
    k_new, v_new = self.attn.project_kv(h, rope)
    keys = jax.lax.dynamic_update_slice_in_dim(cache_kv[0], k_new, index, 1)
    values = jax.lax.dynamic_update_slice_in_dim(cache_kv[1], v_new, index, 1)
    x = x + self.attn(h, mask, rope, kv=(keys, values))
    x = x + self.mlp(self.mlp_norm(x))
    return x, (keys, values)


class CausalLM(nn.Module):
  """Decoder-only LM over [question; BOS; target]. See the module docstring."""

  cfg: CausalLMConfig

  def setup(self):
    c = self.cfg
    self.embed = baseline.SegmentEmbed(
      c.vocab_size, c.d_model, c.max_places, c.digit_ids
    )
    block = nn.remat(CausalBlock) if c.remat else CausalBlock
    self.blocks = [block(c.stack) for _ in range(c.depth)]
    self.final_norm = layers.RMSNorm()
    cd = jnp.dtype(c.compute_dtype)
    self.head = layers.Dense(c.vocab_size, ("embed", "vocab"), cd)

  def _stack(self, x, mask, positions):
    rope = layers.rope_tables(positions, self.cfg.stack.head_dim)
    kvs = []
    for block in self.blocks:
      x, kv = block(x, mask, rope)
      kvs.append(kv)
    return self.final_norm(x), kvs

  def __call__(self, question, drafts, num_drafts, latent=None, train=False):
    """Teacher-forced logits of the single target draft.

    Args:
      question: int32 [B, Lq].
      drafts: int32 [B, 1, Ld], the viewed target (+ EOS, PAD-padded).
      num_drafts: unused (the loss masks padding).
      latent: unused (a single written draft).
      train: unused (no noise).

    Returns:
      float32 logits [B, 1, Ld, V].
    """
    del num_drafts, latent, train
    if drafts.shape[1] != 1:
      raise ValueError(
        f"{type(self).__name__} writes one draft, got {drafts.shape[1]} "
        "(train it on a single-draft view: final, concat or answer)"
      )
    target = drafts[:, 0]
    b, lq = question.shape
    ld = target.shape[1]
    inputs = jnp.concatenate(
      [jnp.full_like(target[:, :1], BOS_ID), target[:, :-1]], axis=1
    )
    x = jnp.concatenate([self.embed(question, 0), self.embed(inputs, 1)], 1)
    valid = jnp.concatenate(
      [question != PAD_ID, jnp.ones((b, ld), bool)], axis=1
    )
    positions = jnp.cumsum(valid, axis=1) - 1
    causal = jnp.tril(jnp.ones((lq + ld, lq + ld), bool))
    mask = causal[None] & valid[:, None, :]
    h, _ = self._stack(layers.constrain(x), mask, positions)
    return self.head(h[:, lq:])[:, None]

  # -- Cached decoding (bottomup.generate) -----------------------------------

  def prefill(self, question, max_len: int):
    """Runs the question through the stack; returns the cache and lengths.

    Returns:
      (keys, values): per layer [B, Lq + max_len, H, K] with the question's
      at slots [0, Lq); and the number of real question tokens [B].
    """
    b, lq = question.shape
    valid = question != PAD_ID
    positions = jnp.cumsum(valid, axis=1) - 1
    causal = jnp.tril(jnp.ones((lq, lq), bool))
    mask = causal[None] & valid[:, None, :]
    _, kvs = self._stack(self.embed(question, 0), mask, positions)
    grow = lambda a: jnp.pad(a, ((0, 0), (0, max_len), (0, 0), (0, 0)))
    cache = (
      tuple(grow(k) for k, _ in kvs),
      tuple(grow(v) for _, v in kvs),
    )
    return cache, valid.sum(axis=1).astype(jnp.int32)

  def decode_step(self, token, j, run, cache, q_valid, q_len):
    """Target token j (BOS at j = 0) -> logits of token j + 1.

    Args:
      token: int32 [B].
      j: int32 [], its index in the target.
      run: int32 [B], digit-run length before `token`.
      cache: (keys, values) from `prefill` / earlier steps.
      q_valid: bool [B, Lq].
      q_len: int32 [B], real question tokens (the RoPE offset).

    Returns:
      (logits [B, V], cache, run).
    """
    c = self.cfg
    b, lq = q_valid.shape
    run = jnp.where(jnp.asarray(self.embed.is_digit)[token], run + 1, 0)
    x = self.embed.one(token, run, 1)[:, None]
    rope = layers.rope_tables((q_len + j)[:, None], c.stack.head_dim)
    slots = cache[0][0].shape[1]
    mask = jnp.concatenate(
      [q_valid, jnp.broadcast_to(jnp.arange(slots - lq) <= j, (b, slots - lq))],
      axis=1,
    )[:, None]
    keys, values = [], []
    for i, block in enumerate(self.blocks):
      x, (k, v) = block.step(x, rope, (cache[0][i], cache[1][i]), lq + j, mask)
      keys.append(k)
      values.append(v)
    logits = self.head(self.final_norm(x))[:, 0]
    return logits, (tuple(keys), tuple(values)), run
