"""Bootstrap rounds where solutions are scarce: 4x4 multiplication.

    python -m bottomup.main --config=experiments/multiplication_bootstrap.py:cpu \
        --workdir=runs/bootstrap

The refiner first learns from only `data.train_examples` solved problems
(a fifth of them with the answer as a hint in the question, so that it can
rationalize later); then each round samples k solutions for each of
`bootstrap.num_questions` further training questions whose answers are
known but whose solutions are never read, keeps the verified ones (and the
rationalized ones), and fine-tunes the supervised model on them plus the
supervised examples (STaR). WORKDIR/rounds.json has the yield, train loss
and valid accuracy of every round; WORKDIR/eval_results.json the final
model on 1,000 held-out test problems.

Then the process reward model and guided search on the last round's model:

    python -m bottomup.prm --workdir=runs/bootstrap/round_3
    python -m bottomup.evaluate --workdir=runs/bootstrap/round_3 \
        --num_samples=4 --temperature=0.7                 # likelihood
    python -m bottomup.evaluate --workdir=runs/bootstrap/round_3 \
        --num_samples=4 --temperature=0.7 --selection=prm # PRM-guided

Presets: smoke (seconds), quickstart (minutes), cpu (2 CPU cores), accel
(one GPU).

Measured (2026-12-05, `cpu`, 2 CPU cores): the recipe does not work yet.
With 500 solved problems the supervised refiner memorizes them (train loss
6e-5 after 800 steps) and solves 0% of 500 valid problems (teacher-forced
token accuracy 0.68-0.86 per pass); round 1 sampled 8,000 solutions of
2,000 questions and accepted none (1 rationalized), so the rounds have
nothing to learn from. The rounds need a supervised model that already
solves some problems: more solved problems, fewer epochs, or easier solved
problems than the rounds' questions. (tests/bootstrap_test.py shows the
mechanism on 2x2, where 256 solved problems are enough.)
"""

import ml_collections

from experiments import multiplication


def get_config(preset: str = "quickstart") -> ml_collections.ConfigDict:
  """The bootstrap experiment for `preset`."""
  c = multiplication.get_config("smoke" if preset == "smoke" else "cpu")
  c.data.hint_prob = 0.2  # Hinted questions, for rationalization.
  c.bootstrap.temperature = 0.7
  c.bootstrap.top_p = 0.95
  c.bootstrap.samples_per_question = 4
  c.bootstrap.keep_per_question = 1
  c.bootstrap.rationalize = True
  c.bootstrap.finetune_from = "base"
  c.bootstrap.include_supervised = True
  if preset == "smoke":
    c.data.task = "multiplication_2x2"
    c.data.train_examples = 64
    c.train.num_steps = 40
    c.bootstrap.rounds = 1
    c.bootstrap.num_questions = 32
    c.bootstrap.steps_per_round = 10
  elif preset == "quickstart":  # the mechanism in a few minutes
    c.data.train_examples = 500
    c.train.num_steps = 500
    c.eval.every_steps = 500
    c.eval.num_examples = 256
    c.bootstrap.rounds = 2
    c.bootstrap.num_questions = 500
    c.bootstrap.steps_per_round = 150
  elif preset == "cpu":
    # Solved problems: scarce (the supervised recipe reads ~100k fresh
    # ones); 500 were too few to generalize from at all.
    c.data.train_examples = 4000
    c.train.num_steps = 600
    c.eval.every_steps = 200
    c.eval.num_examples = 500
    c.bootstrap.rounds = 2
    c.bootstrap.num_questions = 4000  # Questions with answers only.
    c.bootstrap.steps_per_round = 300
  elif preset == "accel":
    c = multiplication.get_config("accel")
    c.data.hint_prob = 0.2
    c.data.task = "multiplication_5x5"
    c.data.train_examples = 2000
    c.bootstrap.rounds = 4
    c.bootstrap.num_questions = 20000
    c.bootstrap.samples_per_question = 8
    c.bootstrap.steps_per_round = 1000
  else:
    raise multiplication.base.unknown_preset(preset)
  return c
