"""Process reward model: metrics, loss on hand-made data, beam selection,
forced-prefix rollouts, and the rollouts -> train -> guided-evaluate path."""

import dataclasses
import itertools
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import REPO_ROOT
from runs import read_json, smoke_config, subprocess_env

from bottomup import datasets, prm, prm_metrics, sampling, train
from bottomup.models import prm as prm_lib
from bottomup.models.refiner import Refiner, RefinerConfig


def test_auroc_matches_pairwise_count():
  assert prm_metrics.auroc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
  assert prm_metrics.auroc([0.1, 0.2, 0.9], [1, 1, 0]) == 0.0
  assert prm_metrics.auroc([0.5, 0.5], [1, 0]) == 0.5
  assert np.isnan(prm_metrics.auroc([0.1, 0.2], [1, 1]))
  rng = np.random.default_rng(0)
  s = rng.integers(0, 5, 40) / 4  # many ties
  y = rng.random(40) < 0.4
  pairs = [
    1.0 if a > b else 0.5 if a == b else 0.0
    for (a, la), (b, lb) in itertools.product(zip(s, y), repeat=2)
    if la and not lb
  ]
  assert prm_metrics.auroc(s, y) == pytest.approx(np.mean(pairs))


def test_calibration_by_hand():
  out = prm_metrics.calibration([1.0, 0.25], np.array([[1.0, 1.0], [0.0, 1.0]]))
  # (0 + 0 + 0.0625 + 0.5625) / 4
  assert out["brier"] == pytest.approx(0.15625)
  assert out["base_rate"] == pytest.approx(0.75)
  assert out["brier_base_rate"] == pytest.approx((3 * 0.0625 + 0.5625) / 4)
  # Positives 1, 1, 0.25 vs the negative 0.25: (1 + 1 + 0.5) / 3.
  assert out["auroc"] == pytest.approx(2.5 / 3)
  assert prm_metrics.calibration([0.5], np.array([[1.0]]))["auroc"] is None


def _prm(vocab=30):
  cfg = ml_collections.ConfigDict(
    dict(d_model=16, num_heads=2, mlp_dim=32, num_layers=1)
  )
  return prm_lib.make_prm(cfg, vocab, digit_ids=tuple(range(21, 30)))


def test_prm_learns_hand_made_values():
  """Drafts that contain token 25 are worth 0.9, the others 0.1: the
  trained PRM separates them, and its loss at the start is log 2-ish."""
  rng = np.random.default_rng(0)
  n = 256
  draft = rng.integers(21, 25, (n, 6)).astype(np.int32)
  good = rng.random(n) < 0.5
  draft[good, 2] = 25
  arrays = dict(
    question=rng.integers(21, 30, (n, 5)).astype(np.int32),
    draft=draft,
    t=rng.integers(0, 3, n).astype(np.int32),
    value=np.where(good, 0.9, 0.1).astype(np.float32),
  )
  module = _prm()
  cfg = ml_collections.ConfigDict(
    dict(steps=150, batch_size=64, learning_rate=3e-3)
  )
  params, info = prm.train_prm(module, arrays, cfg, seed=0)
  loss = info["final_loss"]
  assert info["best_step"] == 150 and info["holdout_loss"] is None
  # Cross-entropy against 0.1/0.9 targets is at least their entropy.
  entropy = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
  assert entropy - 1e-3 < loss < entropy + 0.05
  p = prm.predict(module, params, arrays)
  assert p[good].min() > p[~good].max()  # AUROC 1
  assert abs(p[good].mean() - 0.9) < 0.1 and abs(p[~good].mean() - 0.1) < 0.1
  scores = prm_lib.prm_logits(
    module,
    params,
    jnp.asarray(arrays["question"][:2]),
    jnp.asarray(arrays["draft"][:6]).reshape(2, 3, 6),
    1,
  )
  assert scores.shape == (2, 3)


def test_ranking_accuracy_by_hand():
  # Problem 0: values 1 > 0.5 > 0, scores agree on 2 of 3 pairs;
  # problem 1: equal values make no pair; problem 2: a score tie.
  acc, pairs = prm_metrics.ranking_accuracy(
    scores=[0.9, 0.2, 0.5, 0.3, 0.4, 0.7, 0.7],
    values=[1.0, 0.5, 0.0, 1.0, 1.0, 0.25, 0.75],
    groups=[0, 0, 0, 1, 1, 2, 2],
  )
  assert pairs == 4
  assert acc == pytest.approx((2 + 0.5) / 4)
  assert prm_metrics.ranking_accuracy([0.1], [1.0], [0]) == (None, 0)


def test_saved_rollouts_are_reused_only_under_the_same_settings(tmp_path):
  cfg = ml_collections.ConfigDict(
    dict(num_problems=2, samples_per_problem=1, valid_problems=1, rollouts=2)
  )
  cfg.temperature, cfg.top_p = 0.7, 0.95
  tr = dict(t=np.arange(3), value=np.array([0.0, 0.5, 1.0]))
  va = dict(t=np.arange(2), value=np.array([1.0, 0.0]))
  path = tmp_path / "prm" / prm.ROLLOUTS_FILE
  key = prm.rollouts_key(cfg, refiner_step=100)
  prm.save_rollouts(path, key, tr, va)
  got_tr, got_va = prm.load_rollouts(path, key)
  for want, got in ((tr, got_tr), (va, got_va)):
    assert set(got) == set(want)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  assert prm.load_rollouts(path, prm.rollouts_key(cfg, 200)) == (None, None)
  cfg.rollouts = 4
  assert prm.load_rollouts(path, prm.rollouts_key(cfg, 100)) == (None, None)
  assert prm.load_rollouts(tmp_path / "none.npz", key) == (None, None)
  assert [f.name for f in path.parent.iterdir()] == [prm.ROLLOUTS_FILE]


def test_rollout_problems_skip_the_ones_the_refiner_trained_on(tmp_path):
  cfg = smoke_config(data__train_examples=20, bootstrap__num_questions=30)
  data = datasets.build(cfg, tmp_path)
  got = prm.unseen_train_problems(cfg, data, 10)
  assert len(got) == 10
  trained = {t.question for t in data.train_problems(20)}  # what it read
  sup, questions = data.problems_after(20, (30,))  # the rounds' questions
  assert {t.question for t in sup} == trained and len(questions) == 30
  assert not {t.question for t in got} & (
    trained | {t.question for t in questions}
  )
  fresh = smoke_config()  # fresh problems every step: none skipped
  assert fresh.data.train_examples == 0
  data = datasets.build(fresh, tmp_path)
  got = prm.unseen_train_problems(fresh, data, 10)
  assert [t.question for t in got] == [
    t.question for t in data.train_problems(10)
  ]


def test_split_by_problem_holds_out_whole_problems():
  arrays = dict(
    problem=np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4]),
    t=np.array([0] * 5 + [1] * 5),
  )
  fit, hold = prm.split_by_problem(arrays, 0.4)
  np.testing.assert_array_equal(hold["problem"], [3, 4, 3, 4])
  np.testing.assert_array_equal(fit["problem"], [0, 1, 2, 0, 1, 2])
  np.testing.assert_array_equal(hold["t"], [0, 0, 1, 1])
  assert prm.split_by_problem(arrays, 0.0)[1] is None


def test_early_stopping_keeps_the_best_held_out_parameters():
  """Values are coin flips per question: all there is to learn is noise, so
  the held-out loss rises once the PRM memorises the fit set; the kept
  parameters are those of the best check, and their held-out loss is it."""
  rng = np.random.default_rng(1)
  n = 96
  arrays = dict(
    question=rng.integers(21, 30, (n, 5)).astype(np.int32),
    draft=rng.integers(21, 30, (n, 6)).astype(np.int32),
    t=np.zeros(n, np.int32),
    value=(rng.random(n) < 0.5).astype(np.float32),
    problem=np.arange(n),
  )
  fit, hold = prm.split_by_problem(arrays, 0.25)
  module = _prm()
  cfg = ml_collections.ConfigDict(
    dict(steps=300, batch_size=32, learning_rate=3e-3, eval_every=20)
  )
  params, info = prm.train_prm(module, fit, cfg, seed=0, holdout=hold)
  losses = [h for _, h in info["curve"]]
  assert [s for s, _ in info["curve"]] == list(range(20, 301, 20))
  assert info["holdout_loss"] == pytest.approx(min(losses), abs=1e-5)
  assert info["best_step"] == info["curve"][int(np.argmin(losses))][0]
  assert info["best_step"] < 300 and losses[-1] > min(losses)
  p = prm.predict(module, params, hold)
  y = hold["value"]
  bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
  assert bce == pytest.approx(info["holdout_loss"], rel=1e-4)


def test_select_beam_by_hand():
  # B=2 questions x W=2 beams, N=3 samples each: rows (q0b0, q0b1, q1b0, q1b1).
  tokens = jnp.arange(4 * 3)[:, None, None] * jnp.ones((1, 1, 2), int)
  tokens = tokens.reshape(4, 3, 2)
  logprob = -jnp.arange(12.0).reshape(4, 3)
  scores = jnp.array(
    [[0.1, 0.9, 0.2], [0.8, 0.0, 0.95], [0.3, 0.1, 0.2], [0.0, 0.4, 0.35]]
  )
  cands = sampling.Candidates(jnp.zeros((4, 1), int), tokens, logprob, 1)
  tok, lp, sc, parent = sampling.select_beam(cands, scores, 2, first=False)
  # Question 0: 0.95 (row 1, sample 2) then 0.9 (row 0, sample 1);
  # question 1: both from its beam 1 (row 3), 0.4 and 0.35.
  np.testing.assert_array_equal(tok[:, 0], [5, 1, 10, 11])
  np.testing.assert_array_equal(parent, [1, 0, 3, 3])
  np.testing.assert_allclose(sc, [0.95, 0.9, 0.4, 0.35])
  np.testing.assert_allclose(lp, [-5, -1, -10, -11])
  # First written pass: the beams are copies, only beam 0's samples count.
  tok, _, _, parent = sampling.select_beam(cands, scores, 2, first=True)
  np.testing.assert_array_equal(tok[:, 0], [1, 2, 6, 8])
  np.testing.assert_array_equal(parent, [0, 0, 2, 2])


@pytest.fixture(scope="module")
def refiner():
  cfg = RefinerConfig(
    vocab_size=40,
    d_model=32,
    num_heads=2,
    mlp_dim=64,
    num_encoder_layers=2,
    num_decoder_layers=1,
    num_slots=2,
    compute_dtype="float32",
    digit_ids=tuple(range(21, 31)),
  )
  model = Refiner(cfg)
  q = jax.random.randint(jax.random.key(1), (4, 6), 21, 40)
  d = jax.random.randint(jax.random.key(2), (4, 3, 8), 21, 40)
  v = model.init({"params": jax.random.key(0)}, q, d, jnp.full((4,), 3))
  return model, flax.linen.meta.unbox(v["params"]), q


def test_prm_starts_from_the_refiners_encoder(refiner):
  model, params, q = refiner
  small = ml_collections.ConfigDict(
    dict(d_model=16, num_heads=2, mlp_dim=32, num_layers=1)
  )
  cfg = prm_lib.refiner_sized(
    small, ml_collections.ConfigDict(dataclasses.asdict(model.cfg))
  )
  assert (cfg.d_model, cfg.mlp_dim, cfg.num_layers) == (32, 64, 2)
  assert small.d_model == 16  # a copy
  module = prm_lib.make_prm(cfg, 40, model.cfg.digit_ids)
  n = 8
  rng = np.random.default_rng(0)
  arrays = dict(
    question=rng.integers(21, 40, (n, 6)).astype(np.int32),
    draft=rng.integers(21, 40, (n, 8)).astype(np.int32),
    t=rng.integers(0, 3, n).astype(np.int32),
    value=rng.random(n).astype(np.float32),
  )
  # One step at learning rate 0: the kept parameters are the start.
  zero = ml_collections.ConfigDict(
    dict(steps=1, batch_size=4, learning_rate=0.0)
  )
  warm, _ = prm.train_prm(
    module,
    arrays,
    zero,
    seed=1,
    init=lambda p: prm_lib.refiner_parts(p, params),
  )
  cold, _ = prm.train_prm(module, arrays, zero, seed=1)
  for name in prm_lib.REFINER_PARTS:
    jax.tree.map(np.testing.assert_array_equal, warm[name], params[name])
  for name in set(cold) - set(prm_lib.REFINER_PARTS):  # its own head
    jax.tree.map(np.testing.assert_array_equal, warm[name], cold[name])
  differs = jax.tree.map(
    lambda a, b: not np.array_equal(a, b), cold["encoder"], params["encoder"]
  )
  assert any(jax.tree.leaves(differs))  # a cold start is not the refiner
  # A PRM of other sizes is refused, naming the parameter.
  other = flax.linen.meta.unbox(
    _prm(40).init(jax.random.key(0), q[:2], q[:2], jnp.zeros((2,), jnp.int32))
  )["params"]
  with pytest.raises(ValueError, match="token_embed"):
    prm_lib.refiner_parts(other, params)


def test_forced_prefix_continues_the_trajectory(refiner):
  model, params, q = refiner
  cfg = sampling.SamplingConfig(max_draft_len=8, trained_passes=3)
  rng = jax.random.key(0)
  greedy = sampling.refine(model, params, q, cfg, rng).drafts
  for k in (1, 2):
    # Greedy continuation of its own prefix: the same trajectory.
    again = sampling.refine(model, params, q, cfg, rng, forced=greedy[:, :k])
    np.testing.assert_array_equal(again.drafts, greedy)
  # Another prefix is kept verbatim and changes what follows.
  other = jnp.roll(greedy[:, :1], 1, axis=0)
  cont = sampling.refine(model, params, q, cfg, rng, forced=other)
  np.testing.assert_array_equal(cont.drafts[:, 0], other[:, 0])
  assert not np.array_equal(cont.drafts[:, 1:], greedy[:, 1:])


def test_beam_search_runs_and_one_beam_is_plain_selection(refiner):
  model, params, q = refiner
  base = dict(max_draft_len=8, trained_passes=3, temperature=1.0)
  rng = jax.random.key(4)
  one = sampling.refine(
    model, params, q, sampling.SamplingConfig(**base, num_samples=3), rng
  )
  also = sampling.refine(
    model,
    params,
    q,
    sampling.SamplingConfig(**base, num_samples=3, beam_width=1),
    rng,
  )
  np.testing.assert_array_equal(one.drafts, also.drafts)
  wide = sampling.refine(
    model,
    params,
    q,
    sampling.SamplingConfig(**base, num_samples=3, beam_width=2),
    rng,
  )
  assert wide.drafts.shape == one.drafts.shape
  with pytest.raises(ValueError, match="extra_passes"):
    sampling.SamplingConfig(**base, beam_width=2, extra_passes=1)
  with pytest.raises(ValueError, match="prm"):
    sampling.SamplingConfig(**base, selection="prm")


@pytest.mark.slow
def test_rollouts_train_and_guided_evaluation(tmp_path):
  """A smoke refiner: PRM rollouts + training write their files; evaluate
  then ranks samples by the PRM with a beam, from its flags."""
  workdir = tmp_path / "run"
  train.train_and_evaluate(smoke_config(train__progress_bar=False), workdir)
  cfg = prm.default_config()
  cfg.update(
    dict(num_problems=16, valid_problems=8, rollouts=2, steps=10, batch_size=8)
  )
  results = prm.run(workdir, cfg)
  assert results["train_drafts"] > 0
  # 16 problems x 2 samples: 3 problems (all their drafts) held out.
  assert cfg.samples_per_problem == 2 and cfg.holdout_fraction == 0.2
  assert results["holdout_drafts"] * 13 == results["train_drafts"] * 3
  assert results["valid"]["ranking_pairs"] >= 0
  assert 0 <= results["valid"]["brier"] <= 1
  assert (workdir / "prm" / prm.PARAMS_FILE).exists()
  assert (
    read_json(workdir / "prm" / "prm_results.json")["valid"]
    == (results["valid"])
  )
  env = subprocess_env()
  out = tmp_path / "guided.json"
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "bottomup.evaluate",
      f"--workdir={workdir}",
      "--selection=prm",
      "--num_samples=2",
      "--beam_width=2",
      "--temperature=0.7",
      "--num=8",
      f"--output={out}",
    ],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert read_json(out)["num_examples"] == 8
  # Warm-started from the refiner: saved with the refiner's sizes, and
  # loaded back as such.
  # The same rollouts are reused.
  cfg.update(dict(init_from_refiner=True, steps=2))
  warm = prm.run(workdir, cfg)
  assert not results["rollouts_reused"] and warm["rollouts_reused"]
  assert warm["train_drafts"] == results["train_drafts"]
  model_cfg = read_json(workdir / "config.json")["model"]
  saved = read_json(workdir / "prm" / "prm.json")
  assert saved["d_model"] == model_cfg["d_model"]
  assert saved["num_layers"] == model_cfg["num_encoder_layers"]
  module, params = prm.load(workdir / "prm", vocab_size=64)
  assert module.cfg.num_layers == model_cfg["num_encoder_layers"]


def test_prm_likelihood_adds_log_prm_probability(monkeypatch):
  from bottomup import selection

  fake = {"logits": None}
  monkeypatch.setattr(
    prm_lib, "prm_logits", lambda *args: jnp.asarray(fake["logits"])
  )
  cfg = sampling.SamplingConfig(
    trained_passes=2, max_draft_len=4, prm=object(), selection="prm"
  )
  cands = selection.Candidates(
    question=jnp.zeros((1, 3), jnp.int32),
    tokens=jnp.zeros((1, 2, 4), jnp.int32),
    logprob=jnp.asarray([[-1.0, -6.0]]),
    t=0,
  )
  fake["logits"] = [[0.0, 3.0]]
  by = {
    k: selection.SELECTIONS[k](cands, None, cfg) for k in selection.SELECTIONS
  }
  want = np.array([-1.0 + np.log(0.5), -6.0 + np.log(1 / (1 + np.exp(-3)))])
  np.testing.assert_allclose(by["prm_likelihood"][0], want, rtol=1e-5)
  assert int(jnp.argmax(by["prm"][0])) == 1  # the PRM alone: the unlikely one
  assert int(jnp.argmax(by["prm_likelihood"][0])) == 0
  assert int(jnp.argmax(by["likelihood"][0])) == 0
  fake["logits"] = [[-3.0, 3.0]]
  cands = cands.replace(logprob=jnp.asarray([[-1.0, -3.0]]))
  score = selection.SELECTIONS["prm_likelihood"](cands, None, cfg)
  assert int(jnp.argmax(score[0])) == 1  # a confident PRM overrules
  with pytest.raises(ValueError, match="prm_likelihood"):
    sampling.SamplingConfig(
      trained_passes=2, max_draft_len=4, selection="prm_likelihood"
    )
