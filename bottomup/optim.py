"""The optimizer: AdamW, warmup + cosine, clipping, decay mask, accumulation."""

from __future__ import annotations

import jax
import ml_collections
import optax


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int):
  """Linear warmup to `cfg.learning_rate`, then cosine to `cfg.final_lr_frac`."""
  warmup = max(int(cfg.warmup_steps), 1)
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=cfg.learning_rate,
    warmup_steps=warmup,
    decay_steps=max(total_steps, warmup + 1),
    end_value=cfg.learning_rate * cfg.final_lr_frac,
  )


def decay_mask(params):
  """Weight decay on matrices only: not on norms, biases or embeddings."""

  def keep(path, x):
    names = [getattr(k, "key", str(k)) for k in path]
    return x.ndim >= 2 and not any(
      "embed" in n or n == "slot_init" for n in names
    )

  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(
  cfg: ml_collections.ConfigDict, total_steps: int
) -> optax.GradientTransformation:
  """The full optax chain described by the `optim` config group.

  Args:
    cfg: the `optim` config group.
    total_steps: optimizer updates in the whole run (for the schedule).

  Returns:
    An optax transformation (wrapped in MultiSteps when accumulating).
  """
  tx = optax.chain(
    optax.clip_by_global_norm(cfg.grad_clip_norm),
    optax.adamw(
      learning_rate_schedule(cfg, total_steps),
      b1=cfg.b1,
      b2=cfg.b2,
      eps=cfg.eps,
      weight_decay=cfg.weight_decay,
      mask=decay_mask,
    ),
  )
  if cfg.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum_steps)
  return tx
