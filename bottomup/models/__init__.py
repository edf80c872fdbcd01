"""Models, looked up by name from config (`model.name`).

A model is a flax.linen Module whose `__call__(question, drafts, num_drafts,
latent, train)` returns teacher-forced logits [B, T, Ld, V] (or, when its
loss weighs positions itself, `(logits, token_weights)`; see
`bottomup.steps.pass_loss`). Each name also fixes the view of the data the
model is trained on (`data_pipelines.views`; `data.view` overrides it) and
its sampler (`bottomup.generate.make_sampler`). A variant is one new module
plus one line in `_REGISTRY`.

  refiner        the BottomUp refiner (all drafts, coarse to fine).
  ar_nocot       decoder-only LM: question -> answer.
  ar_cot         decoder-only LM: question -> final draft (the full chain).
  ar_trajectory  decoder-only LM: question -> d_0 <sep> ... <sep> d_{T-1}.
  mdlm           masked diffusion LM over the final draft.

`model.match_params` names another model: the width of this one's MLP is
then set so that both have (nearly) the same number of parameters under the
same config (`matched_mlp_dim`), so table cells compare equal sizes.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from bottomup.models import causal_lm, mdlm, refiner


class Entry(NamedTuple):
  module: type
  config: type
  view: str


_REGISTRY = {
  "refiner": Entry(refiner.Refiner, refiner.RefinerConfig, "trajectory"),
  "ar_nocot": Entry(causal_lm.CausalLM, causal_lm.CausalLMConfig, "answer"),
  "ar_cot": Entry(causal_lm.CausalLM, causal_lm.CausalLMConfig, "final"),
  "ar_trajectory": Entry(
    causal_lm.CausalLM, causal_lm.CausalLMConfig, "concat"
  ),
  "mdlm": Entry(mdlm.Mdlm, mdlm.MdlmConfig, "final"),
}

MODELS = tuple(_REGISTRY)


def _entry(name: str) -> Entry:
  if name not in _REGISTRY:
    raise ValueError(
      f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}"
    )
  return _REGISTRY[name]


def default_view(name: str) -> str:
  """The data view model `name` is trained on (`data_pipelines.views`)."""
  return _entry(name).view


def _build(cfg, name: str, vocab_size: int, digit_ids, **overrides):
  module, config_cls, _ = _entry(name)
  fields = {f.name for f in dataclasses.fields(config_cls)}
  kwargs = {k: v for k, v in cfg.items() if k in fields}
  kwargs.update(
    vocab_size=vocab_size, digit_ids=tuple(int(i) for i in digit_ids)
  )
  kwargs.update(overrides)
  return module(config_cls(**kwargs))


def count_params(module, shapes=(16, 1, 24)) -> int:
  """Parameters of an unbound model (shape-only: nothing is allocated)."""
  lq, t, ld = shapes
  q = jnp.zeros((1, lq), jnp.int32)
  d = jnp.zeros((1, t, ld), jnp.int32)
  n = jnp.ones((1,), jnp.int32)
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), q, d, n))
  leaves = jax.tree.leaves(variables["params"])
  return int(sum(x.size for x in leaves))


def matched_mlp_dim(cfg, vocab_size: int, digit_ids=(), multiple=8) -> int:
  """The MLP width of model `cfg.name` closest in size to `cfg.match_params`.

  Parameters are affine in the MLP width at fixed depth and width, so two
  counts fix the line; the result is rounded to a multiple of `multiple`.
  """
  target = count_params(
    _build(cfg, cfg.match_params, vocab_size, digit_ids),
    (16, 2, 24),
  )
  t = 2 if default_view(cfg.name) == "trajectory" else 1
  count = lambda m: count_params(
    _build(cfg, cfg.name, vocab_size, digit_ids, mlp_dim=m), (16, t, 24)
  )
  lo, hi = count(multiple), count(2 * multiple)
  per = (hi - lo) / multiple
  m = multiple + (target - lo) / per
  return max(multiple, int(round(m / multiple)) * multiple)


def get_model(cfg: ml_collections.ConfigDict, vocab_size: int, digit_ids=()):
  """Builds the model named `cfg.name` from the `model` config group.

  Args:
    cfg: the `model` config group.
    vocab_size: the tokenizer's vocabulary size.
    digit_ids: token ids of single digits (for place-value embeddings).

  Returns:
    An unbound flax Module.
  """
  _entry(cfg.name)
  overrides = {}
  match = cfg.get("match_params", "")
  if match and match != cfg.name:
    _entry(match)
    overrides["mlp_dim"] = matched_mlp_dim(cfg, vocab_size, digit_ids)
  return _build(cfg, cfg.name, vocab_size, digit_ids, **overrides)
