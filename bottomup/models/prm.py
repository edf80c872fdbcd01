"""A process reward model: P(final answer correct | question, draft d_t).

A small bidirectional encoder over [question; d_t] with the pass index t
embedded, mean-pooled to one logit (DESIGN §3-§4). It is trained on
Monte-Carlo rollouts continued from each draft of sampled trajectories
(`bottomup/prm.py`) and scores the n candidate drafts of a pass at test time
(`SamplingConfig.selection="prm"`). Same blocks, place-value embeddings and
mixed-precision policy as the refiner.
"""

from __future__ import annotations

import dataclasses

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bottomup.models import layers, transformer
from bottomup.models.refiner import PAD_ID, place_index


@dataclasses.dataclass(frozen=True)
class PrmConfig:
  """Architecture of the process reward model."""

  vocab_size: int
  d_model: int = 128
  num_heads: int = 4
  mlp_dim: int = 512
  mlp_kind: str = "relu"
  num_layers: int = 2
  max_passes: int = 16
  max_places: int = 32
  digit_ids: tuple[int, ...] = ()
  compute_dtype: str = "bfloat16"

  @property
  def stack(self) -> transformer.StackConfig:
    return transformer.stack_config(self)


class ProcessRewardModel(nn.Module):
  """(question [B, Lq], draft [B, Ld], t [B]) -> logit [B] (float32)."""

  cfg: PrmConfig

  @nn.compact
  def __call__(self, question, draft, t):
    c = self.cfg
    d = c.d_model
    # Named as in the refiner, so that `refiner_parts` can warm-start them.
    token_embed = layers.Embed(
      c.vocab_size, d, ("vocab", "embed"), name="token_embed"
    )
    place_embed = layers.Embed(
      c.max_places + 1, d, (None, "embed"), 0.5, name="place_embed"
    )
    table = np.zeros((c.vocab_size,), bool)
    table[list(c.digit_ids)] = True

    def embed(tokens):
      places = jnp.minimum(place_index(tokens, table), c.max_places)
      return token_embed(tokens) + place_embed(places)

    init = nn.initializers.normal(0.5)
    segment = self.param(
      "segment_embed",
      nn.with_logical_partitioning(init, (None, "embed")),
      (2, d),
      jnp.float32,
    )
    pass_embed = self.param(
      "pass_embed",
      nn.with_logical_partitioning(init, (None, "embed")),
      (c.max_passes, d),
      jnp.float32,
    )
    x = jnp.concatenate(
      [embed(question) + segment[0], embed(draft) + segment[1]], axis=1
    )
    x = x + pass_embed[jnp.minimum(t, c.max_passes - 1)][:, None]
    valid = jnp.concatenate([question != PAD_ID, draft != PAD_ID], axis=1)
    positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])
    h = transformer.Encoder(c.stack, c.num_layers, name="encoder")(
      layers.constrain(x), valid, positions
    )
    w = valid.astype(jnp.float32)[..., None]
    pooled = (h * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
    head = layers.Dense(1, ("embed", None), jnp.dtype(c.compute_dtype))
    return head(pooled)[:, 0]


def make_prm(cfg, vocab_size: int, digit_ids=()) -> ProcessRewardModel:
  """The PRM of a `prm` config group (sizes only)."""
  fields = {f.name for f in dataclasses.fields(PrmConfig)}
  kwargs = {k: v for k, v in cfg.items() if k in fields}
  return ProcessRewardModel(
    PrmConfig(vocab_size=vocab_size, digit_ids=tuple(digit_ids), **kwargs)
  )


# The PRM parameters a refiner can give (same names, same shapes when the
# PRM has the refiner's encoder sizes: `refiner_sized`).
REFINER_PARTS = ("token_embed", "place_embed", "encoder")


def refiner_sized(cfg, model_cfg):
  """A copy of the `prm` group `cfg` with the refiner's encoder sizes."""
  import ml_collections

  out = ml_collections.ConfigDict(cfg.to_dict())
  for k in ("d_model", "num_heads", "mlp_dim", "mlp_kind", "max_places"):
    out[k] = model_cfg[k]
  out.num_layers = model_cfg.num_encoder_layers
  return out


def refiner_parts(prm_params, refiner_params) -> dict:
  """`prm_params` with its embeddings and encoder taken from the refiner's.

  The refiner's encoder already computes, from the question and a draft,
  the features its next pass needs; the PRM starts from them (a value head
  on the refiner's encoder) instead of from scratch. Raises ValueError
  naming the first parameter whose shape differs.
  """
  out = dict(prm_params)
  for name in REFINER_PARTS:
    mine, theirs = prm_params[name], refiner_params[name]
    flat_m = flax.traverse_util.flatten_dict(flax.core.unfreeze(mine))
    flat_t = flax.traverse_util.flatten_dict(flax.core.unfreeze(theirs))
    for key, value in flat_m.items():
      if key not in flat_t or np.shape(flat_t[key]) != np.shape(value):
        got = np.shape(flat_t[key]) if key in flat_t else "missing"
        raise ValueError(
          f"PRM parameter {name}/{'/'.join(key)} {np.shape(value)} has no "
          f"refiner counterpart of that shape ({got}): size the PRM with "
          "`refiner_sized`"
        )
    out[name] = jax.tree.map(jnp.asarray, theirs)
  return out


def prm_logits(prm, params, question, tokens, t) -> jax.Array:
  """Scores [B, N] of candidate drafts tokens [B, N, Ld] of pass t."""
  b, n, ld = tokens.shape
  q = jnp.repeat(question, n, axis=0)
  tt = jnp.broadcast_to(jnp.asarray(t, jnp.int32), (b * n,))
  logits = prm.apply({"params": params}, q, tokens.reshape(b * n, ld), tt)
  return logits.reshape(b, n)
