"""Multiplication refiner on generated data (no files needed).

The README's main job (preset `quickstart`, the default):

    python -m bottomup.main --config=experiments/multiplication.py \
        --workdir=runs/quickstart

trains a 1.1M-parameter refiner on freshly generated 4x4 problems (scheme
`scale`: each pass adds one partial product of b's most significant digits
and writes the new estimate), then evaluates it on 1,000 held-out generated
problems (operands disjoint from training by construction) and prints the
accuracy and one coarse-to-fine trajectory. Expected: >= 99% exact match in
about 15-20 minutes on 2 CPU cores.

Presets (`experiments/multiplication.py:PRESET`):
  smoke       seconds; tests and CI check the pipeline, not the numbers.
  quickstart  the main job above.
  cpu         the full recipe on a 2-core CPU (hours; resumable).
  accel       full size for one GPU/TPU.
The task size is a field: `--config.data.task=multiplication_5x5`.
"""

import ml_collections

from experiments import base


def get_config(preset: str = "quickstart") -> ml_collections.ConfigDict:
  """The multiplication config for `preset`."""
  c = base.get_config()
  c.data.task = "multiplication_4x4"
  c.data.scheme = "scale"
  if preset == "smoke":
    c.model.d_model = 32
    c.model.num_heads = 2
    c.model.mlp_dim = 64
    c.model.num_encoder_layers = 2
    c.model.num_slots = 2
    c.data.tokenizer_examples = 200
    c.train.batch_size = 16
    c.train.num_steps = 20
    c.train.log_every = 5
    c.train.checkpoint_every = 10
    c.train.progress_bar = False
    c.eval.every_steps = 20
    c.eval.num_examples = 32
    c.eval.batch_size = 32
    c.eval.final_num_examples = 64
  elif preset == "quickstart":
    c.train.num_steps = 1500
  elif preset == "cpu":
    c.train.num_steps = 6000
    c.eval.every_steps = 1000
  elif preset == "accel":
    c.model.d_model = 384
    c.model.num_heads = 6
    c.model.mlp_dim = 1536
    c.model.num_encoder_layers = 8
    c.model.num_decoder_layers = 2
    c.model.num_slots = 16
    c.train.batch_size = 512
    c.train.num_steps = 4000
    c.optim.learning_rate = 1e-3
    c.eval.batch_size = 1000
  else:
    raise ValueError(
      f"unknown preset {preset!r}; known: smoke, quickstart, cpu, accel"
    )
  return c
