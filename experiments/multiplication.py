"""Multiplication refiner on generated data (no files needed).

The README's main job (preset `quickstart`, the default):

    python -m bottomup.main --config=experiments/multiplication.py \
        --workdir=runs/quickstart

trains a 1.1M-parameter refiner on freshly generated 4x4 problems (scheme
`scale`: each pass adds one partial product of b's most significant digits
and writes the new estimate), then evaluates it on 1,000 held-out generated
problems (operands disjoint from training by construction) and prints the
accuracy and one coarse-to-fine trajectory. Measured on 2 CPU cores
(2026-12-05): 99.6% (996/1000) in 9m10s, compilation and evaluation
included (997/1000 on the iCoT BigBench 4x4 test file). The `cpu` preset
(3000 steps): 100% (1000/1000) in 59 minutes (before the passes were
unrolled, which made the step 1.6x faster). 5x5 with the `cpu` preset
(`--config.data.task=multiplication_5x5`, 1.08M params, 3000 steps):
100% (1000/1000) on held-out generated problems and 100% (1000/1000) on
the iCoT BigBench 5x5 test file (valid: 0.8% @500, 19.5% @1000, 97.3%
@1500, 100% @2500 steps).

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
  # "" = the task's default: `scale` for the refiner (each pass adds one
  # partial product), the iCoT chain for models that write only the final
  # draft (ar_cot, mdlm; `Task.cot_scheme`).
  c.data.scheme = ""
  # On a 2-core CPU, ReLU and 4 slots cut the step time; memory is plentiful
  # at this size, so no rematerialization.
  c.model.mlp_kind = "relu"
  c.model.num_slots = 4
  c.model.remat = False
  c.optim.warmup_steps = 50
  if preset == "smoke":
    base.smoke(c)
    c.data.tokenizer_examples = 200
    c.train.batch_size = 16
    c.train.num_steps = 20
    c.eval.every_steps = 20
    c.eval.num_examples = 32
    c.eval.batch_size = 32
    c.eval.final_num_examples = 64
  elif preset == "quickstart":
    c.train.num_steps = 850
    c.eval.every_steps = 250
    c.eval.num_examples = 256
  elif preset == "cpu":
    c.train.num_steps = 3000
    c.eval.every_steps = 500
  elif preset == "accel":
    base.accel(c)
    c.train.batch_size = 512
    c.train.num_steps = 4000
    c.eval.batch_size = 1000
  else:
    raise base.unknown_preset(preset)
  return c
