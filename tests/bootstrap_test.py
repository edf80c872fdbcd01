"""Bootstrap rounds: the verifier filter, the fixed-list stream with hints,
and a two-round run on 2x2 multiplication that grows its kept set and
resumes mid-round from its saved samples."""

import json
import pathlib
import shutil

import numpy as np
import pytest
from runs import read_json, smoke_config

from bottomup import bootstrap, datasets, evaluate
from data_pipelines import batching, views
from data_pipelines import tokenizer as tok_lib
from data_pipelines.tasks import multiplication

TASK = multiplication.MultiplicationTask(2)


def _problem(seed=0):
  return next(iter(TASK.generate("train", num=1, seed=seed, scheme="scale")))


def test_verified_keeps_exactly_the_correct_distinct_samples():
  prob = _problem()
  good = prob.drafts
  wrong_final = [*prob.drafts[:-1], prob.drafts[-1][::-1] + "1"]
  other_good = ["x", *prob.drafts[1:]]  # another path, same final answer
  kept = bootstrap.verified(
    TASK, [prob], [[wrong_final, good, good, other_good, []]], 5
  )[0]
  assert [list(k.drafts) for k in kept] == [list(good), other_good]
  assert all(k.question == prob.question for k in kept)
  assert len({k.id for k in kept}) == 2
  # The cap keeps the first accepted ones.
  one = bootstrap.verified(TASK, [prob], [[wrong_final, other_good, good]], 1)
  assert [list(k.drafts) for k in one[0]] == [other_good]
  # Nothing correct: nothing kept.
  assert bootstrap.verified(TASK, [prob], [[wrong_final]], 3) == [[]]


def test_samples_file_round_trip_and_no_partial_file(tmp_path):
  prob = _problem()
  path = tmp_path / "samples.jsonl"
  bootstrap.write_samples(path, {"kept": 1}, [prob])
  summary, trajs = bootstrap.read_samples(path)
  assert summary == {"kept": 1} and trajs == [prob]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.jsonl"]
  path.write_text(json.dumps({"id": "x"}) + "\n")
  with pytest.raises(ValueError, match="samples.jsonl"):
    bootstrap.read_samples(path)


def _tokenizer(trajs):
  texts = [views.with_hint(TASK, t).question for t in trajs]
  texts += [d for t in trajs for d in t.drafts]
  return tok_lib.Tokenizer.train(texts, model_type="char")


def test_list_stream_epochs_processes_resume_and_hints():
  trajs = list(TASK.generate("train", num=10, seed=3, scheme="scale"))
  tok = _tokenizer(trajs)
  shapes = batching.Shapes(16, 12, 2)
  hinted = [views.with_hint(TASK, t) for t in trajs]

  def stream(**kw):
    args = dict(batch_size=4, seed=1, variants=[hinted], variant_probs=[0.5])
    return batching.ListStream(trajs, tok, shapes, **(args | kw))

  plain, _ = batching.encode_trajectories(trajs, tok, shapes)
  with_hint, _ = batching.encode_trajectories(hinted, tok, shapes)
  row_of = {r.tobytes(): i for i, r in enumerate(plain["drafts"])}
  s = stream()
  batches = [next(s) for _ in range(5)]  # 20 rows = 2 epochs of 10
  ids = [row_of[r.tobytes()] for b in batches for r in b["drafts"]]
  assert sorted(ids[:10]) == list(range(10))
  assert sorted(ids[10:]) == list(range(10))
  assert ids[:10] != ids[10:]  # each epoch is shuffled anew
  # Each question is either its plain or its hinted version; both occur.
  questions = np.concatenate([b["question"] for b in batches])
  is_hint = [
    (q == with_hint["question"][i]).all() for q, i in zip(questions, ids)
  ]
  is_plain = [(q == plain["question"][i]).all() for q, i in zip(questions, ids)]
  assert all(a != b for a, b in zip(is_hint, is_plain))
  assert 0 < sum(is_hint) < len(ids)
  # A restarted stream continues exactly; two processes split each batch.
  again = stream(start_step=3)
  np.testing.assert_array_equal(next(again)["drafts"], batches[3]["drafts"])
  halves = [
    stream(batch_size=2, process_index=p, process_count=2).batch_at(2)
    for p in (0, 1)
  ]
  np.testing.assert_array_equal(
    np.concatenate([h["question"] for h in halves]), batches[2]["question"]
  )


def test_hints_get_room_in_the_question(tmp_path):
  base = datasets.build(smoke_config(data__task="multiplication_2x2"), tmp_path)
  hint = datasets.build(
    smoke_config(data__task="multiplication_2x2", data__hint_prob=0.5),
    tmp_path,
  )
  probs = hint.train_problems(50)
  longest = max(
    len(hint.tokenizer.encode(q.question)) for q in hint.hinted(probs)
  )
  assert longest > base.shapes.max_question_len
  assert hint.shapes.max_question_len >= longest
  # No over-length question once hinted.
  _, counts = batching.encode_trajectories(
    hint.hinted(probs), hint.tokenizer, hint.shapes
  )
  assert counts.questions == 0


def test_rounds_use_the_supervised_problems_trained_on(tmp_path):
  """The rounds' supervised examples are exactly `train_problems(N)`, what
  supervised training read, and their questions are other problems (a
  generated task draws each size afresh: positions in a larger draw are
  not those problems)."""
  data = datasets.build(
    smoke_config(data__task="multiplication_4x4", data__train_examples=20),
    tmp_path,
  )
  trained = [t.question for t in data.train_problems(20)]
  sup, questions, more = data.problems_after(20, (30, 10))
  assert [t.question for t in sup] == trained
  assert [len(questions), len(more)] == [30, 10]
  groups = [{t.question for t in g} for g in (sup, questions, more)]
  assert sum(map(len, groups)) == len(set.union(*groups)) == 60
  again = data.problems_after(20, (30, 10))  # recomputable
  assert [t.question for t in again[2]] == [t.question for t in more]


def test_rationalize_without_hints_is_rejected(tmp_path):
  cfg = smoke_config(bootstrap__rounds=1)
  with pytest.raises(ValueError, match="hint_prob"):
    bootstrap.run(cfg, tmp_path)


def test_stage_config_evaluates_periodically_only_when_asked():
  cfg = smoke_config(bootstrap__rounds=2, train__num_steps=40)
  stage = bootstrap._stage_config(cfg, 300)
  assert stage.train.num_steps == 300
  assert stage.eval.every_steps == 300  # the final evaluation only
  assert stage.eval.final_split == "valid" and stage.bootstrap.rounds == 0
  cfg.bootstrap.stage_eval_every = 50
  assert bootstrap._stage_config(cfg, 300).eval.every_steps == 50


def test_a_preempted_stage_stops_the_run(tmp_path, monkeypatch):
  """SIGTERM in a stage (train_and_evaluate returns None): nothing after
  it runs, so no evaluation or samples of the unfinished model are written
  and later reused as if it were finished."""
  calls = []

  def preempted(config, workdir, **kwargs):
    calls.append(pathlib.Path(workdir))
    return None

  monkeypatch.setattr(bootstrap.train, "train_and_evaluate", preempted)
  cfg = smoke_config(
    data__task="multiplication_2x2",
    data__train_examples=64,
    data__hint_prob=0.25,
    bootstrap__rounds=1,
  )
  # In supervised training.
  assert bootstrap.run(cfg, tmp_path / "a") is None
  assert calls == [tmp_path / "a" / "supervised"]
  assert not (tmp_path / "a" / "supervised_valid.json").exists()
  assert not (tmp_path / "a" / "round_1").exists()
  # In a round's fine-tuning (the supervised model given).
  base = tmp_path / "base"
  base.mkdir()
  (base / "config.json").write_text(json.dumps(cfg.to_dict()))
  monkeypatch.setattr(bootstrap, "_evaluate", lambda *a: {"accuracy": 0.5})
  monkeypatch.setattr(
    bootstrap,
    "_sample_round",
    lambda *a: (
      dict(accepted_questions=0, attempted_questions=0, rationalized=0, kept=0),
      [],
    ),
  )
  cfg.bootstrap.init_workdir = str(base)
  assert bootstrap.run(cfg, tmp_path / "b") is None
  assert calls[-1] == tmp_path / "b" / "round_1"
  assert not (tmp_path / "b" / "rounds.json").exists()
  assert not (tmp_path / "b" / "eval_results.json").exists()


def _toy_config():
  """2x2 multiplication from 256 solved problems, then two rounds on 124
  unsolved ones (Measured: accepted 6 -> 12 questions)."""
  return smoke_config(
    data__task="multiplication_2x2",
    data__train_examples=256,
    data__hint_prob=0.25,
    train__num_steps=1500,
    train__batch_size=32,
    train__log_every=100,
    train__progress_bar=False,
    optim__warmup_steps=20,
    bootstrap__rounds=2,
    bootstrap__num_questions=128,
    bootstrap__steps_per_round=300,
    bootstrap__temperature=0.7,
  )


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("bootstrap")
  final = bootstrap.run(_toy_config(), workdir)
  return workdir, final


@pytest.mark.slow
def test_rounds_grow_the_kept_set_and_are_logged(toy_run):
  workdir, final = toy_run
  rounds = read_json(workdir / "rounds.json")
  assert [r["round"] for r in rounds] == [0, 1, 2]
  r1, r2 = rounds[1], rounds[2]
  # The 2x2 space is small: questions seen in supervision are dropped.
  assert r1["attempted_questions"] <= 128
  assert r1["samples"] == 4 * r1["attempted_questions"]
  assert r2["accepted_questions"] > r1["accepted_questions"]
  assert r2["kept"] > r1["kept"]
  for r in (r1, r2):
    assert r["yield"] == pytest.approx(
      r["accepted_questions"] / r["attempted_questions"], abs=1e-4
    )
    assert r["train_size"] == r["kept"] + 256
    assert 0 <= r["valid_accuracy"] <= 1 and r["train_loss"] > 0
  assert final["rounds"] == rounds
  assert read_json(workdir / "eval_results.json")["num_examples"] == 64
  # The kept solutions are verified and stored without the hint.
  _, kept = bootstrap.read_samples(workdir / "round_1" / "samples.jsonl")
  assert len(kept) == r1["kept"]
  for t in kept:
    assert TASK.verify(t.drafts[-1], t.answer)
    assert views.HINT_SEP not in t.question


def test_resume_mid_round_reuses_the_saved_samples(toy_run, monkeypatch):
  workdir, _ = toy_run
  before = read_json(workdir / "rounds.json")
  r2 = workdir / "round_2"
  # Killed after sampling, before fine-tuning finished.
  shutil.rmtree(r2 / "checkpoints")
  (r2 / "eval_results.json").unlink()
  (workdir / "eval_results.json").unlink()

  def no_sampling(*args, **kwargs):
    raise AssertionError("the saved samples should have been reused")

  monkeypatch.setattr(bootstrap, "_sample_round", no_sampling)
  final = bootstrap.run(_toy_config(), workdir)
  after = read_json(workdir / "rounds.json")
  assert after[2]["kept"] == before[2]["kept"]
  assert after[2]["valid_accuracy"] == before[2]["valid_accuracy"]
  assert (
    final["accuracy"] == read_json(workdir / "eval_results.json")["accuracy"]
  )


def test_a_round_with_nothing_to_learn_keeps_the_previous_model(
  toy_run, tmp_path, monkeypatch
):
  workdir, _ = toy_run
  cfg = _toy_config()
  with cfg.unlocked():
    cfg.data.train_examples = 0  # no supervised examples to fall back on
    cfg.bootstrap.rounds = 1
    cfg.bootstrap.rationalize = False
    cfg.bootstrap.init_workdir = str(workdir / "supervised")

  def nothing_verified(config, prev, questions, seed):
    n = len(questions)
    return (
      dict(
        attempted_questions=n,
        samples=4 * n,
        accepted_questions=0,
        rationalized=0,
        kept=0,
        **{"yield": 0.0},
      ),
      [],
    )

  monkeypatch.setattr(bootstrap, "_sample_round", nothing_verified)
  final = bootstrap.run(cfg, tmp_path)
  r0, r1 = read_json(tmp_path / "rounds.json")
  assert r1["train_size"] == 0 and r1["workdir"] == r0["workdir"]
  assert r1["valid_accuracy"] == r0["valid_accuracy"]
  assert not (tmp_path / "round_1" / "checkpoints").exists()
  assert final["num_examples"] == 64


def test_control_rounds_fine_tune_on_the_supervised_examples_only(
  toy_run, tmp_path, monkeypatch
):
  workdir, _ = toy_run
  cfg = _toy_config()
  with cfg.unlocked():
    cfg.bootstrap.rounds = 1
    cfg.bootstrap.samples_per_question = 0
    cfg.bootstrap.steps_per_round = 10
    cfg.bootstrap.init_workdir = str(workdir / "supervised")
  with pytest.raises(ValueError, match="rationalize=False"):
    bootstrap.run(cfg, tmp_path)
  with cfg.unlocked():
    cfg.bootstrap.rationalize = False
  monkeypatch.setattr(
    evaluate,
    "restore_run",
    lambda *a, **k: (_ for _ in ()).throw(AssertionError("no sampling")),
  )
  monkeypatch.setattr(
    bootstrap,
    "_evaluate",
    lambda *a, **k: dict(accuracy=0.5, num_correct=1, num_examples=2),
  )
  bootstrap.run(cfg, tmp_path)
  r0, r1 = read_json(tmp_path / "rounds.json")
  assert r1["samples"] == 0 and r1["kept"] == 0
  assert r1["train_size"] == 256  # the supervised examples alone
  assert (tmp_path / "round_1" / "checkpoints").exists()
