"""Train and evaluate an experiment.

    python -m bottomup.main --config=experiments/FILE.py[:PRESET] \
        --workdir=DIR [--config.x=y ...]

Rerunning the same command resumes from the last checkpoint in DIR.
"""

from absl import app, flags
from ml_collections import config_flags

from bottomup import evaluate, train

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Experiment file, e.g. experiments/multiplication.py:smoke",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Checkpoints, metrics and results go here."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  evaluate.quiet_libraries()
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
