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

Measured (2026-12-05, `cpu`, 2 CPU cores; ~38 min supervised, ~10 min a
round). 1,500 solved problems, trained to the valid plateau: valid 42.8%
at step 500, 78.8% at 750, 96.8% at 1,000, 97.2% at 1,250, 97.4% at 1,500
(the training loss is ~1e-6 from step ~900: memorized, and generalizing
on); 96.1% (961/1000) on the test split. Round 1 sampled 4 solutions for each of 4,000 further questions and
kept 3,945 (3,906 accepted, 39 rationalized): valid 98.8%, test 99.0%
(990/1000); round 2 (3,975
accepted, 19 rationalized): valid 99.2%, and **98.9% (989/1000) on the
test split**. Control (`--config.bootstrap.init_workdir=RUN/supervised
--config.bootstrap.samples_per_question=0
--config.bootstrap.rationalize=False --config.bootstrap.rounds=1`: the
same 300 fine-tuning steps on the 1,500 solved problems only): valid
97.8%, **96.3% (963/1000) on the test split**. With the supervised data
at its plateau, the rounds' gain comes from the self-generated solutions,
not from more steps. Test accuracies: `python -m bottomup.evaluate
--workdir=RUN/round_1 --split=test --num=1000` (the final model's is in
RUN/eval_results.json).

Guided search on the supervised model (`python -m bottomup.prm
--workdir=RUN/supervised --prm.num_problems=500 --prm.valid_problems=200`,
then `python -m bottomup.evaluate --workdir=RUN/supervised --split=valid
--num=500 --num_samples=4 --temperature=0.7 --selection=S`), 500 valid
problems at 4 samples per pass: greedy 97.4%, likelihood 97.4%, PRM 96.6%,
log p + log PRM 97.4%. The PRM (rollouts of 500 problems it never trained
on, 3.8% of them failing) has AUROC 0.83 on valid drafts but a Brier score
(0.0213) no better than the base rate's (0.0199); started from the
refiner's encoder (`--prm.init_from_refiner=True`) it does worse (AUROC
0.71, PRM selection 96.0%). Likelihood stays the better judge here.

Earlier presets: 4,000 solved problems and 600 steps (the supervised
model stopped early at 92.6%): the rounds and the control alike reached
~99.5% (the gain was the extra steps); 1,000 solved problems: memorized,
0.2% valid at step 500 (500: none solved), so a round has nothing to
accept: the rounds need a model that already solves some questions.
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
  elif preset == "quickstart":  # a short supervised phase, one short round
    c.data.train_examples = 4000
    c.train.num_steps = 600
    c.eval.every_steps = 600
    c.eval.num_examples = 256
    c.bootstrap.rounds = 1
    c.bootstrap.num_questions = 1000
    c.bootstrap.steps_per_round = 150
  elif preset == "cpu":
    # Solved problems: scarce (the supervised recipe reads ~100k fresh
    # ones), trained to the valid plateau; 1,000 were memorized without
    # generalizing (see the docstring).
    c.data.train_examples = 1500
    c.train.num_steps = 1500
    c.eval.every_steps = 250
    c.eval.num_examples = 500
    c.bootstrap.stage_eval_every = 250  # learning curves in every stage
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
