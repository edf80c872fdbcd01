"""A NaN/Inf loss stops training before a bad state is checkpointed."""

import jax.numpy as jnp
import pytest
from runs import ckpt_steps, smoke_config

from bottomup import steps, train


def _nan_after(bad_step):
  """A make_train_step whose loss is NaN from step `bad_step` on."""
  make = steps.make_train_step

  def make_bad(model, pass_weights):
    step_fn = make(model, pass_weights)

    def bad(state, batch, latent):
      state, m = step_fn(state, batch, latent)
      loss = jnp.where(state.step >= bad_step, jnp.nan, m["loss"])
      return state, dict(m, loss=loss)

    return bad

  return make_bad


def test_nan_loss_stops_before_checkpointing(tmp_path, monkeypatch):
  # NaN from step 12: the check at the next log step (15) stops the run, and
  # the checkpoint due at 20 is never written.
  monkeypatch.setattr(steps, "make_train_step", _nan_after(12))
  with pytest.raises(train.NonFiniteLossError, match="step 15") as e:
    train.train_and_evaluate(smoke_config(), str(tmp_path))
  assert "last checkpoint: step 10" in str(e.value)
  assert ckpt_steps(tmp_path) == [10]
  assert not (tmp_path / "eval_results.json").exists()


def test_nan_on_checkpoint_step_is_not_saved(tmp_path, monkeypatch):
  # Logging every 4 steps misses step 10; the check before saving catches it.
  monkeypatch.setattr(steps, "make_train_step", _nan_after(9))
  with pytest.raises(train.NonFiniteLossError, match="step 10"):
    train.train_and_evaluate(smoke_config(train__log_every=4), str(tmp_path))
  assert ckpt_steps(tmp_path) == []
