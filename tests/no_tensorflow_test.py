"""The accelerator path: training on generated data needs no TensorFlow.

Accelerator machines may have jax, flax, optax, orbax and sentencepiece
but no TensorFlow (issue: paper tables, `accel` profile). This trains a
smoke run in a subprocess where tensorflow, tensorflow_datasets and
tensorboard cannot be imported.
"""

import subprocess
import sys

from conftest import REPO_ROOT
from runs import subprocess_env

_SCRIPT = """
import sys
for name in ("tensorflow", "tensorflow_datasets", "tensorboard"):
  sys.modules[name] = None  # import fails, find_spec says absent
import importlib
cfg = importlib.import_module("experiments.multiplication").get_config("smoke")
cfg.train.num_steps = 4
cfg.train.progress_bar = False
cfg.eval.every_steps = 4
cfg.eval.final_num_examples = 16
from bottomup import train
results = train.train_and_evaluate(cfg, sys.argv[1])
loaded = [m for m in sys.modules if m.split(".")[0] in
          ("tensorflow", "tensorflow_datasets", "tensorboard")
          and sys.modules[m] is not None]
assert not loaded, loaded
print("NO_TF_OK", results["num_examples"])
"""


def test_generated_data_trains_without_tensorflow(tmp_path):
  env = subprocess_env()
  proc = subprocess.run(
    [sys.executable, "-c", _SCRIPT, str(tmp_path / "run")],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "NO_TF_OK 16" in proc.stdout
  assert (tmp_path / "run" / "eval_results.json").exists()
