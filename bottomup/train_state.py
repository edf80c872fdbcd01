"""The training state: a pytree of parameters, optimizer state, step and key."""

from __future__ import annotations

from typing import Any

import flax
import jax
import optax


class TrainState(flax.struct.PyTreeNode):
  """Everything a checkpoint holds besides the data position.

  Attributes:
    step: optimizer steps taken (int32 scalar).
    params: float32 master weights.
    opt_state: optax state.
    rng: a typed PRNG key (jax.random.key) for noise in the training step.
    tx: the optax transformation (static, not saved).
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params, tx, rng) -> TrainState:
    return cls(
      step=jax.numpy.zeros((), jax.numpy.int32),
      params=params,
      opt_state=tx.init(params),
      rng=rng,
      tx=tx,
    )

  def apply_gradients(self, grads) -> TrainState:
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(
      step=self.step + 1,
      params=optax.apply_updates(self.params, updates),
      opt_state=opt_state,
    )
