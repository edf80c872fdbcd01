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

    python -m bottomup.prm --workdir=runs/bootstrap/round_2
    python -m bottomup.evaluate --workdir=runs/bootstrap/round_2 \
        --num_samples=4 --temperature=0.7                 # likelihood
    python -m bottomup.evaluate --workdir=runs/bootstrap/round_2 \
        --num_samples=4 --temperature=0.7 --selection=prm # PRM-guided

Presets: smoke (seconds), quickstart (minutes), cpu (2 CPU cores), accel
(one GPU).

Measured (2026-12-05, `cpu`, 2 CPU cores). 4,000 solved problems (the
supervised recipe reads ~100k fresh ones), 600 steps: 92.6% valid. Round 1
sampled 4 solutions for each of 3,999 further questions and kept 3,951
verified ones (3,877 questions accepted, 74 rationalized): fine-tuned from
the supervised model on them plus the 4,000, 99.8% valid; round 2 (3,993
accepted): 99.6% valid; the final model 99.7% (997/1000) on the test
split. Control (`--config.bootstrap.samples_per_question=0`: the same
fine-tuning on the 4,000 solved problems only): 99.2% valid, and on 500
test problems 99.8% (499/500), the same as round 1's model (499/500): at
this size the rounds' gain over the supervised model comes from the extra
fine-tuning steps (the supervised phase was stopped early), not from the
self-generated solutions. The next test: a supervised phase run to its
plateau, then rounds against this control, on a harder task. With 500
solved problems instead (the first version of this preset) the supervised
model memorized them and solved none, so round 1 accepted nothing: the
rounds need a model that already solves some questions.
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
  elif preset == "quickstart":  # cpu's supervised phase, one short round
    c.data.train_examples = 4000
    c.train.num_steps = 600
    c.eval.every_steps = 600
    c.eval.num_examples = 256
    c.bootstrap.rounds = 1
    c.bootstrap.num_questions = 1000
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
