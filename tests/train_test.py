"""Tests of the trainer, the experiment configs and the command-line tools.

Training runs use the `smoke` preset. Runs that several tests read are made
once per module (fixtures); command-line tools run as subprocesses on one
CPU device, with a timeout.
"""

import concurrent.futures
import json
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest
from runs import ckpt_steps as _ckpt_steps
from runs import read_json as _read_json
from runs import smoke_config as _smoke_config
from runs import subprocess_env

from bottomup import evaluate, sharding, train
from data_pipelines.tasks import multiplication

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "experiments/multiplication.py:smoke"
TIMEOUT = 240  # seconds for any one subprocess


# -- In-process training ------------------------------------------------------


def _tensorboard_config():
  """The smoke config with TensorBoard on (the smoke preset turns it off)."""
  return _smoke_config(train__tensorboard=True)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  """A smoke workdir trained once in-process, and its return value."""
  workdir = tmp_path_factory.mktemp("smoke")
  results = train.train_and_evaluate(_tensorboard_config(), str(workdir))
  return workdir, results


def test_smoke_end_to_end(smoke_run):
  workdir, results = smoke_run
  cfg = _tensorboard_config()
  for name in (
    "config.json",
    "eval_results.json",
    "timing.json",
    "metrics.jsonl",
    "spm.model",
  ):
    assert (workdir / name).is_file(), name
  ev = _read_json(workdir / "eval_results.json")
  assert ev == json.loads(json.dumps(results))
  assert 0.0 <= ev["accuracy"] <= 1.0
  # Speeds go to timing.json: eval_results.json depends on the computation.
  assert "problems_per_second" not in ev
  assert _read_json(workdir / "timing.json")["eval_problems_per_second"] > 0
  assert ev["num_examples"] == cfg.eval.final_num_examples
  assert ev["step"] == cfg.train.num_steps
  assert len(ev["per_pass_exact_match"]) == 4  # 4x4: four passes
  assert all(0.0 <= x <= 1.0 for x in ev["per_pass_exact_match"])
  tf = ev["teacher_forced"]
  for t in range(4):
    assert tf[f"loss_pass{t}"] > 0
    assert 0.0 <= tf[f"token_acc_pass{t}"] <= 1.0
  assert _read_json(workdir / "config.json") == json.loads(
    json.dumps(cfg.to_dict())
  )
  # Checkpoints on the interval (10, 20), the final one included.
  assert _ckpt_steps(workdir) == [10, 20]
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
  train_steps = [r["step"] for r in logged if "loss" in r]
  assert train_steps == [5, 10, 15, 20]
  # The same scalars went to TensorBoard.
  assert list(workdir.glob("events.out.tfevents.*"))


def test_rerun_resumes_without_training(smoke_run, monkeypatch, capsys):
  workdir, _ = smoke_run
  before = (workdir / "eval_results.json").read_text()
  ckpt_mtimes = {
    p.name: p.stat().st_mtime_ns for p in (workdir / "checkpoints").iterdir()
  }
  placed = []
  put_batch = sharding.put_batch
  monkeypatch.setattr(
    sharding,
    "put_batch",
    lambda *a, **k: placed.append(1) or put_batch(*a, **k),
  )
  results = train.train_and_evaluate(_tensorboard_config(), str(workdir))
  assert placed == []  # not a single training step
  assert "Resuming from checkpoint step 20" in capsys.readouterr().out
  assert _read_json(workdir / "timing.json")["resumed_from"] == 20
  after = (workdir / "eval_results.json").read_text()
  assert json.loads(after) == json.loads(before)
  assert results == json.loads(before)
  assert {
    p.name: p.stat().st_mtime_ns for p in (workdir / "checkpoints").iterdir()
  } == ckpt_mtimes


def _cheap(**overrides):
  return _smoke_config(
    train__num_steps=4,
    train__log_every=2,
    train__checkpoint_every=4,
    eval__final_num_examples=16,
    **overrides,
  )


# Orthogonal settings share a run (each run costs a compilation).
@pytest.mark.slow
@pytest.mark.parametrize(
  "overrides",
  [
    dict(
      model__carry="none",
      model__remat=False,
      model__self_feed_prob=0.5,
      model__corrupt_prob=0.1,
    ),
    dict(model__latent_passes=2, model__bptt_truncate=2),
  ],
  ids=["carry_none-no_remat-self_feed-corrupt", "latent2-bptt2"],
)
def test_model_variants_train(overrides, tmp_path):
  results = train.train_and_evaluate(_cheap(**overrides), str(tmp_path))
  assert isinstance(results["accuracy"], float)
  assert 0.0 <= results["accuracy"] <= 1.0
  assert results["num_examples"] == 16
  per_pass = results["per_pass_exact_match"]
  if overrides.get("model__latent_passes"):
    # Latent passes write no draft to score.
    assert per_pass[:2] == [None, None]
    assert all(x is not None for x in per_pass[2:])
  assert _ckpt_steps(tmp_path) == [4]


def test_forced_passes_give_the_reference_drafts_and_sample_the_rest(
  smoke_run,
):
  workdir, _ = smoke_run
  config, data, model, mesh, params, _ = evaluate.restore_run(workdir)
  trajs = data.trajectories("valid", 8)
  forced = evaluate.Evaluator(config, data, model, mesh, forced_passes=3)
  res = forced.score(params, trajs)
  # 4x4: four passes; the first three are the references, the last is
  # written by the (barely trained) model from them.
  assert res["per_pass_exact_match"][:3] == [1.0, 1.0, 1.0]
  assert res["num_examples"] == 8
  free = evaluate.Evaluator(config, data, model, mesh).score(params, trajs)
  assert free["per_pass_exact_match"][:3] != [1.0, 1.0, 1.0]
  for bad in (4, -1):
    with pytest.raises(ValueError, match=f"forced_passes={bad}"):
      evaluate.Evaluator(config, data, model, mesh, forced_passes=bad)


# -- Subprocesses --------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _subprocess_compile_cache(tmp_path_factory):
  """Subprocesses share a compilation cache: each program compiles once."""
  with pytest.MonkeyPatch.context() as mp:
    cache = tmp_path_factory.mktemp("jax_cache")
    mp.setenv("JAX_COMPILATION_CACHE_DIR", str(cache))
    mp.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    yield


def _env():
  return subprocess_env()  # one CPU device, the same in every run


def _cli(module, *args):
  """Runs `python -m module args` to completion."""
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=TIMEOUT,
  )


def _train_cmd(workdir, num_steps):
  return [
    sys.executable,
    "-m",
    "bottomup.main",
    f"--config={SMOKE}",
    f"--workdir={workdir}",
    f"--config.train.num_steps={num_steps}",
    "--config.train.checkpoint_every=10",
  ]


def _start(workdir, num_steps, log):
  """Starts a training run in the background, its output going to `log`."""
  with open(log, "w") as out:  # the child keeps its own copy of the file
    return subprocess.Popen(
      _train_cmd(workdir, num_steps),
      cwd=REPO,
      env=_env(),
      stdout=out,
      stderr=subprocess.STDOUT,
    )


def _finish(proc):
  try:
    return proc.wait(timeout=TIMEOUT)
  finally:
    if proc.poll() is None:
      proc.kill()


def _interrupt_after_checkpoint(workdir, num_steps, log, sig):
  """Starts a run and sends `sig` once a checkpoint exists.

  Returns:
    The process, or None when the run finished before any checkpoint was
    seen (the caller then retries with a longer run).
  """
  proc = _start(workdir, num_steps, log)
  deadline = time.time() + TIMEOUT
  while time.time() < deadline:
    if proc.poll() is not None:
      return None
    if set(_ckpt_steps(workdir)) & {10, 20}:
      proc.send_signal(sig)
      _finish(proc)
      return proc
    time.sleep(0.02)
  proc.kill()
  pytest.fail(f"no checkpoint within {TIMEOUT} s; see {log}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """Uninterrupted reference runs: (start, results).

  `start(n)` launches the n-step run in the background (once), so that it
  runs beside the interrupted one; `results(n)` waits for it and returns
  its eval_results.json.
  """
  root = tmp_path_factory.mktemp("uninterrupted")
  procs = {}

  def start(num_steps):
    if num_steps not in procs:
      workdir = root / str(num_steps)
      procs[num_steps] = (
        _start(workdir, num_steps, root / f"{num_steps}.log"),
        workdir,
      )
    return procs[num_steps]

  def results(num_steps):
    proc, workdir = start(num_steps)
    assert _finish(proc) == 0, (root / f"{num_steps}.log").read_text()
    return _read_json(workdir / "eval_results.json")

  yield start, results
  for proc, _ in procs.values():
    if proc.poll() is None:
      proc.kill()


def _interrupted_run(tmp_path, uninterrupted, sig):
  """Interrupts a run with `sig` after a checkpoint; returns its details."""
  start, _ = uninterrupted
  for num_steps in (40, 400):
    start(num_steps)  # the reference run, side by side (2 cores)
    workdir = tmp_path / f"run{num_steps}"
    log = tmp_path / f"run{num_steps}.log"
    proc = _interrupt_after_checkpoint(workdir, num_steps, log, sig)
    if proc is not None:
      return proc, workdir, log, num_steps
  pytest.fail("the run finished before it could be interrupted")


@pytest.mark.slow
def test_sigkill_resume_matches_uninterrupted_run(tmp_path, uninterrupted):
  proc, workdir, log, num_steps = _interrupted_run(
    tmp_path, uninterrupted, signal.SIGKILL
  )
  assert proc.returncode == -signal.SIGKILL
  killed_at = _ckpt_steps(workdir)
  assert killed_at and max(killed_at) < num_steps
  assert not (workdir / "eval_results.json").exists()
  rerun = _cli(*_train_cmd(workdir, num_steps)[2:])
  assert rerun.returncode == 0, rerun.stdout + rerun.stderr
  resumed = re.search(r"Resuming from checkpoint step (\d+)", rerun.stdout)
  assert resumed and 10 <= int(resumed.group(1)) < num_steps, rerun.stdout
  _, results = uninterrupted
  want = results(num_steps)
  assert _read_json(workdir / "eval_results.json") == want


@pytest.mark.slow
def test_sigterm_saves_current_step_and_resumes(tmp_path, uninterrupted):
  proc, workdir, log, num_steps = _interrupted_run(
    tmp_path, uninterrupted, signal.SIGTERM
  )
  out = log.read_text()
  assert proc.returncode == 0, out
  m = re.search(r"SIGTERM: saved step (\d+)", out)
  assert m, out
  saved = int(m.group(1))
  assert 10 <= saved < num_steps
  assert max(_ckpt_steps(workdir)) == saved
  assert not (workdir / "eval_results.json").exists()
  rerun = _cli(*_train_cmd(workdir, num_steps)[2:])
  assert rerun.returncode == 0, rerun.stdout + rerun.stderr
  assert f"Resuming from checkpoint step {saved}" in rerun.stdout
  assert max(_ckpt_steps(workdir)) == num_steps
  _, results = uninterrupted
  assert _read_json(workdir / "eval_results.json") == results(num_steps)


# -- Command-line tools ------------------------------------------------------


def _icot_file(path, num=5):
  task = multiplication.MultiplicationTask(4)
  pairs = task.sample_pairs("test", num, seed=123)
  path.write_text(
    "".join(multiplication.icot_line(a, b, 4) + "\n" for a, b in pairs)
  )
  return path


@pytest.fixture(scope="module")
def cli(smoke_run, tmp_path_factory):
  """Every command-line run on the smoke workdir, two at a time."""
  workdir, _ = smoke_run
  out = tmp_path_factory.mktemp("cli")
  icot = _icot_file(out / "icot_4x4.txt")
  w = f"--workdir={workdir}"
  runs = {
    "eval": ("bottomup.evaluate", w, f"--output={out / 'eval.json'}"),
    "eval_file": (
      "bottomup.evaluate",
      w,
      f"--eval_file={icot}",
      f"--output={out / 'file.json'}",
    ),
    "eval_valid": (
      "bottomup.evaluate",
      w,
      "--split=valid",
      "--num=16",
      f"--output={out / 'valid.json'}",
    ),
    "eval_votes": (
      "bottomup.evaluate",
      w,
      "--split=valid",
      "--num=16",
      "--temperature=1.0",
      "--num_votes=3",
      f"--output={out / 'votes.json'}",
    ),
    "eval_both": (
      "bottomup.evaluate",
      w,
      "--split=valid",
      f"--eval_file={icot}",
    ),
    "sample": ("bottomup.sample", w, "--question=1234*5678"),
    "sample_bad": ("bottomup.sample", w, "--question=12*3"),
    "main_typo": (
      "bottomup.main",
      f"--config={SMOKE}",
      f"--workdir={out / 'typo'}",
      "--config.train.num_stepz=3",
    ),
  }
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    futures = {k: pool.submit(_cli, *v) for k, v in runs.items()}
    done = {k: f.result() for k, f in futures.items()}
  return done, out, icot, workdir


def _ok(proc):
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return proc


def test_evaluate_cli_writes_accuracy(cli):
  done, out, _, _ = cli
  _ok(done["eval"])
  res = _read_json(out / "eval.json")
  assert 0.0 <= res["accuracy"] <= 1.0
  assert res["num_examples"] == _smoke_config().eval.final_num_examples
  assert res["step"] == 20
  assert res["source"] == "test"
  assert "accuracy" in done["eval"].stdout


def test_evaluate_cli_on_icot_file(cli):
  done, out, icot, _ = cli
  _ok(done["eval_file"])
  res = _read_json(out / "file.json")
  assert res["source"] == str(icot)
  assert res["num_examples"] == 5
  assert 0.0 <= res["accuracy"] <= 1.0


def test_evaluate_cli_on_valid_split(cli):
  done, out, _, _ = cli
  _ok(done["eval_valid"])
  res = _read_json(out / "valid.json")
  assert res["source"] == "valid"
  assert res["num_examples"] == 16


def test_evaluate_cli_self_consistency(cli):
  done, out, _, _ = cli
  _ok(done["eval_votes"])
  votes = _read_json(out / "votes.json")
  assert votes["num_examples"] == 16
  assert 0.0 <= votes["accuracy"] <= 1.0
  assert 0.0 <= votes["first_sample_accuracy"] <= 1.0
  # Without voting the two figures are the same by definition.
  single = _read_json(out / "eval.json")
  assert single["accuracy"] == single["first_sample_accuracy"]


def test_evaluate_cli_rejects_split_and_file(cli):
  proc = cli[0]["eval_both"]
  assert proc.returncode != 0
  assert "give --split or --eval_file, not both" in proc.stderr


def test_sample_cli_prints_every_pass(cli):
  proc = _ok(cli[0]["sample"])
  lines = proc.stdout.splitlines()
  assert any(line.startswith("Q: 1234 * 5678") for line in lines)
  passes = [line for line in lines if re.match(r"\s+pass \d+: ", line)]
  assert [p.split(":")[0].strip() for p in passes] == [
    f"pass {t}" for t in range(4)
  ]
  assert sum(line.startswith("answer:") for line in lines) == 1


def test_sample_cli_rejects_malformed_question(cli):
  proc = cli[0]["sample_bad"]
  assert proc.returncode != 0
  assert "needs 4-digit operands" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_main_rejects_misspelt_override(cli):
  done, out, _, _ = cli
  proc = done["main_typo"]
  assert proc.returncode != 0
  assert "num_stepz" in proc.stderr
  assert not (out / "typo" / "checkpoints").exists()
