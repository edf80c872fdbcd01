"""Tests for bottomup.checkpoint (8 fake CPU devices, see conftest.py)."""

import os
import pathlib
import shutil
import signal

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from bottomup import checkpoint


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  rng: jax.Array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def make_state(sharding=None, seed: int = 0) -> TrainState:
  """A small train state with AdamW moments, optionally placed on devices."""
  tx = optax.adamw(1e-3)
  params = {
    "dense": {
      "kernel": jnp.arange(16 * 8, dtype=jnp.float32).reshape(16, 8),
      "bias": jnp.full((8,), 0.5, jnp.float32),
    }
  }
  if sharding is not None:
    params = jax.device_put(params, sharding)
  opt_state = tx.init(params)
  # One update so the moments and count are not all zeros.
  grads = jax.tree.map(jnp.ones_like, params)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return TrainState(
    step=jnp.array(1, jnp.int32),
    params=params,
    opt_state=opt_state,
    rng=jax.random.key(seed),
    tx=tx,
  )


def replicated_target(state: TrainState) -> TrainState:
  abstract = jax.eval_shape(lambda: state)
  return checkpoint.abstract_like(
    abstract, jax.sharding.SingleDeviceSharding(jax.devices()[0])
  )


def assert_states_equal(a: TrainState, b: TrainState) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert jax.dtypes.issubdtype(b.rng.dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(
    jax.random.key_data(a.rng), jax.random.key_data(b.rng)
  )
  plain = lambda s: s.replace(rng=jnp.zeros(()))
  for x, y in zip(jax.tree.leaves(plain(a)), jax.tree.leaves(plain(b))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_with_key_and_adamw_state(tmp_path):
  state = make_state(seed=7)
  with checkpoint.Checkpointer(
    tmp_path, save_interval_steps=1, max_to_keep=3
  ) as ckpt:
    assert ckpt.save(1, state, {"epoch": 0, "index": 12})
    restored, data = ckpt.restore(None, replicated_target(state))
  assert isinstance(restored, TrainState)
  assert_states_equal(state, restored)
  assert data == {"epoch": 0, "index": 12}
  # The restored key is a working key, not raw uint32 data.
  jax.random.normal(restored.rng, (2,))


def test_data_state_is_snapshotted_at_save(tmp_path):
  state = make_state()
  position = {"index": 5, "shard_offsets": [1, 2, 3]}
  with checkpoint.Checkpointer(
    tmp_path, save_interval_steps=1, max_to_keep=3, async_save=True
  ) as ckpt:
    ckpt.save(1, state, position)
    position["index"] = 6  # The pipeline moves on while the write runs.
    position["shard_offsets"].append(4)
    _, data = ckpt.restore(1, replicated_target(state))
  assert data == {"index": 5, "shard_offsets": [1, 2, 3]}


def test_data_state_must_be_json(tmp_path):
  with checkpoint.Checkpointer(
    tmp_path, save_interval_steps=1, max_to_keep=3
  ) as ckpt:
    with pytest.raises(TypeError):
      ckpt.save(1, make_state(), {"bad": object()})
    assert ckpt.latest_step() is None


def test_keeps_only_the_newest_steps(tmp_path):
  state = make_state()
  with checkpoint.Checkpointer(
    tmp_path, save_interval_steps=1, max_to_keep=2
  ) as ckpt:
    for step in range(1, 6):
      assert ckpt.save(step, state, {"index": step})
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [4, 5]
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == [
    "4",
    "5",
  ]


def test_interval_policy_and_force(tmp_path):
  state = make_state()
  with checkpoint.Checkpointer(
    tmp_path, save_interval_steps=5, max_to_keep=3
  ) as ckpt:
    # No save on the first step of a fresh run (orbax's default would).
    assert [s for s in range(1, 12) if ckpt.should_save(s)] == [5, 10]
    assert not ckpt.save(3, state, {})
    assert ckpt.latest_step() is None
    assert ckpt.save(5, state, {})
    assert not ckpt.should_save(5)
    assert ckpt.save(7, state, {}, force=True)  # e.g. preemption
    # A final forced save on an already saved step is a no-op, not an error.
    assert not ckpt.save(7, state, {}, force=True)
    assert ckpt.should_save(10)
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [5, 7]


def test_latest_step_survives_reopening(tmp_path):
  state = make_state()
  with checkpoint.Checkpointer(
    tmp_path, save_interval_steps=2, max_to_keep=3
  ) as ckpt:
    assert ckpt.latest_step() is None
    with pytest.raises(FileNotFoundError):
      ckpt.restore(None, replicated_target(state))
    ckpt.save(2, state, {"index": 2})
    ckpt.save(4, state, {"index": 4})
  with checkpoint.Checkpointer(
    tmp_path, save_interval_steps=2, max_to_keep=3, read_only=True
  ) as ckpt:
    assert ckpt.latest_step() == 4
    assert ckpt.restore(2, replicated_target(state))[1] == {"index": 2}


def test_restore_onto_a_different_mesh(tmp_path):
  mesh8 = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))
  state = make_state(NamedSharding(mesh8, P("data")))
  assert state.params["dense"]["kernel"].sharding.spec[0] == "data"
  with checkpoint.Checkpointer(
    tmp_path, save_interval_steps=1, max_to_keep=1
  ) as ckpt:
    ckpt.save(1, state, {"index": 1})
    ckpt.wait_until_finished()

  mesh24 = jax.make_mesh(
    (2, 4), ("fsdp", "model"), axis_types=(AxisType.Auto, AxisType.Auto)
  )

  def spec(x):
    return P("model", "fsdp") if x.ndim == 2 else P()

  abstract = jax.eval_shape(lambda: state)
  shardings = jax.tree.map(lambda x: NamedSharding(mesh24, spec(x)), abstract)
  target = checkpoint.abstract_like(abstract, shardings)
  with checkpoint.Checkpointer(
    tmp_path, save_interval_steps=1, max_to_keep=1
  ) as ckpt:
    restored, _ = ckpt.restore(None, target)
  kernel = restored.params["dense"]["kernel"]
  assert kernel.sharding == NamedSharding(mesh24, P("model", "fsdp"))
  assert kernel.addressable_shards[0].data.shape == (4, 4)
  mu = restored.opt_state[0].mu["dense"]["kernel"]
  assert mu.sharding == NamedSharding(mesh24, P("model", "fsdp"))
  assert_states_equal(state, restored)


def test_unfinalized_step_is_ignored(tmp_path):
  state = make_state()
  with checkpoint.Checkpointer(
    tmp_path, save_interval_steps=1, max_to_keep=3, async_save=False
  ) as ckpt:
    ckpt.save(1, state, {"index": 1})
  # What a process killed while writing step 2 leaves behind: a complete
  # looking copy of the files under orbax's tmp name, never renamed.
  leftover = tmp_path / "2.orbax-checkpoint-tmp-1234567890"
  shutil.copytree(tmp_path / "1", leftover)
  (leftover / "commit_success.txt").unlink()
  with checkpoint.Checkpointer(
    tmp_path, save_interval_steps=1, max_to_keep=3
  ) as ckpt:
    assert ckpt.latest_step() == 1
    assert ckpt.all_steps() == [1]
    assert ckpt.restore(None, replicated_target(state))[1] == {"index": 1}
    assert ckpt.should_save(2)
    assert ckpt.save(2, state, {"index": 2})  # Cleans the leftover first.
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [1, 2]
  assert not leftover.exists()
  assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []


def test_async_save_allows_donating_the_state(tmp_path):
  state = make_state(seed=3)
  expected = jax.tree.map(np.asarray, state.params)
  with checkpoint.Checkpointer(
    tmp_path, save_interval_steps=1, max_to_keep=1, async_save=True
  ) as ckpt:
    ckpt.save(1, state, {})
    # What donation to the next jitted step does to the buffers.
    for leaf in jax.tree.leaves(state.params):
      leaf.delete()
    ckpt.wait_until_finished()
    restored, _ = ckpt.restore(1, replicated_target(make_state(seed=3)))
  jax.tree.map(
    np.testing.assert_array_equal,
    expected,
    jax.tree.map(np.asarray, restored.params),
  )


def test_restore_needs_shardings(tmp_path):
  state = make_state()
  with checkpoint.Checkpointer(
    tmp_path, save_interval_steps=1, max_to_keep=1
  ) as ckpt:
    ckpt.save(1, state, {})
    with pytest.raises(ValueError, match="without sharding"):
      ckpt.restore(1, jax.eval_shape(lambda: state))


def test_relative_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with checkpoint.Checkpointer(
    "ckpts", save_interval_steps=1, max_to_keep=1
  ) as ckpt:
    ckpt.save(1, make_state(), {})
  assert pathlib.Path(tmp_path, "ckpts", "1").is_dir()


def test_preemption_guard_turns_sigterm_into_a_flag():
  before = signal.getsignal(signal.SIGTERM)
  with checkpoint.PreemptionGuard() as guard:
    assert not guard.requested
    os.kill(os.getpid(), signal.SIGTERM)
    # The Python handler runs at the next bytecode boundary of the main
    # thread; a trivial call is enough to get there.
    signal.getsignal(signal.SIGTERM)
    assert guard.requested
    assert guard.signal_received == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before
