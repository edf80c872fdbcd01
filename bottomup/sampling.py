"""Sampling: coarse-to-fine refinement of drafts at test time (DESIGN §3).

`refine` writes the drafts d_0 ... d_{T'-1} of a batch of questions:

1. Embed the question once; start from the learned slots z_{-1} and an empty
   previous draft (all PAD, as in training).
2. Pass t runs the deep encoder once on (question, d_{t-1}, z_{t-1}), giving
   the memory [H_t; z_t], and the decoder's cross-attention keys/values once.
3. A latent pass writes no tokens (its row of drafts is PAD): the next pass
   reads the continuous draft `latent_draft(H_t)` instead of embedded tokens.
4. A written pass samples n drafts per question (`bottomup.decoding`) with
   a `lax.while_loop` over a `DecodeState`: one token per step through the
   decoder's KV cache; greedy, temperature, top-k or top-p; a sequence stops
   at EOS (PAD after it) and the loop once every sequence has stopped or Ld
   tokens are written.
5. A selection scores the n samples (by default their log-likelihood under
   the model) and keeps the best per question: a beam of width 1 over
   drafts. The kept draft is embedded as the next pass's previous draft.
6. After the passes, the final pass is re-applied to its own draft (extra
   passes) until every draft is a fixed point, at most `extra_passes` times;
   a row that has converged is frozen while the others go on.

Classifier-free guidance (`SamplingConfig.guidance` = w != 1) runs every
pass twice, with and without the question (an all-PAD question, as question
dropout trains it), each with its own slots and decoder KV cache, and
samples every token from l_uncond + w * (l_cond - l_uncond); both branches
read the same previous draft.

Passes past the trained ones re-apply the final trained pass (same pass
embedding). `SamplingConfig.kv_cache=False` is the reference path: each step
recomputes the decoder over the whole prefix with `decode_logits` (for tests
and the benchmark).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from bottomup.decoding import (  # noqa: F401 (re-exported)
  DecodeState,
  decode,
  next_token,
  write_loop,
)
from bottomup.models.refiner import PAD_ID, Refiner
from bottomup.selection import (  # noqa: F401 (re-exported)
  PRM_SELECTIONS,
  SELECTIONS,
  Candidates,
  Selection,
  select,
  select_beam,
)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How `refine` samples.

  Attributes:
    max_draft_len: Ld, the draft length the model was trained with (with
      EOS); the encoder's positions depend on it.
    trained_passes: T, the number of passes the model was trained with
      (None = num_passes; give at least one of the two).
    num_passes: passes to run (None = trained_passes); passes past the
      trained ones re-apply the final trained pass.
    extra_passes: then re-apply the final pass until the drafts stop
      changing, at most this many times (0 = off).
    temperature: softmax temperature; 0 = greedy.
    top_k: sample among the k most likely tokens (0 = all).
    top_p: sample from the smallest set with this probability mass (1 = off).
    num_samples: drafts sampled per question and pass (per beam).
    selection: how samples are ranked: a key of `SELECTIONS`
      (`likelihood`, or `prm`: a process reward model's score).
    beam_width: drafts kept per question after each pass (a beam over
      drafts: every kept draft is refined by the next pass and the best
      `beam_width` of all their samples are kept; the best at the end is
      returned); 1 = keep one.
    prm: the ProcessRewardModel module for the PRM selections (its params
      are `refine`'s `selection_params`).
    latent: the latent passes, as one bool per pass or as pass indices.
    kv_cache: False recomputes the whole decoder prefix at every token.
    diffusion_steps: denoising steps of a masked diffusion model (0 = one
      per position, Ld).
    unmask_order: masked diffusion: `random` (ancestral) or `confidence`
      (the most confident masked positions first).
    guidance: classifier-free guidance weight w: every token's logits are
      l_uncond + w * (l_cond - l_uncond), l_uncond from the same passes run
      without the question (a model trained with question dropout); 1 =
      off.
  """

  max_draft_len: int
  trained_passes: int | None = None
  num_passes: int | None = None
  extra_passes: int = 0
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  num_samples: int = 1
  selection: str = "likelihood"
  latent: tuple[bool, ...] | tuple[int, ...] = ()
  kv_cache: bool = True
  diffusion_steps: int = 0
  unmask_order: str = "random"
  guidance: float = 1.0
  beam_width: int = 1
  prm: Any = None

  def __post_init__(self):
    # A list would make the config unhashable (it is a static jit argument).
    object.__setattr__(self, "latent", tuple(self.latent))
    if self.trained_passes is None and self.num_passes is None:
      raise ValueError("give trained_passes or num_passes")
    if self.passes < 1 or self.extra_passes < 0:
      raise ValueError("need num_passes >= 1 and extra_passes >= 0")
    if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
      raise ValueError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0")
    if self.num_samples < 1:
      raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
    if self.selection not in SELECTIONS:
      raise ValueError(
        f"unknown selection {self.selection!r}; known: {sorted(SELECTIONS)}"
      )
    if self.diffusion_steps < 0:
      raise ValueError(f"diffusion_steps must be >= 0: {self.diffusion_steps}")
    if self.unmask_order not in ("random", "confidence"):
      raise ValueError(
        f"unmask_order must be random|confidence, got {self.unmask_order!r}"
      )
    if self.selection in PRM_SELECTIONS and self.prm is None:
      raise ValueError(
        f"selection={self.selection!r} needs a process reward model (prm=)"
      )
    if self.beam_width < 1:
      raise ValueError(f"beam_width must be >= 1, got {self.beam_width}")
    if self.beam_width > 1 and self.extra_passes:
      raise ValueError("beam_width > 1 does not combine with extra_passes")
    if self.guided and not self.kv_cache:
      raise ValueError("classifier-free guidance needs kv_cache=True")
    if self.passes - 1 in self.latent_passes:
      raise ValueError("the final pass must write a draft, not be latent")

  @property
  def guided(self) -> bool:
    """Whether classifier-free guidance is on."""
    return self.guidance != 1.0

  @property
  def passes(self) -> int:
    """The number of passes before any extra ones."""
    return self.trained_passes if self.num_passes is None else self.num_passes

  @property
  def final_trained_pass(self) -> int:
    """The pass index that passes past the trained ones re-apply."""
    t = self.num_passes if self.trained_passes is None else self.trained_passes
    return t - 1

  @property
  def latent_passes(self) -> frozenset[int]:
    """The indices of the latent passes."""
    if all(isinstance(x, (bool, np.bool_)) for x in self.latent):
      return frozenset(i for i, x in enumerate(self.latent) if x)
    if any(isinstance(x, (bool, np.bool_)) for x in self.latent):
      raise ValueError(f"latent mixes bools and indices: {self.latent}")
    bad = [i for i in self.latent if not 0 <= i < self.passes]
    if bad:
      raise ValueError(f"latent pass indices out of range: {bad}")
    return frozenset(int(i) for i in self.latent)


# -- Passes --------------------------------------------------------------------


@flax.struct.dataclass
class PassOutput:
  """What a pass hands on: its draft and the next pass's inputs."""

  draft: jax.Array  # int32 [B, Ld] (all PAD for a latent pass)
  logprob: jax.Array  # float32 [B] (0 for a latent pass)
  slots: Any  # [B, M, D], z_t (with guidance: conditional, unconditional)
  next_emb: jax.Array  # [B, Ld, D], d_t as the next pass reads it
  next_valid: jax.Array  # bool [B, Ld]
  score: jax.Array  # float32 [B], the selection's score of the kept draft
  parent: jax.Array  # int32 [B], the row the draft was sampled from


def pass_key(rng: jax.Array, t) -> jax.Array:
  """The PRNG key of pass t."""
  return jax.random.fold_in(rng, t)


def run_pass(
  model,
  params,
  cfg,
  question,
  inputs,
  t,
  key,
  latent,
  sel_params,
  first=False,
  forced=None,
):
  """Steps 2-5 for one pass.

  Args:
    model: the Refiner.
    params: its parameters.
    cfg: the SamplingConfig.
    question: int32 [B, Lq].
    inputs: (q_emb, q_valid, prev_emb, prev_valid, slots, slots0); with
      guidance, slots is (conditional, unconditional) and inputs ends with
      the question-less (q_emb, q_valid).
    t: the pass (an int, or a traced int32 [] in the extra passes).
    key: PRNG key of the pass.
    latent: whether the pass is latent (static).
    sel_params: parameters of the selection, if it has any.
    first: whether this is the first written pass (beam search).
    forced: int32 [B, Ld]: write this draft instead of sampling one (the
      given prefix of a trajectory, e.g. for process-reward rollouts).

  Returns:
    A PassOutput.
  """
  apply = functools.partial(model.apply, {"params": params})
  pass_index = jnp.minimum(t, cfg.final_trained_pass)
  q_emb, q_valid, prev_emb, prev_valid, slots, slots0 = inputs[:6]
  encode = lambda q, qv, z: apply(
    q, qv, prev_emb, prev_valid, z, pass_index, method="encode_pass"
  )
  uncond = None
  if cfg.guided:
    memory, mask, h_draft, slots_c = encode(q_emb, q_valid, slots[0])
    mem_u, mask_u, _, slots_u = encode(*inputs[6], slots[1])
    uncond = (mem_u, mask_u)
    slots = (slots_c, slots_u)
  else:
    memory, mask, h_draft, slots = encode(q_emb, q_valid, slots)
  if model.cfg.carry == "none":
    # As in training: every pass restarts from z_{-1}.
    slots = (slots0, slots0) if cfg.guided else slots0
  b, ld, n = question.shape[0], cfg.max_draft_len, cfg.num_samples
  same = jnp.arange(b)
  if latent:
    emb, valid = apply(h_draft, method="latent_draft")
    pad = jnp.full((b, ld), PAD_ID, jnp.int32)
    zero = jnp.zeros((b,))
    return PassOutput(pad, zero, slots, emb, valid, zero, same)
  if forced is not None:
    emb, valid = apply(forced, method="embed_draft")
    zero = jnp.zeros((b,))
    return PassOutput(forced, zero, slots, emb, valid, zero, same)
  s = decode(model, params, memory, mask, cfg, key, n, uncond)
  cands = Candidates(
    question, s.tokens.reshape(b, n, ld), s.logprob.reshape(b, n), t
  )
  scores = SELECTIONS[cfg.selection](cands, sel_params, cfg)
  if cfg.beam_width > 1:
    draft, logprob, score, parent = select_beam(
      cands, scores, cfg.beam_width, first
    )
    slots = jax.tree.map(lambda z: z[parent], slots)
  else:
    draft, logprob = select(cands, scores)
    score, parent = jnp.max(scores, axis=1), same
  emb, valid = apply(draft, method="embed_draft")
  return PassOutput(draft, logprob, slots, emb, valid, score, parent)


@flax.struct.dataclass
class RefineResult:
  """The drafts of every pass.

  Rows past `num_passes_run` (extra passes never run) repeat the final draft,
  the convention of the data pipeline for converged trajectories.
  """

  drafts: jax.Array  # int32 [B, T', Ld], T' = num_passes + extra_passes
  scores: jax.Array  # float32 [B, T'], log-likelihood of each pass's draft
  num_passes_run: jax.Array  # int32 [], passes run including extra ones

  @property
  def final(self) -> jax.Array:
    """The final draft [B, Ld]."""
    return self.drafts[:, -1]


@flax.struct.dataclass
class FixedPointState:
  """The loop state of the extra passes (step 6)."""

  drafts: jax.Array  # int32 [B, T', Ld]
  scores: jax.Array  # float32 [B, T']
  slots: Any  # [B, M, D] (with guidance: conditional, unconditional)
  done: jax.Array  # bool [B], the row's draft is a fixed point
  k: jax.Array  # int32 [], extra passes run

  @classmethod
  def make(cls, drafts, scores, slots, extra: int):
    b = drafts.shape[0]
    return cls(
      drafts=jnp.pad(drafts, ((0, 0), (0, extra), (0, 0))),
      scores=jnp.pad(scores, ((0, 0), (0, extra))),
      slots=slots,
      done=jnp.zeros((b,), bool),
      k=jnp.zeros((), jnp.int32),
    )


def _extra_passes(pass_fn, cfg, state: FixedPointState) -> FixedPointState:
  """Step 6: re-applies the final pass until a fixed point, row by row."""

  def body(s: FixedPointState) -> FixedPointState:
    t = cfg.passes + s.k
    prev = jax.lax.dynamic_index_in_dim(s.drafts, t - 1, 1, False)
    prev_score = jax.lax.dynamic_index_in_dim(s.scores, t - 1, 1, False)
    out = pass_fn(prev, s.slots, t)
    draft = jnp.where(s.done[:, None], prev, out.draft)
    score = jnp.where(s.done, prev_score, out.logprob)
    return s.replace(
      drafts=jax.lax.dynamic_update_index_in_dim(s.drafts, draft, t, 1),
      scores=jax.lax.dynamic_update_index_in_dim(s.scores, score, t, 1),
      slots=jax.tree.map(
        lambda old, new: jnp.where(s.done[:, None, None], old, new),
        s.slots,
        out.slots,
      ),
      done=s.done | jnp.all(draft == prev, axis=-1),
      k=s.k + 1,
    )

  def cond(s: FixedPointState):
    return (s.k < cfg.extra_passes) & ~jnp.all(s.done)

  return jax.lax.while_loop(cond, body, state)


@functools.partial(jax.jit, static_argnames=("model", "cfg"))
def refine(
  model: Refiner,
  params,
  question: jax.Array,
  cfg: SamplingConfig,
  rng: jax.Array,
  selection_params=None,
  forced=None,
) -> RefineResult:
  """Writes the drafts of a batch of questions (see the module docstring).

  Args:
    model: the Refiner (static).
    params: its parameters (unboxed).
    question: int32 [B, Lq], PAD-padded.
    cfg: the SamplingConfig (static).
    rng: a PRNG key (unused when greedy).
    selection_params: parameters of the selection (e.g. a PRM's), if any.
    forced: int32 [B, K, Ld]: the first K drafts are given, not sampled
      (the passes still run, so the slots carry on); the rest continue
      from them (Monte-Carlo rollouts from a draft).

  Returns:
    A RefineResult.
  """
  apply = functools.partial(model.apply, {"params": params})
  width, b0 = cfg.beam_width, question.shape[0]
  if width > 1:  # rows are (question, beam) pairs, question-major
    question = jnp.repeat(question, width, axis=0)
    if forced is not None:
      forced = jnp.repeat(forced, width, axis=0)
  num_forced = 0 if forced is None else forced.shape[1]
  written = [
    t for t in range(num_forced, cfg.passes) if t not in cfg.latent_passes
  ]
  b, ld = question.shape[0], cfg.max_draft_len
  q_emb, q_valid = apply(question, method="embed_question")
  slots0 = apply(b, method="initial_slots")
  no_question = ()
  if cfg.guided:  # the unconditional branch reads an empty question
    empty_q = jnp.full_like(question, PAD_ID)
    no_question = (apply(empty_q, method="embed_question"),)

  def pass_fn(prev_input, slots, t, latent=False, forced_draft=None):
    inputs = (q_emb, q_valid, *prev_input, slots, slots0, *no_question)
    args = (question, inputs, t, pass_key(rng, t), latent, selection_params)
    first = bool(written) and t == written[0]
    return run_pass(model, params, cfg, *args, first, forced_draft)

  def extra_pass_fn(prev, slots, t):
    return pass_fn(apply(prev, method="embed_draft"), slots, t)

  empty = jnp.full((b, ld), PAD_ID, jnp.int32)
  prev_input = apply(empty, method="embed_draft")
  slots = (slots0, slots0) if cfg.guided else slots0
  drafts, scores = [], []
  # The passes are few and static (latent ones differ): a Python loop.
  for t in range(cfg.passes):
    given = forced[:, t] if t < num_forced else None
    out = pass_fn(prev_input, slots, t, t in cfg.latent_passes, given)
    if width > 1:  # each kept draft takes its parent beam's history
      drafts = [d[out.parent] for d in drafts]
      scores = [x[out.parent] for x in scores]
    drafts.append(out.draft)
    scores.append(out.logprob)
    prev_input, slots = (out.next_emb, out.next_valid), out.slots
  drafts, scores = jnp.stack(drafts, 1), jnp.stack(scores, 1)
  if width > 1:  # the best beam of each question by its final score
    best = jnp.arange(b0) * width + jnp.argmax(
      out.score.reshape(b0, width), axis=1
    )
    drafts, scores = drafts[best], scores[best]
  run = jnp.asarray(cfg.passes, jnp.int32)
  if cfg.extra_passes:
    state = FixedPointState.make(drafts, scores, slots, cfg.extra_passes)
    state = _extra_passes(extra_pass_fn, cfg, state)
    run = run + state.k
    final = jax.lax.dynamic_index_in_dim(state.drafts, run - 1, 1, False)
    last = jax.lax.dynamic_index_in_dim(state.scores, run - 1, 1, False)
    ran = jnp.arange(state.drafts.shape[1]) < run
    drafts = jnp.where(ran[None, :, None], state.drafts, final[:, None])
    scores = jnp.where(ran[None], state.scores, last[:, None])
  return RefineResult(drafts=drafts, scores=scores, num_passes_run=run)


def refine_nocache(model, params, question, cfg, rng, selection_params=None):
  """`refine` recomputing the whole decoder prefix every token (reference)."""
  cfg = dataclasses.replace(cfg, kv_cache=False)
  return refine(model, params, question, cfg, rng, selection_params)
