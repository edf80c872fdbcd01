"""Masked diffusion baseline (MDLM / MD4) over the final draft.

A bidirectional transformer reads [question ; x_t], where x_t is the target
draft (the `final` view: the full solution, + EOS, PAD-filled to Ld) with
some positions replaced by a MASK token, and predicts the clean token at
every masked position. All Ld positions are generated, PAD included, so the
length of the answer is generated too.

Forward process, continuous time t in (0, 1]: each position is masked
independently with probability 1 - alpha_t; with the linear schedule
alpha_t = 1 - t that probability is t. The loss is the MDLM/MD4 bound

    L = E_t [ (-alpha'_t / (1 - alpha_t)) * sum_{masked i} -log p(x_i | x_t) ]
      = E_t [ (1 / t) * sum_{masked i} CE_i ],

divided by Ld (a per-token figure comparable to the other models' losses).
The batch's t values are stratified (t_b = (u + b) / B, one uniform u):
lower variance than independent draws (MDLM, Sahoo et al. 2024). At full
masking (t = 1) the weight is 1 and the loss is the plain cross-entropy.

Sampling (`bottomup.generate.diffuse`): start from all MASK and go from t = 1
to 0 in `diffusion_steps` steps; at each step every masked position is
unmasked with probability (t - s) / t (ancestral sampling), or, with
confidence ordering, the expected number of positions are unmasked where the
model is most confident. Unmasked tokens never change.

The MASK token is one extra embedding row (id = vocab_size); the output head
has vocab_size classes, so MASK is never predicted. For the place-value
embedding a MASK counts as a digit (a masked digit keeps the run going).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from bottomup.models import baseline, layers, transformer
from bottomup.models.refiner import PAD_ID

# Smallest masking level drawn in training (the weight 1/t is bounded).
T_MIN = 1e-3


@dataclasses.dataclass(frozen=True)
class MdlmConfig(baseline.BaselineConfig):
  """Architecture (see `baseline.BaselineConfig`)."""

  @property
  def mask_id(self) -> int:
    """The MASK token: one row past the tokenizer's vocabulary."""
    return self.vocab_size


def mask_tokens(key, target, t, mask_id):
  """x_t: each position of target [B, L] masked w.p. t [B] -> (x_t, masked)."""
  masked = jax.random.uniform(key, target.shape) < t[:, None]
  return jnp.where(masked, mask_id, target), masked


def stratified_times(key, batch: int) -> jax.Array:
  """t_b = (u + b) / B mod 1, clipped to [T_MIN, 1]: one draw per stratum."""
  u = jax.random.uniform(key, ())
  t = jnp.mod(u + jnp.arange(batch) / batch, 1.0)
  return jnp.clip(t, T_MIN, 1.0)


class Mdlm(nn.Module):
  """Masked diffusion LM. See the module docstring."""

  cfg: MdlmConfig

  def setup(self):
    c = self.cfg
    # One extra row: the MASK token, which also extends a digit run.
    self.embed = baseline.SegmentEmbed(
      c.vocab_size + 1, c.d_model, c.max_places, (*c.digit_ids, c.mask_id)
    )
    encoder = nn.remat(transformer.Encoder) if c.remat else transformer.Encoder
    self.encoder = encoder(c.stack, c.depth)
    cd = jnp.dtype(c.compute_dtype)
    self.head = layers.Dense(c.vocab_size, ("embed", "vocab"), cd)

  def denoise(self, question, x_t):
    """Logits of the clean target: question [B, Lq], x_t [B, Ld] -> [B, Ld, V].

    Every target position is a valid key (PAD there is a token to predict:
    the draft has ended); question padding is masked out.
    """
    b, lq = question.shape
    ld = x_t.shape[1]
    x = jnp.concatenate([self.embed(question, 0), self.embed(x_t, 1)], 1)
    valid = jnp.concatenate(
      [question != PAD_ID, jnp.ones((b, ld), bool)], axis=1
    )
    positions = jnp.cumsum(valid, axis=1) - 1
    h = self.encoder(layers.constrain(x), valid, positions)
    return self.head(h[:, lq:])

  def __call__(self, question, drafts, num_drafts, latent=None, train=False):
    """Logits on a noised target and the loss weight of every position.

    Args:
      question: int32 [B, Lq].
      drafts: int32 [B, 1, Ld], the final draft (+ EOS, PAD-filled).
      num_drafts: unused.
      latent: unused.
      train: draws t and the mask from the `noise` rng stream; otherwise a
        fixed key (a repeatable validation loss).

    Returns:
      (logits [B, 1, Ld, V], token_weights [B, 1, Ld]): the weights are 1/t
      at masked positions and 0 elsewhere, for every position, PAD
      included (`steps.pass_loss`).
    """
    del num_drafts, latent
    if drafts.shape[1] != 1:
      raise ValueError(
        f"Mdlm writes one draft, got {drafts.shape[1]} (use the final view)"
      )
    target = drafts[:, 0]
    if train and self.has_rng("noise"):
      key = self.make_rng("noise")
    else:
      key = jax.random.key(0)
    k_t, k_mask = jax.random.split(key)
    t = stratified_times(k_t, target.shape[0])
    x_t, masked = mask_tokens(k_mask, target, t, self.cfg.mask_id)
    logits = self.denoise(question, x_t)
    weights = jnp.where(masked, 1.0 / t[:, None], 0.0)
    return logits[:, None], weights[:, None]
