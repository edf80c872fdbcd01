"""Token-level decoding of one written pass (used by `bottomup.sampling`).

`decode` writes n drafts per row of a pass's encoder memory with a
`lax.while_loop` over a `DecodeState`: one token per step through the
decoder's KV cache (cross-attention keys/values projected once per pass),
or, as the reference path (`kv_cache=False`), recomputing the decoder over
the whole prefix. `next_token` is the token policy: greedy, temperature,
top-k, top-p. With classifier-free guidance the decoder runs with and
without the question, each with its own cache, and samples from
l_uncond + w * (l_cond - l_uncond).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import flax
import jax
import jax.numpy as jnp

from bottomup.models.refiner import BOS_ID, EOS_ID, PAD_ID
from bottomup.models.transformer import DecodeCache

if TYPE_CHECKING:
  from bottomup.sampling import SamplingConfig


# -- Token policy --------------------------------------------------------------


def next_token(
  logits: jax.Array,
  key: jax.Array,
  cfg: SamplingConfig,
  forbid: tuple[int, ...] = (PAD_ID, BOS_ID),
):
  """Samples one token per row from logits [B, V] -> int32 [B].

  `forbid` are never written: by default PAD (it only pads after EOS) and
  BOS (masked diffusion writes PAD and forbids only BOS).
  """
  neg = jnp.finfo(logits.dtype).min
  logits = logits.at[:, jnp.array(forbid)].set(neg)
  if cfg.temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / cfg.temperature
  if cfg.top_k:
    kth = jax.lax.top_k(logits, cfg.top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, neg, logits)
  if cfg.top_p < 1:
    desc = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(desc, axis=-1)
    # Keep a token while the mass before it is below top_p (so >= 1 token).
    keep = jnp.cumsum(probs, axis=-1) - probs < cfg.top_p
    cutoff = jnp.min(jnp.where(keep, desc, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, neg, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


# -- One written pass: decoding ------------------------------------------------


@flax.struct.dataclass
class DecodeState:
  """The decoder's loop state while it writes one draft per row."""

  tokens: jax.Array  # int32 [B, Ld], PAD where nothing is written yet
  token: jax.Array  # int32 [B], the last token written (BOS at the start)
  cache: DecodeCache | None  # self-attention keys/values (None: no cache)
  pos: jax.Array  # int32 [], the position written next
  run: jax.Array  # int32 [B], digit-run length up to `token` (place embed)
  done: jax.Array  # bool [B], EOS written
  logprob: jax.Array  # float32 [B], log-likelihood of the tokens written

  @classmethod
  def make(cls, batch: int, length: int, cache: DecodeCache | None = None):
    return cls(
      tokens=jnp.full((batch, length), PAD_ID, jnp.int32),
      token=jnp.full((batch,), BOS_ID, jnp.int32),
      cache=cache,
      pos=jnp.zeros((), jnp.int32),
      run=jnp.zeros((batch,), jnp.int32),
      done=jnp.zeros((batch,), bool),
      logprob=jnp.zeros((batch,), jnp.float32),
    )


def write_loop(step_logits, state: DecodeState, cfg, key) -> DecodeState:
  """Writes one token per row per step until every row has written EOS.

  Args:
    step_logits: DecodeState -> (logits [B, V], cache, run) of the token at
      `state.pos`.
    state: the initial DecodeState.
    cfg: the SamplingConfig (token policy; the length is `state.tokens`').
    key: PRNG key (folded with the position at every step).

  Returns:
    The final DecodeState.
  """
  length = state.tokens.shape[1]

  def body(s: DecodeState) -> DecodeState:
    logits, cache, run = step_logits(s)
    tok = next_token(logits, jax.random.fold_in(key, s.pos), cfg)
    tok = jnp.where(s.done, PAD_ID, tok)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    logp = jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]
    return s.replace(
      tokens=jax.lax.dynamic_update_index_in_dim(s.tokens, tok, s.pos, 1),
      token=tok,
      cache=cache,
      pos=s.pos + 1,
      run=run,
      done=s.done | (tok == EOS_ID),
      logprob=s.logprob + jnp.where(s.done, 0.0, logp),
    )

  def cond(s: DecodeState):
    return (s.pos < length) & ~jnp.all(s.done)

  return jax.lax.while_loop(cond, body, state)


def decode(
  model, params, memory, memory_mask, cfg, key, num_samples=1, uncond=None
):
  """Writes `num_samples` drafts per row of the memory (steps 2 and 4).

  Args:
    model: the Refiner.
    params: its parameters.
    memory: [B, S, D] encoder states of the pass.
    memory_mask: bool [B, S].
    cfg: the SamplingConfig.
    key: PRNG key of the pass.
    num_samples: n; the rows of the result are question-major.
    uncond: (memory, mask) of the pass run without the question, for
      classifier-free guidance (`cfg.guidance`); its decoder keeps its own
      KV cache.

  Returns:
    The final DecodeState over B * n rows.
  """
  apply = functools.partial(model.apply, {"params": params})
  length = cfg.max_draft_len
  tile = lambda x: jnp.repeat(x, num_samples, axis=0)
  batch = memory.shape[0] * num_samples
  mask = tile(memory_mask)
  if cfg.kv_cache:
    # Projected once per pass, at B rows, then shared by the n samples.
    cross = jax.tree.map(tile, apply(memory, method="cross_kv"))
    cache = apply(batch, length, method="init_cache")
    if uncond is not None:
      cross_u = jax.tree.map(tile, apply(uncond[0], method="cross_kv"))
      mask_u = tile(uncond[1])
      cache = (cache, apply(batch, length, method="init_cache"))
  else:
    memory, cache = tile(memory), None

  def step_logits(s: DecodeState):
    if uncond is not None:
      step = lambda c, kv, m: apply(
        s.token, s.pos, s.run, c, kv, m, method="decode_step"
      )
      l_c, cache_c, run = step(s.cache[0], cross, mask)
      l_u, cache_u, _ = step(s.cache[1], cross_u, mask_u)
      return l_u + cfg.guidance * (l_c - l_u), (cache_c, cache_u), run
    if cfg.kv_cache:
      return apply(
        s.token, s.pos, s.run, s.cache, cross, mask, method="decode_step"
      )
    # Reference path: the full teacher-forced forward over what is written.
    logits = apply(s.tokens, memory, mask, method="decode_logits")
    return jax.lax.dynamic_index_in_dim(logits, s.pos, 1, False), None, s.run

  return write_loop(
    step_logits, DecodeState.make(batch, length, cache), cfg, key
  )
