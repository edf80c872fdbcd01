"""Checkpoints: the one module that talks to orbax (STYLE rule 9).

A checkpoint step is one folder `<directory>/<step>/` holding two items:

    state  the train state pytree (params, opt_state, step, typed rng key),
           written by `StandardSave` and restored onto whatever shardings the
           caller's abstract target names (so a different mesh works)
    data   the input pipeline position, a small JSON dict (`JsonSave`)

Both are written in the same step, so a resumed run continues from exactly
the batch after the one the saved state was trained on.

Orbax behaviour this module relies on or papers over (orbax 0.12.8):

1. Atomicity: a step is written to `<step>.orbax-checkpoint-tmp-<ts>/` and
   renamed to `<step>/` only once every item is on disk (on gs:// a
   `commit_success.txt` file marks completion instead). Steps that were
   being written when a process died are therefore never listed; leftover
   tmp folders are deleted when a writable `Checkpointer` opens the folder.
2. The default save policy of `CheckpointManagerOptions` also saves the very
   first step it is asked about when the folder is empty
   (`InitialSavePolicy`); we want saves on the interval only, so the policy
   is given explicitly (interval, plus JAX's multi-host preemption sync
   point, which is inert unless the preemption service is enabled).
3. `save(..., force=True)` raises `StepAlreadyExistsError` for a step that
   was already saved (e.g. a final save on an interval step); `save` here
   returns False instead.
4. `JsonSave` writes its dict from a background thread: a dict the caller
   mutates after `save` returns would be written half-updated, so a
   snapshot is taken first.
5. Typed PRNG keys (`jax.random.key`) are saved and restored natively by
   `StandardSave`/`StandardRestore`; no `key_data` round trip is needed.
6. Async saves copy device arrays to host before `save` returns, so the
   caller may donate the state to the next step right away.
"""

from __future__ import annotations

import json
import os
import signal
import types
from collections.abc import Iterable
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

PyTree = Any

_STATE = "state"
_DATA = "data"


class Checkpointer:
  """Saves and restores (train state, data position) pairs with orbax.

  All processes must call `save`, `restore`, `wait_until_finished` and
  `close` together: orbax synchronises the hosts inside them.
  """

  def __init__(
    self,
    directory: str | os.PathLike[str],
    *,
    save_interval_steps: int,
    max_to_keep: int,
    async_save: bool = True,
    read_only: bool = False,
  ):
    """Opens (and unless read-only, creates) the checkpoint folder.

    Args:
      directory: folder whose subfolders `<step>` are checkpoint steps
        (the trainer passes WORKDIR/checkpoints); local or gs://.
      save_interval_steps: `should_save(step)` is true on multiples of this.
      max_to_keep: how many of the newest steps to keep; older ones are
        deleted after each save.
      async_save: write to disk in a background thread (the arrays are
        copied to host first, so training continues while files are written).
      read_only: open an existing folder without saving or deleting anything
        (e.g. an evaluator reading a running job's checkpoints: a writable
        Checkpointer would delete the job's in-flight tmp folders).

    Raises:
      ValueError: if `save_interval_steps` or `max_to_keep` is below 1.
    """
    if save_interval_steps < 1:
      raise ValueError(f"save_interval_steps={save_interval_steps} < 1")
    if max_to_keep < 1:
      raise ValueError(f"max_to_keep={max_to_keep} < 1")
    self.directory = _absolute(directory)
    policy = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
      save_decision_policy=policy.AnySavePolicy(
        [
          policy.FixedIntervalPolicy(save_interval_steps),
          policy.PreemptionCheckpointingPolicy(),
        ]
      ),
      preservation_policy=policy.LatestN(n=max_to_keep),
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=not read_only,
      read_only=read_only,
      create=not read_only,
    )
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=(_STATE, _DATA)
    )

  def latest_step(self) -> int | None:
    """Returns the newest complete (finalized) step, or None if none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Returns every complete step in the folder, oldest first."""
    return sorted(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    """Whether the save policy asks for a checkpoint at `step`.

    Args:
      step: the number of training steps the state has completed.

    Returns:
      True on multiples of `save_interval_steps` newer than the latest saved
      step (and at a multi-host preemption sync point).
    """
    return self._manager.should_save(step)

  def save(
    self,
    step: int,
    state: PyTree,
    data_state: dict[str, Any],
    *,
    force: bool = False,
  ) -> bool:
    """Saves `state` and `data_state` as checkpoint `step`, if due.

    Args:
      step: the number of training steps `state` has completed.
      state: pytree of jax.Arrays (typed PRNG keys included).
      data_state: JSON-serializable input pipeline position.
      force: save even if `should_save(step)` is false (preemption, end of
        training).

    Returns:
      Whether a save was started (with `async_save`, it completes in the
      background; `wait_until_finished` waits for it).

    Raises:
      TypeError: if `data_state` is not JSON-serializable.
    """
    if step in self._manager.all_steps():
      return False  # Already saved, e.g. a final save on an interval step.
    # A snapshot: the background writer must not see later mutations, and a
    # bad value should fail here rather than in the writer thread.
    data_state = json.loads(json.dumps(data_state))
    saved = self._manager.save(
      step,
      args=ocp.args.Composite(
        **{
          _STATE: ocp.args.StandardSave(state),
          _DATA: ocp.args.JsonSave(data_state),
        }
      ),
      force=force,
    )
    if saved:
      logging.info("Checkpoint step %d saving to %s", step, self.directory)
    return saved

  def restore(
    self, step: int | None, abstract_state: PyTree
  ) -> tuple[PyTree, dict[str, Any]]:
    """Restores checkpoint `step` onto the shardings of `abstract_state`.

    Args:
      step: the step to restore; None restores the latest one.
      abstract_state: pytree of jax.ShapeDtypeStruct with the structure of
        the saved state, each with a `sharding` (see `abstract_like`). The
        shardings may differ from the ones the state was saved with.

    Returns:
      (state, data_state): the restored state, with the structure of
      `abstract_state`, and the saved input pipeline position.

    Raises:
      FileNotFoundError: if `step` is None and there is no checkpoint.
      ValueError: if a leaf of `abstract_state` has no sharding (orbax would
        fall back to the saved shardings, which may name absent devices).
    """
    missing = [
      jax.tree_util.keystr(path)
      for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state)
      if getattr(leaf, "sharding", None) is None
    ]
    if missing:
      raise ValueError(f"abstract_state leaves without sharding: {missing}")
    # A step saved asynchronously by this process is listed before it is on
    # disk; reading it must wait for the write.
    self._manager.wait_until_finished()
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"No checkpoint in {self.directory}")
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        **{
          _STATE: ocp.args.StandardRestore(abstract_state),
          _DATA: ocp.args.JsonRestore(),
        }
      ),
    )
    logging.info("Restored checkpoint step %d from %s", step, self.directory)
    return restored[_STATE], restored[_DATA]

  def wait_until_finished(self) -> None:
    """Blocks until background saves (and old-step deletions) are done."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for background saves, then releases orbax's threads."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def abstract_like(tree: PyTree, shardings: PyTree) -> PyTree:
  """Restore target: the shapes and dtypes of `tree` on `shardings`.

  Args:
    tree: pytree of arrays or jax.ShapeDtypeStruct (e.g. from
      `jax.eval_shape(init_fn, ...)`).
    shardings: one jax.sharding.Sharding for every leaf, or a pytree of
      them with the structure of `tree`.

  Returns:
    A pytree of jax.ShapeDtypeStruct with the structure of `tree`.
  """
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shardings),
      tree,
    )
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    tree,
    shardings,
  )


class PreemptionGuard:
  """Turns SIGTERM into a flag that the training loop polls.

  A preempted job gets SIGTERM some seconds before SIGKILL. The default
  handler would kill the process mid-step; with the guard installed the
  loop sees `guard.requested`, saves a checkpoint and exits cleanly.

  Usage:

      with PreemptionGuard() as guard:
        for step in ...:
          ...
          if guard.requested:
            ckpt.save(step, state, data_state, force=True)
            break

  On several hosts the signal may reach the processes at different steps;
  the loop must agree on the stop step before saving (all hosts save
  together), e.g. by all-gathering the flag every few steps.
  """

  def __init__(self, signals: Iterable[int] = (signal.SIGTERM,)):
    """Prepares the guard; handlers are installed by `__enter__`.

    Args:
      signals: the signals that request a stop.
    """
    self._signals = tuple(signals)
    self._previous: dict[int, Any] = {}
    self.requested = False
    self.signal_received: int | None = None

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    self.requested = True
    self.signal_received = signum
    logging.warning(
      "Received %s: will checkpoint and stop after the current step",
      signal.Signals(signum).name,
    )

  def __enter__(self) -> PreemptionGuard:
    # signal.signal works only in the main thread; it raises ValueError
    # elsewhere, which is the right failure for a misplaced guard.
    for signum in self._signals:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous.clear()


def _absolute(directory: str | os.PathLike[str]) -> epath.Path:
  """Orbax wants absolute paths; a local relative one is made absolute."""
  text = os.fspath(directory)
  if "://" in text:
    return epath.Path(text)
  return epath.Path(os.path.abspath(text))
