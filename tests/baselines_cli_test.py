"""Each baseline through the real command lines: train (smoke), evaluate a
file in the task's own format, and sample (issue acceptance)."""

import concurrent.futures
import pathlib
import subprocess
import sys

import pytest
from runs import read_json, subprocess_env

from data_pipelines.tasks import multiplication

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "experiments/multiplication.py:smoke"
BASELINES = ("ar_nocot", "ar_cot", "ar_trajectory", "mdlm")
TIMEOUT = 300


def _run(*args):
  env = subprocess_env()
  return subprocess.run(
    [sys.executable, "-m", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=TIMEOUT,
  )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Trains every baseline, then evaluates and samples each, two at a time."""
  root = tmp_path_factory.mktemp("baselines")
  task = multiplication.MultiplicationTask(4)
  icot = root / "icot_4x4.txt"
  icot.write_text(
    "".join(
      multiplication.icot_line(a, b, 4) + "\n"
      for a, b in task.sample_pairs("test", 6, seed=7)
    )
  )

  def one(name):
    w = root / name
    train = _run(
      "bottomup.main",
      f"--config={SMOKE}",
      f"--config.model.name={name}",
      f"--workdir={w}",
    )
    if train.returncode:
      return name, train, None, None
    ev = _run(
      "bottomup.evaluate",
      f"--workdir={w}",
      f"--eval_file={icot}",
      f"--output={w / 'file.json'}",
    )
    sample = _run("bottomup.sample", f"--workdir={w}", "--question=1234*5678")
    return name, train, ev, sample

  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    done = {r[0]: r[1:] for r in pool.map(one, BASELINES)}
  return root, done


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_trains_evaluates_and_samples(runs, name):
  root, done = runs
  train, ev, sample = done[name]
  assert train.returncode == 0, train.stdout + train.stderr
  assert f"{name}:" in train.stdout  # the start-up line names the model
  results = read_json(root / name / "eval_results.json")
  assert results["model"] == name
  assert len(results["per_pass_exact_match"]) == 1  # one draft
  assert ev.returncode == 0, ev.stdout + ev.stderr
  res = read_json(root / name / "file.json")
  assert res["num_examples"] == 6
  assert 0.0 <= res["accuracy"] <= 1.0
  assert sample.returncode == 0, sample.stdout + sample.stderr
  assert "1234" in sample.stdout
