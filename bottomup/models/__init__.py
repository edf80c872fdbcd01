"""Models, looked up by name from config (`model.name`).

A model is a flax.linen Module whose `__call__(question, drafts, num_drafts,
latent, train)` returns teacher-forced logits [B, T, Ld, V]; a variant is
one new module plus one line in `_REGISTRY`.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from bottomup.models import refiner

_REGISTRY = {
  "refiner": (refiner.Refiner, refiner.RefinerConfig),
}


def get_model(cfg: ml_collections.ConfigDict, vocab_size: int, digit_ids=()):
  """Builds the model named `cfg.name` from the `model` config group.

  Args:
    cfg: the `model` config group.
    vocab_size: the tokenizer's vocabulary size.
    digit_ids: token ids of single digits (for place-value embeddings).

  Returns:
    An unbound flax Module.
  """
  if cfg.name not in _REGISTRY:
    raise ValueError(
      f"unknown model {cfg.name!r}; known: {', '.join(sorted(_REGISTRY))}"
    )
  module, config_cls = _REGISTRY[cfg.name]
  fields = {f.name for f in dataclasses.fields(config_cls)}
  kwargs = {k: v for k, v in cfg.items() if k in fields}
  kwargs.update(
    vocab_size=vocab_size, digit_ids=tuple(int(i) for i in digit_ids)
  )
  return module(config_cls(**kwargs))
