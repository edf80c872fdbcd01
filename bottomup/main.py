"""Train and evaluate an experiment.

    python -m bottomup.main --config=experiments/FILE.py[:PRESET] \
        --workdir=DIR [--config.x=y ...]

Rerunning the same command resumes from the last checkpoint in DIR.
With `--config.bootstrap.rounds=R` the supervised run is followed by R
bootstrap rounds (bottomup/bootstrap.py).
On a multi-host job every process runs the same command with
`--multiprocess` (see bottomup/distributed.py and launch/).
"""

from absl import app, flags
from ml_collections import config_flags

from bottomup import bootstrap, distributed, evaluate, train

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Experiment file, e.g. experiments/multiplication.py:smoke",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Checkpoints, metrics and results go here."
)
_MULTIPROCESS = flags.DEFINE_bool(
  "multiprocess",
  False,
  "Join a multi-host job (jax.distributed.initialize); also implied by "
  "$BOTTOMUP_NUM_PROCESSES.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  evaluate.quiet_libraries()
  distributed.initialize(_MULTIPROCESS.value)
  config = _CONFIG.value
  if config.bootstrap.rounds > 0:
    bootstrap.run(config, _WORKDIR.value)
  else:
    train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
