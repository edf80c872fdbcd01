"""Per-device memory of a config's train state and step on several meshes.

    python benchmarks/memory.py [--config=experiments/multiplication.py:cpu] \
        [--meshes="1,1,1;8,1,1;2,4,1;2,2,2;1,8,1"]

Simulates 8 CPU devices (run it on a host with as many devices as the
largest mesh needs otherwise). For each mesh (data, fsdp, tensor) it builds
the sharded train state exactly as the trainer does and prints the trainer's
start-up memory line: parameters and optimizer state per device (from their
shardings) and the compiled step's arguments, outputs and temporaries.
"""

from __future__ import annotations

import os

if "--xla_force_host_platform_device_count" not in os.environ.get(
  "XLA_FLAGS", ""
):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
  )

import tempfile  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from bottomup import datasets, sharding, train  # noqa: E402
from bottomup.models import get_model  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  "config", "experiments/multiplication.py:cpu", "Experiment file."
)
_MESHES = flags.DEFINE_string(
  "meshes", "1,1,1;8,1,1;2,4,1;2,2,2;1,8,1", "Meshes, ';'-separated."
)


def main(argv):
  del argv
  config = _CONFIG.value
  with tempfile.TemporaryDirectory() as workdir:
    data = datasets.build(config, workdir)
  model = get_model(
    config.model, data.tokenizer.vocab_size, data.tokenizer.digit_ids
  )
  weights = train.pass_weights(config, data.shapes.max_drafts)
  for text in _MESHES.value.split(";"):
    shape = tuple(int(x) for x in text.split(","))
    with config.unlocked():
      config.mesh.shape = shape
    n = shape[0] * shape[1] * shape[2]
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:n])
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config.mesh)):
      init, rng, state_sharding = train.init_state(
        config, model, data.shapes, mesh
      )
      state = init(rng)
      step = train.compile_train_step(
        config, model, weights, mesh, state, state_sharding, data.shapes
      )
      print(train.memory_report(step, state, mesh), flush=True)


if __name__ == "__main__":
  app.run(main)
