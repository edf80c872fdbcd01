"""Selection among the n drafts sampled per question in a pass.

`SamplingConfig.selection` names a scorer of `SELECTIONS` (the model's
likelihood, or a process reward model's value); `select` keeps the best
sample per question and `select_beam` the best `beam_width` over all the
samples of a question's beams (bottomup/sampling.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp

from bottomup.models import prm as prm_lib


@flax.struct.dataclass
class Candidates:
  """The n drafts sampled per question in one pass, for a selection."""

  question: jax.Array  # int32 [B, Lq]
  tokens: jax.Array  # int32 [B, N, Ld]
  logprob: jax.Array  # float32 [B, N], log-likelihood under the model
  t: Any  # the pass: an int, or int32 [] in the extra passes


# (candidates, selection_params, SamplingConfig) -> float32 [B, N] scores;
# the highest wins. The process-reward selection scores `tokens` with
# `cfg.prm`, whose parameters arrive as `selection_params` (an argument of
# `refine`).
Selection = Callable[[Candidates, Any, Any], jax.Array]


def _prm_logits(cands: Candidates, params, cfg) -> jax.Array:
  return prm_lib.prm_logits(
    cfg.prm, params, cands.question, cands.tokens, cands.t
  )


SELECTIONS: dict[str, Selection] = {
  "likelihood": lambda cands, _, cfg: cands.logprob,
  # P(final answer correct | draft) by the PRM.
  "prm": _prm_logits,
  # log p(draft) + log P(correct | draft): the probability that the model
  # writes the draft and that it leads to a right answer.
  "prm_likelihood": lambda cands, params, cfg: (
    cands.logprob + jax.nn.log_sigmoid(_prm_logits(cands, params, cfg))
  ),
}
# The selections that need a process reward model.
PRM_SELECTIONS = ("prm", "prm_likelihood")


def select(cands: Candidates, scores: jax.Array):
  """The best candidate per question: (tokens [B, Ld], logprob [B])."""
  best = jnp.argmax(scores, axis=1)
  tokens = jnp.take_along_axis(cands.tokens, best[:, None, None], 1)[:, 0]
  logprob = jnp.take_along_axis(cands.logprob, best[:, None], 1)[:, 0]
  return tokens, logprob


def select_beam(cands: Candidates, scores: jax.Array, width: int, first: bool):
  """The best `width` candidates per question among all its beams' samples.

  Args:
    cands: rows are (question, beam) pairs, question-major: B * W rows of
      N samples each.
    scores: float32 [B * W, N].
    width: W.
    first: the first written pass: the W beams of a question are still
      copies of one another, so only the first beam's samples compete.

  Returns:
    (tokens [B*W, Ld], logprob [B*W], score [B*W], parent [B*W]): the kept
    drafts and the row each was sampled from.
  """
  rows, n, ld = cands.tokens.shape
  b = rows // width
  tok = cands.tokens.reshape(b, width * n, ld)
  lp = cands.logprob.reshape(b, width * n)
  sc = scores.reshape(b, width * n)
  if first:
    sc = jnp.where((jnp.arange(width * n) < n)[None], sc, -jnp.inf)
  top, idx = jax.lax.top_k(sc, width)  # [B, W]
  tokens = jnp.take_along_axis(tok, idx[..., None], 1).reshape(rows, ld)
  logprob = jnp.take_along_axis(lp, idx, 1).reshape(rows)
  parent = (jnp.arange(b)[:, None] * width + idx // n).reshape(rows)
  return tokens, logprob, top.reshape(rows), parent
