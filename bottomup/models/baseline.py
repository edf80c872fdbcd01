"""What the baselines share: their config and their input embedding.

The baselines (`causal_lm`, `mdlm`) read one sequence [question ; target]
through the refiner's blocks; their sizes default to the refiner's, with
depth = encoder + decoder layers unless `num_layers` says otherwise.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from bottomup.models import layers, transformer
from bottomup.models.refiner import place_index


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
  """Architecture of a baseline (see experiments/base.py for each field)."""

  vocab_size: int
  d_model: int = 128
  num_heads: int = 4
  mlp_dim: int = 512
  mlp_kind: str = "swiglu"
  num_layers: int = 0
  num_encoder_layers: int = 4
  num_decoder_layers: int = 1
  max_places: int = 32
  digit_ids: tuple[int, ...] = ()
  compute_dtype: str = "bfloat16"
  remat: bool = True

  @property
  def depth(self) -> int:
    """Layers of the single stack (0 = the refiner's encoder + decoder)."""
    return self.num_layers or self.num_encoder_layers + self.num_decoder_layers

  @property
  def stack(self) -> transformer.StackConfig:
    return transformer.stack_config(self)


class SegmentEmbed(nn.Module):
  """Token + place-value + segment (0: question, 1: target) embedding.

  Attributes:
    vocab_size: rows of the token table.
    features: width.
    max_places: place-value embedding size (digit positions).
    digit_ids: the tokens that extend a digit run.
  """

  vocab_size: int
  features: int
  max_places: int
  digit_ids: tuple[int, ...] = ()

  def setup(self):
    d = self.features
    table = np.zeros((self.vocab_size,), bool)
    table[list(self.digit_ids)] = True
    self.is_digit = table
    self.token = layers.Embed(self.vocab_size, d, ("vocab", "embed"))
    self.place = layers.Embed(self.max_places + 1, d, (None, "embed"), 0.5)
    self.segment = self.param(
      "segment_embed",
      nn.with_logical_partitioning(
        nn.initializers.normal(0.5), (None, "embed")
      ),
      (2, d),
      jnp.float32,
    )

  def __call__(self, tokens, segment: int):
    """tokens [B, L] -> [B, L, D]; places from the digit runs of `tokens`."""
    places = place_index(tokens, self.is_digit)
    return self.one(tokens, places, segment)

  def one(self, tokens, places, segment: int):
    """Tokens with given place indices (decoding: the run is carried)."""
    places = jnp.minimum(places, self.max_places)
    return self.token(tokens) + self.place(places) + self.segment[segment]
