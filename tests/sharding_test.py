"""Scale-out on 8 fake CPU devices: meshes, resharded restore, multi-host."""

import json
import pathlib
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from runs import read_json, smoke_config, subprocess_env

from bottomup import checkpoint, datasets, sharding, train
from bottomup.models import get_model

REPO = pathlib.Path(__file__).resolve().parents[1]
MESHES = [(1, 1, 1), (8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 8, 1)]


def _config(shape):
  return smoke_config(
    model__compute_dtype="float32",
    mesh__shape=shape,
    train__batch_size=16,
  )


class Run:
  """A train state on one mesh, stepped by the trainer's own compiled step."""

  def __init__(self, shape, workdir):
    self.config = cfg = _config(shape)
    self.data = datasets.build(cfg, workdir)
    self.model = get_model(
      cfg.model, self.data.tokenizer.vocab_size, self.data.tokenizer.digit_ids
    )
    n = int(np.prod(shape))
    self.mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:n])
    self.rules = sharding.rules(cfg.mesh)
    shapes = self.data.shapes
    with self._ctx():
      init, rng, self.state_sharding = train.init_state(
        cfg, self.model, shapes, self.mesh
      )
      self.abstract = jax.eval_shape(init, rng)
      self.state = init(rng)
      self.step_fn = train.compile_train_step(
        cfg,
        self.model,
        train.pass_weights(cfg, shapes.max_drafts),
        self.mesh,
        self.state,
        self.state_sharding,
        shapes,
      )
    self.stream = self.data.train_stream(cfg.train.batch_size)
    self.latent = np.zeros((shapes.max_drafts,), bool)

  def _ctx(self):
    import contextlib

    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  def steps(self, k):
    losses = []
    with self._ctx():
      for _ in range(k):
        batch = sharding.put_batch(next(self.stream), self.mesh)
        self.state, m = self.step_fn(self.state, batch, self.latent)
        losses.append(float(m["loss"]))
    return losses


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """Three steps on a single device."""
  return Run((1, 1, 1), tmp_path_factory.mktemp("one")).steps(3)


@pytest.mark.parametrize("shape", MESHES[1:4])
def test_three_steps_match_one_device(shape, reference, tmp_path):
  losses = Run(shape, tmp_path).steps(3)
  np.testing.assert_allclose(losses, reference, rtol=1e-5, atol=1e-6)
  assert losses[2] != losses[0]  # the steps did train


def test_parameters_are_created_sharded(tmp_path):
  run = Run((1, 8, 1), tmp_path)
  kernel = run.state.params["encoder"]["block_0"]["mlp"]["up"]["kernel"]
  # ("embed", "mlp") -> ("fsdp", "tensor"): rows split 8 ways.
  assert kernel.addressable_shards[0].data.shape == (
    kernel.shape[0] // 8,
    kernel.shape[1],
  )


def test_fsdp_divides_state_memory(tmp_path):
  """Per-device params + optimizer state: fsdp=8 is about 1/8 of fsdp=1."""
  one = Run((8, 1, 1), tmp_path / "a")
  eight = Run((1, 8, 1), tmp_path / "b")
  full = train.state_bytes_per_device(one.state.params)
  full += train.state_bytes_per_device(one.state.opt_state)
  part = train.state_bytes_per_device(eight.state.params)
  part += train.state_bytes_per_device(eight.state.opt_state)
  assert 1 / 8 <= part / full < 1 / 8 * 1.05, (part, full)
  report = train.memory_report(eight.step_fn, eight.state, eight.mesh)
  assert "'fsdp': 8" in report and "temporaries" in report


def test_checkpoint_restores_onto_another_mesh(tmp_path):
  """Saved on (8,1,1) after 2 steps, restored on (2,2,2): step 3 agrees."""
  a = Run((8, 1, 1), tmp_path / "a")
  a.steps(2)
  with checkpoint.Checkpointer(
    tmp_path / "ckpt", save_interval_steps=1, max_to_keep=1
  ) as ckpt:
    ckpt.save(2, a.state, a.stream.get_state(), force=True)
    ckpt.wait_until_finished()
  want = a.steps(1)

  b = Run((2, 2, 2), tmp_path / "b")
  target = checkpoint.abstract_like(b.abstract, b.state_sharding)
  with checkpoint.Checkpointer(
    tmp_path / "ckpt", save_interval_steps=1, max_to_keep=1
  ) as ckpt:
    state, data_state = ckpt.restore(2, target)
  kernel = state.params["encoder"]["block_0"]["mlp"]["up"]["kernel"]
  assert kernel.sharding.mesh.shape == {"data": 2, "fsdp": 2, "tensor": 2}
  b.state = state
  b.stream.set_state(data_state)
  np.testing.assert_allclose(b.steps(1), want, rtol=1e-5, atol=1e-6)


# -- Two processes -------------------------------------------------------------


SMALL_RUN = (
  "--config.train.num_steps=10",
  "--config.train.checkpoint_every=5",
  "--config.eval.final_num_examples=16",
  "--config.eval.batch_size=16",
)


SMOKE = "experiments/multiplication.py:smoke"


def _run(cmd, **env):
  """Runs `cmd` in the repository with a fresh device setup."""
  devices = env.pop("DEVICES", None)
  env = subprocess_env(int(devices) if devices else None, **env)
  return subprocess.run(
    cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
  )


def _one_process(workdir, devices):
  """The same run as `_multiprocess`, in one process with all the devices."""
  cmd = [sys.executable, "-m", "bottomup.main", f"--config={SMOKE}"]
  return _run(
    [*cmd, f"--workdir={workdir}", *SMALL_RUN],
    JAX_PLATFORMS="cpu",
    DEVICES=str(devices),
  )


def _multiprocess(workdir):
  """Two processes of 2 fake devices each, through the launch script."""
  cmd = ["bash", "launch/multiprocess_cpu.sh", "2", SMOKE, str(workdir)]
  return _run([*cmd, *SMALL_RUN], DEVICES_PER_PROC="2")


def _losses(lines):
  recs = [json.loads(x) for x in lines]
  return {r["step"]: r["loss"] for r in recs if "loss" in r}


@pytest.mark.slow
def test_two_processes_train_checkpoint_and_resume(tmp_path):
  """A 2-process run; then its last checkpoint is dropped and a rerun
  resumes from step 5 and ends with the same results."""
  w = tmp_path / "run"
  first = _multiprocess(w)
  assert first.returncode == 0, first.stdout + first.stderr
  assert "mesh {'data': 4, 'fsdp': 1, 'tensor': 1}" in first.stdout
  results = read_json(w / "eval_results.json")
  metrics = (w / "metrics.jsonl").read_text().splitlines()
  assert sorted(p.name for p in (w / "checkpoints").iterdir()) == ["10", "5"]

  shutil.rmtree(w / "checkpoints" / "10")
  (w / "eval_results.json").unlink()
  second = _multiprocess(w)
  assert second.returncode == 0, second.stdout + second.stderr
  assert "Resuming from checkpoint step 5" in second.stdout
  assert read_json(w / "eval_results.json") == results

  # Process 0 alone writes metrics; the resumed steps log the same losses.
  want = _losses(metrics)
  got = _losses((w / "metrics.jsonl").read_text().splitlines()[len(metrics) :])
  assert sorted(got) == [s for s in sorted(want) if s > 5]
  for step, loss in got.items():
    assert loss == pytest.approx(want[step], rel=1e-5), step

  # One process with the same 4 devices trains on the same global batches:
  # the losses agree up to the order of bf16 reductions.
  one = _one_process(tmp_path / "one", devices=4)
  assert one.returncode == 0, one.stdout + one.stderr
  single = _losses(
    (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
  )
  assert sorted(single) == sorted(want)
  for step, loss in single.items():
    assert loss == pytest.approx(want[step], rel=1e-4), step
