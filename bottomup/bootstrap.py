"""Bootstrap rounds (STaR): the model improves itself on unsolved questions.

    python -m bottomup.main --config=experiments/FILE.py \
        --config.bootstrap.rounds=R --workdir=DIR

runs, in DIR (DESIGN §4):

    supervised/   supervised training (`train_and_evaluate`, valid eval), or
                  the workdir `bootstrap.init_workdir` when given;
    round_r/      round r = 1..R:
      samples.jsonl  k solutions sampled (temperature, top-p) for each
                     unsolved training question by the previous model,
                     verified against the question's answer; the accepted
                     ones (at most `keep_per_question` distinct per
                     question) and, for questions with none, rationalized
                     ones (sampled with the answer as a hint in the
                     question, verified, stored without the hint);
      checkpoints/   fine-tuning on the kept solutions (plus the supervised
                     examples), from the supervised model or from the
                     previous round's (`finetune_from`);
      eval_results.json  its valid-split evaluation;
                     A round with nothing to learn from (no verified
                     solution, no supervised example) keeps the previous
                     model;
    rounds.json   one record per round: yield (accepted / attempted),
                  rationalized, training-set size, train loss, valid
                  accuracy (round 0 = the supervised model);
    eval_results.json  the final model on `eval.final_split` (the test
                  split), evaluated once at the end.

Rerunning the command resumes: finished stages are skipped, a round whose
samples were written reuses them (they are written atomically), and
fine-tuning resumes from its own checkpoints.

The unsolved questions are `bootstrap.num_questions` training problems
other than the `data.train_examples` supervised ones
(`datasets.Data.problems_after`): only their answers are read, never their
solutions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil

import jax
import ml_collections
from jax.experimental import multihost_utils

from bottomup import datasets, evaluate, metrics, train
from data_pipelines.trajectory import Task, Trajectory

SAMPLES_FILE = "samples.jsonl"
ROUNDS_FILE = "rounds.json"


# -- Verification --------------------------------------------------------------


def verified(
  task: Task,
  problems: list[Trajectory],
  sampled: list[list[list[str]]],
  keep_per_question: int,
) -> list[list[Trajectory]]:
  """The verified solutions of each problem, distinct, at most `keep`.

  Args:
    task: the task (its verifier reads the final draft).
    problems: the questions with their reference answers.
    sampled: per problem, its sampled solutions (each a list of drafts).
    keep_per_question: how many distinct accepted solutions to keep.

  Returns:
    Per problem, the kept solutions as trajectories of the problem's
    question (in sampling order).
  """
  out = []
  for prob, sols in zip(problems, sampled, strict=True):
    kept, seen = [], set()
    for drafts in sols:
      if len(kept) >= keep_per_question:
        break
      key = tuple(drafts)
      if not drafts or key in seen or not task.verify(drafts[-1], prob.answer):
        continue
      seen.add(key)
      kept.append(
        dataclasses.replace(
          prob, id=f"{prob.id}/s{len(kept)}", drafts=tuple(drafts)
        )
      )
    out.append(kept)
  return out


# -- Files ---------------------------------------------------------------------


def write_samples(path: pathlib.Path, record: dict, trajs) -> None:
  """Writes a round's kept solutions atomically (tmp file + rename)."""
  tmp = path.with_name(path.name + ".tmp")
  with tmp.open("w") as f:
    f.write(json.dumps({"summary": record}) + "\n")
    for t in trajs:
      f.write(json.dumps(dataclasses.asdict(t)) + "\n")
  os.replace(tmp, path)


def read_samples(path: pathlib.Path) -> tuple[dict, list[Trajectory]]:
  """A round's samples file: (summary record, kept trajectories)."""
  lines = path.read_text().splitlines()
  if not lines or "summary" not in json.loads(lines[0]):
    raise ValueError(f"{path}: not a samples file (no summary line)")
  trajs = [
    Trajectory.from_json(json.loads(x), where=f"{path}:{i + 2}")
    for i, x in enumerate(lines[1:])
  ]
  return json.loads(lines[0])["summary"], trajs


def _write_json(path: pathlib.Path, obj) -> None:
  if jax.process_index() == 0:
    metrics.write_json(path, obj)


def _last_train_loss(workdir: pathlib.Path) -> float | None:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return None
  loss = None
  for line in path.read_text().splitlines():
    rec = json.loads(line)
    if "loss" in rec:
      loss = rec["loss"]
  return loss


# -- Rounds --------------------------------------------------------------------


def _stage_config(config, num_steps: int):
  """A copy of `config` for a stage: `num_steps`, final eval on valid."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.train.num_steps = num_steps
  c.eval.final_split = "valid"
  c.eval.final_num_examples = config.eval.num_examples
  every = config.bootstrap.get("stage_eval_every", 0)
  c.eval.every_steps = every if every > 0 else num_steps
  c.bootstrap.rounds = 0
  return c


def _sample_round(config, model_dir, problems, seed):
  """Samples, verifies and rationalizes with the model of `model_dir`.

  Returns:
    (summary record, kept trajectories).
  """
  b = config.bootstrap
  if b.samples_per_question == 0:  # the control: no self-generated data
    record = dict(
      attempted_questions=0,
      samples=0,
      accepted_questions=0,
      **{"yield": 0.0},
      rationalized=0,
      kept=0,
    )
    return record, []
  cfg, data, model, mesh, params, _ = evaluate.restore_run(
    model_dir,
    dict(
      temperature=b.temperature,
      top_p=b.top_p,
      num_samples=1,
      num_votes=1,
      extra_passes=0,
    ),
  )
  with jax.set_mesh(mesh):
    ev = evaluate.Evaluator(cfg, data, model, mesh)
    rng = jax.random.key(seed)
    tries = []
    for _ in range(b.samples_per_question):
      rng, key = jax.random.split(rng)
      tries.append(ev.solve(params, problems, key))
    sampled = [list(s) for s in zip(*tries)]
    kept = verified(data.task, problems, sampled, b.keep_per_question)
    accepted_q = sum(1 for k in kept if k)
    rationalized = 0
    failed = [i for i, k in enumerate(kept) if not k]
    if b.rationalize and failed:
      hinted = data.hinted([problems[i] for i in failed])
      rng, key = jax.random.split(rng)
      retry = ev.solve(params, hinted, key)
      again = verified(
        data.task, [problems[i] for i in failed], [[d] for d in retry], 1
      )
      for i, k in zip(failed, again):
        for t in k:  # stored with the original question, no hint
          kept[i].append(dataclasses.replace(t, id=t.id + "/rationalized"))
          rationalized += 1
  flat = [t for k in kept for t in k]
  record = dict(
    attempted_questions=len(problems),
    samples=len(problems) * b.samples_per_question,
    accepted_questions=accepted_q,
    **{"yield": round(accepted_q / max(len(problems), 1), 4)},
    rationalized=rationalized,
    kept=len(flat),
  )
  return record, flat


def _check(config) -> None:
  b = config.bootstrap
  if b.finetune_from not in ("base", "previous"):
    raise ValueError(
      f"bootstrap.finetune_from must be base|previous, got {b.finetune_from!r}"
    )
  if b.rationalize and not config.data.hint_prob:
    raise ValueError(
      "bootstrap.rationalize needs data.hint_prob > 0: the model must have "
      "seen answer hints in training to use one (or set "
      "--config.bootstrap.rationalize=False)"
    )
  if b.samples_per_question < 0 or b.keep_per_question < 1:
    raise ValueError(
      "bootstrap.samples_per_question must be >= 0 and keep_per_question >= 1"
    )
  if b.samples_per_question == 0 and (
    b.rationalize or not b.include_supervised
  ):
    raise ValueError(
      "bootstrap.samples_per_question=0 (the control: rounds fine-tune on "
      "the supervised examples only) needs rationalize=False and "
      "include_supervised=True"
    )
  if b.num_questions < 1:
    raise ValueError("bootstrap.num_questions must be >= 1")


def run(config: ml_collections.ConfigDict, workdir) -> dict | None:
  """Supervised training, then `bootstrap.rounds` rounds (module docstring).

  Returns:
    The final evaluation (also in WORKDIR/eval_results.json), with the
    rounds' records under "rounds"; None when a stage was stopped by
    SIGTERM (its checkpoint saved: rerunning resumes it).
  """
  _check(config)
  b = config.bootstrap
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  _write_json(workdir / "config.json", config.to_dict())

  # Round 0: the supervised model.
  if b.get("init_workdir"):
    base = pathlib.Path(b.init_workdir)
  else:
    base = workdir / "supervised"
    if not (base / "eval_results.json").exists():
      result = train.train_and_evaluate(
        _stage_config(config, config.train.num_steps), base
      )
      if result is None:
        return _preempted(base)
  base_valid = workdir / "supervised_valid.json"
  if base_valid.exists():
    base_eval = json.loads(base_valid.read_text())
  else:
    base_eval = _evaluate(base, "valid", config.eval.num_examples)
    _write_json(base_valid, base_eval)
  records = [
    dict(
      round=0,
      workdir=str(base),
      train_loss=_last_train_loss(base),
      valid_accuracy=base_eval["accuracy"],
    )
  ]

  # The questions: the training problems after the supervised ones.
  # Only the data is needed (no parameters): the base run's tokenizer.
  data = datasets.build(
    ml_collections.ConfigDict(json.loads((base / "config.json").read_text())),
    base,
  )
  supervised, questions = data.problems_after(
    int(config.data.train_examples), (b.num_questions,)
  )

  prev = base
  for r in range(1, b.rounds + 1):
    rdir = workdir / f"round_{r}"
    rdir.mkdir(exist_ok=True)
    samples = rdir / SAMPLES_FILE
    if samples.exists():
      record, kept = read_samples(samples)
      print(f"round {r}: reusing {len(kept)} saved solutions", flush=True)
    else:
      record, kept = _sample_round(config, prev, questions, config.seed + r)
      if jax.process_index() == 0:
        write_samples(samples, record, kept)
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"bootstrap samples {r}")
    print(
      f"round {r}: accepted {record['accepted_questions']}/"
      f"{record['attempted_questions']} questions, rationalized "
      f"{record['rationalized']}, kept {record['kept']} solutions",
      flush=True,
    )
    train_set = kept + (supervised if b.include_supervised else [])
    if not train_set:
      # Nothing to learn from: the round keeps the previous model (more
      # samples_per_question, a higher temperature or a longer supervised
      # phase may help).
      print(
        f"round {r}: no verified solution and no supervised example: the "
        "previous model is kept",
        flush=True,
      )
      records.append(
        dict(
          round=r,
          workdir=str(prev),
          **record,
          train_size=0,
          train_loss=None,
          valid_accuracy=records[-1]["valid_accuracy"],
        )
      )
      _write_json(workdir / ROUNDS_FILE, records)
      continue
    if not (rdir / "eval_results.json").exists():
      spm = base / "spm.model"
      if spm.exists() and not (rdir / "spm.model").exists():
        shutil.copy(spm, rdir / "spm.model")
      if (
        train.train_and_evaluate(
          _stage_config(config, b.steps_per_round),
          rdir,
          train_trajs=train_set,
          init_from=base if b.finetune_from == "base" else prev,
        )
        is None
      ):
        return _preempted(rdir)
    valid = json.loads((rdir / "eval_results.json").read_text())
    records.append(
      dict(
        round=r,
        workdir=str(rdir),
        **record,
        train_size=len(train_set),
        train_loss=_last_train_loss(rdir),
        valid_accuracy=valid["accuracy"],
      )
    )
    _write_json(workdir / ROUNDS_FILE, records)
    prev = rdir

  _write_json(workdir / ROUNDS_FILE, records)
  final = _evaluate(
    prev, config.eval.final_split, config.eval.final_num_examples
  )
  final["rounds"] = records
  _write_json(workdir / "eval_results.json", final)
  print(
    f"\nbootstrap: valid accuracy per round "
    f"{[r['valid_accuracy'] for r in records]}; final "
    f"{config.eval.final_split} accuracy {final['accuracy']:.4f} "
    f"({final['num_correct']}/{final['num_examples']})",
    flush=True,
  )
  return final


def _preempted(stage_dir) -> None:
  """A stage stopped by SIGTERM (its checkpoint saved): nothing after it
  runs, so no evaluation or samples of the unfinished model are written
  (and later reused) as if it were finished."""
  print(
    f"bootstrap: stopped in {stage_dir}; rerun the same command to resume.",
    flush=True,
  )
  return None


def _evaluate(model_dir, split: str, num: int) -> dict:
  """Accuracy of the latest checkpoint of `model_dir` on `split`."""
  config, data, model, mesh, params, step = evaluate.restore_run(model_dir)
  with jax.set_mesh(mesh):
    ev = evaluate.Evaluator(config, data, model, mesh)
    results = ev.run(params, split, num)
  results["step"] = step
  results.pop("problems_per_second", None)
  return results
