"""Samplers of every model behind one interface (`make_sampler`).

Each returns a `sampling.RefineResult` (drafts [B, T', Ld], scores,
passes run), so evaluation, the CLIs and the benchmarks treat every model
alike:

  refiner    `sampling.refine`: passes, coarse to fine.
  CausalLM   `generate`: the question prefilled into the key/value cache in
             one forward pass, then one token per step (the refiner's write
             loop and token policy); n samples per question, the most
             likely kept.
  Mdlm       `diffuse`: iterative unmasking from all-MASK (ancestral or
             confidence-ordered), `diffusion_steps` denoiser calls.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from bottomup import sampling
from bottomup.models.causal_lm import CausalLM
from bottomup.models.mdlm import Mdlm
from bottomup.models.refiner import BOS_ID, EOS_ID, PAD_ID, Refiner


def _one_pass(tokens, logprob):
  return sampling.RefineResult(
    drafts=tokens[:, None],
    scores=logprob[:, None],
    num_passes_run=jnp.ones((), jnp.int32),
  )


@functools.partial(jax.jit, static_argnames=("model", "cfg"))
def generate(
  model: CausalLM, params, question, cfg, rng, selection_params=None
):
  """Left-to-right decoding of a CausalLM.

  Args:
    model: the CausalLM (static).
    params: its parameters.
    question: int32 [B, Lq], PAD-padded.
    cfg: a SamplingConfig (static): token policy, num_samples, kv_cache.
    rng: PRNG key.
    selection_params: parameters of the selection, if it has any.

  Returns:
    A RefineResult with one pass.
  """
  apply = functools.partial(model.apply, {"params": params})
  n, length = cfg.num_samples, cfg.max_draft_len
  q = jnp.repeat(question, n, axis=0)
  rows = q.shape[0]
  q_valid = q != PAD_ID
  cache = q_len = None
  if cfg.kv_cache:
    cache, q_len = apply(q, length, method="prefill")

  def step_logits(s: sampling.DecodeState):
    if cfg.kv_cache:
      return apply(
        s.token, s.pos, s.run, s.cache, q_valid, q_len, method="decode_step"
      )
    # Reference path: the full forward over the question and what is written.
    ones = jnp.ones((rows,), jnp.int32)
    logits = apply(q, s.tokens[:, None], ones)[:, 0]
    return jax.lax.dynamic_index_in_dim(logits, s.pos, 1, False), None, s.run

  state = sampling.DecodeState.make(rows, length, cache)
  s = sampling.write_loop(step_logits, state, cfg, jax.random.fold_in(rng, 0))
  b = question.shape[0]
  cands = sampling.Candidates(
    question, s.tokens.reshape(b, n, length), s.logprob.reshape(b, n), 0
  )
  scores = sampling.SELECTIONS[cfg.selection](cands, selection_params, cfg)
  return _one_pass(*sampling.select(cands, scores))


def after_eos_to_pad(tokens):
  """Everything after the first EOS of each row becomes PAD."""
  eos = tokens == EOS_ID
  seen = (jnp.cumsum(eos, axis=1) - eos) > 0
  return jnp.where(seen, PAD_ID, tokens)


@functools.partial(jax.jit, static_argnames=("model", "cfg"))
def diffuse(model: Mdlm, params, question, cfg, rng, selection_params=None):
  """Iterative unmasking of an Mdlm (see bottomup/models/mdlm.py).

  Step i of S goes from t = 1 - i/S to s = 1 - (i+1)/S: the denoiser gives
  a token for every masked position (the token policy of `cfg`: greedy or
  temperature / top-k / top-p) and a fraction (t - s)/t of the masked
  positions is revealed, chosen at random (ancestral) or by confidence.
  The last step reveals the rest, so S calls write the whole draft.

  Returns:
    A RefineResult with one pass; scores are the summed log-probabilities
    of the tokens as they were revealed.
  """
  del selection_params
  apply = functools.partial(model.apply, {"params": params})
  b, length = question.shape[0], cfg.max_draft_len
  num_steps = cfg.diffusion_steps or length
  mask_id = model.cfg.mask_id
  x0 = jnp.full((b, length), mask_id, jnp.int32)

  def body(i, carry):
    x, logprob = carry
    t = 1.0 - i / num_steps
    s = 1.0 - (i + 1) / num_steps
    frac = (t - s) / t
    key = jax.random.fold_in(rng, i)
    k_tok, k_pick = jax.random.split(key)
    logits = apply(question, x, method="denoise").astype(jnp.float32)
    v = logits.shape[-1]
    tok = sampling.next_token(
      logits.reshape(b * length, v), k_tok, cfg, forbid=(BOS_ID,)
    ).reshape(b, length)
    logp = jax.nn.log_softmax(logits, axis=-1)
    logp = jnp.take_along_axis(logp, tok[..., None], axis=-1)[..., 0]
    masked = x == mask_id
    if cfg.unmask_order == "random":
      reveal = masked & (jax.random.uniform(k_pick, (b, length)) < frac)
    else:
      count = jnp.ceil(masked.sum(axis=1) * frac).astype(jnp.int32)
      conf = jnp.where(masked, logp, -jnp.inf)
      rank = jnp.argsort(jnp.argsort(-conf, axis=1), axis=1)
      reveal = masked & (rank < count[:, None])
    x = jnp.where(reveal, tok, x)
    logprob = logprob + jnp.where(reveal, logp, 0.0).sum(axis=1)
    return x, logprob

  x, logprob = jax.lax.fori_loop(
    0, num_steps, body, (x0, jnp.zeros((b,), jnp.float32))
  )
  return _one_pass(after_eos_to_pad(x), logprob)


def make_sampler(model, cfg: sampling.SamplingConfig):
  """The model's sampler: (params, question, rng, selection_params=None,
  forced=None) -> RefineResult (`forced`, the refiner's only: its first
  drafts given, see `sampling.refine`)."""
  refiner_only = dict(
    guidance=cfg.guided,
    beam_width=cfg.beam_width > 1,
    selection_prm=cfg.selection in sampling.PRM_SELECTIONS,
  )
  used = [k for k, v in refiner_only.items() if v]
  if used and not isinstance(model, Refiner):
    raise ValueError(
      f"{', '.join(used)}: implemented for the refiner, not "
      f"{type(model).__name__}"
    )
  if isinstance(model, Refiner):
    fn = sampling.refine
  elif isinstance(model, CausalLM):
    fn = generate
  elif isinstance(model, Mdlm):
    fn = diffuse
  else:
    raise TypeError(f"no sampler for {type(model).__name__}")
  if fn is sampling.refine:
    return lambda params, question, rng, selection_params=None, forced=None: fn(
      model, params, question, cfg, rng, selection_params, forced
    )
  return lambda params, question, rng, selection_params=None: fn(
    model, params, question, cfg, rng, selection_params
  )
