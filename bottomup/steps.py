"""Loss, gradients and updates: the jitted train and eval steps.

The loss is a per-pass weighted, masked cross-entropy over the written
passes (DESIGN §2):

    loss = sum_{b,t,i} w_t * m[b,t,i] * CE[b,t,i]  /  sum_{b,t,i} m[b,t,i]

where m masks padding tokens, padded passes (t >= num_drafts) and latent
passes. Metrics are reported per pass.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from bottomup.models.refiner import PAD_ID


def loss_mask(drafts, num_drafts, latent):
  """float32 [B, T, L]: which target tokens count."""
  t_len = drafts.shape[1]
  written = (jnp.arange(t_len)[None] < num_drafts[:, None]) & ~latent[None]
  return ((drafts != PAD_ID) & written[:, :, None]).astype(jnp.float32)


def pass_loss(
  logits, drafts, num_drafts, latent, pass_weights, token_weights=None
):
  """The weighted loss and per-pass metrics.

  Args:
    logits: float32 [B, T, L, V].
    drafts: int32 [B, T, L] targets.
    num_drafts: int32 [B].
    latent: bool [T].
    pass_weights: float32 [T].
    token_weights: optional float32 [B, T, L] from the model (masked
      diffusion: 1/t at masked positions, 0 elsewhere). With them every
      position of a written pass counts, PAD included, the cross-entropy is
      weighted, and the accuracies are over positions of non-zero weight.

  Returns:
    (loss, metrics) where metrics holds per-pass sums ([T] arrays) so that
    they can be summed over batches before dividing.
  """
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, drafts)
  if token_weights is None:
    mask = loss_mask(drafts, num_drafts, latent)
    ce = ce * mask
    scored = mask
  else:
    t_len = drafts.shape[1]
    written = (jnp.arange(t_len)[None] < num_drafts[:, None]) & ~latent[None]
    mask = jnp.broadcast_to(
      written[:, :, None].astype(jnp.float32), drafts.shape
    )
    ce = ce * token_weights * mask
    scored = mask * (token_weights > 0)
  denom = jnp.maximum(mask.sum(), 1.0)
  loss = jnp.sum(ce.sum((0, 2)) * pass_weights) / denom
  correct = (jnp.argmax(logits, -1) == drafts).astype(jnp.float32) * scored
  has = scored.sum(2) > 0
  seq_ok = jnp.all((correct == scored), axis=2) & has  # [B, T]
  metrics = dict(
    ce_sum=ce.sum((0, 2)),
    tokens=mask.sum((0, 2)),
    scored=scored.sum((0, 2)),
    correct=correct.sum((0, 2)),
    seq_correct=seq_ok.sum(0).astype(jnp.float32),
    seqs=has.sum(0).astype(jnp.float32),
  )
  return loss, metrics


def batch_loss(model, params, batch, latent, pass_weights, train, rngs=None):
  """Forward pass of `model` on `batch` and its loss (see `pass_loss`).

  A model returns logits, or (logits, token_weights) when its loss weighs
  positions itself (masked diffusion).
  """
  out = model.apply(
    {"params": params},
    batch["question"],
    batch["drafts"],
    batch["num_drafts"],
    latent,
    train=train,
    rngs=rngs,
  )
  logits, token_weights = out if isinstance(out, tuple) else (out, None)
  weights = pass_weights[: batch["drafts"].shape[1]]
  return pass_loss(
    logits,
    batch["drafts"],
    batch["num_drafts"],
    latent,
    weights,
    token_weights,
  )


def make_train_step(model, pass_weights):
  """A pure train step: (state, batch, latent) -> (state, metrics)."""
  pass_weights = jnp.asarray(pass_weights, jnp.float32)

  def train_step(state, batch, latent):
    rng, noise_rng = jax.random.split(state.rng)

    def loss_fn(params):
      return batch_loss(
        model, params, batch, latent, pass_weights, True, {"noise": noise_rng}
      )

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
    )
    state = state.apply_gradients(grads).replace(rng=rng)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    return state, metrics

  return train_step


def make_eval_step(model, pass_weights):
  """A pure eval step: (params, batch, latent) -> metrics (teacher-forced)."""
  pass_weights = jnp.asarray(pass_weights, jnp.float32)

  def eval_step(params, batch, latent):
    loss, metrics = batch_loss(
      model, params, batch, latent, pass_weights, False
    )
    return dict(metrics, loss=loss)

  return eval_step


def summarize(metrics: dict[str, Any]) -> dict[str, float]:
  """Per-pass sums -> readable scalars (loss_pass{t}, token/seq accuracy)."""
  out = {}
  t_len = len(metrics["tokens"])
  for t in range(t_len):
    tok = float(metrics["tokens"][t])
    if tok == 0:
      continue
    out[f"loss_pass{t}"] = float(metrics["ce_sum"][t]) / tok
    scored = float(metrics["scored"][t]) if "scored" in metrics else tok
    out[f"token_acc_pass{t}"] = float(metrics["correct"][t]) / max(scored, 1)
    out[f"seq_acc_pass{t}"] = float(metrics["seq_correct"][t]) / max(
      float(metrics["seqs"][t]), 1.0
    )
  for k in ("loss", "grad_norm"):
    if k in metrics:
      out[k] = float(metrics[k])
  return out
