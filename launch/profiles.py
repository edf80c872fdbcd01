"""The sizes of the tables' cells per profile (smoke, cpu, accel).

`launch/cells.py` turns a profile into cells; this file holds only the
numbers: which rows, which presets and step counts, which Table 2 settings.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Row:
  """A Table 1 row: a task and the settings of its cells.

  Attributes:
    key: short name (cell ids: t1.<key>.<column>).
    title: as printed in the table.
    config: `experiments/FILE.py:PRESET`.
    overrides: `--config.x=y` flags of every cell of the row.
    prepare: `data_pipelines.prepare` flags (--task, --scheme) when the row
      reads a prepared dataset; empty for generated data.
    raw: the raw dataset's folder under the data dir ("" = none needed).
    latent: the flags that make a BottomUp cell's first passes latent.
    bootstrap: the flags of the bootstrap cell (added to the row's).
  """

  key: str
  title: str
  config: str
  overrides: tuple[str, ...] = ()
  prepare: tuple[str, ...] = ()
  raw: str = ""
  latent: tuple[str, ...] = ("--config.model.latent_passes=1",)
  bootstrap: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Profile:
  """The sizes of one profile."""

  rows: tuple[Row, ...]
  t2_row: str  # the Table 1 row whose BottomUp cell Table 2 evaluates
  t2_extra_passes: tuple[int, ...]
  # The check-pass cell's flags (`data.view=checked`): extra passes on a
  # model trained to re-write its final draft (evaluated as the plain
  # BottomUp cell is, series `extra_passes_check`).
  t2_check_train: tuple[str, ...]
  t2_samples: tuple[int, ...]
  t2_temperature: float
  t2_beam: tuple[int, ...]
  t2_guidance: tuple[float, ...]
  t2_guidance_train: tuple[str, ...]  # the question-dropout cell's flags
  t2_diffusion_steps: tuple[int, ...]
  t2_num: int  # test problems per Table 2 evaluation (0 = the final eval's)
  prm: tuple[str, ...]  # `python -m bottomup.prm` flags
  benchmark: tuple[str, ...]  # benchmarks/train_throughput.py flags


def _bootstrap(rounds, questions, steps, k=4):
  return (
    f"--config.bootstrap.rounds={rounds}",
    f"--config.bootstrap.num_questions={questions}",
    f"--config.bootstrap.steps_per_round={steps}",
    f"--config.bootstrap.samples_per_question={k}",
    # The supervised model saw no hints, so no rationalization here.
    "--config.bootstrap.rationalize=False",
  )


def _check(noise):
  return ("--config.data.view=checked", f"--config.model.corrupt_prob={noise}")


def _prontoqa(config, prepare_scheme="grow", **kw):
  return Row(
    key="prontoqa",
    title="ProntoQA (5 hops)",
    config=config,
    prepare=("--task=prontoqa", f"--scheme={prepare_scheme}"),
    raw="prontoqa",
    **kw,
  )


def _gsm8k(config, **kw):
  return Row(
    key="gsm8k",
    title="GSM8K",
    config=config,
    prepare=("--task=gsm8k", "--scheme=plan"),
    raw="gsm8k",
    **kw,
  )


_MUL = "experiments/multiplication.py"


def _accel_mul(n, steps):
  return (
    f"--config.data.task=multiplication_{n}x{n}",
    "--config.train.batch_size=512",
    "--config.eval.batch_size=1000",
    f"--config.train.num_steps={steps}",
  )


PROFILE_SPECS = {
  # Minutes on 2 CPU cores: the whole pipeline on a tiny model; the numbers
  # mean nothing. The text rows are left to the other profiles.
  "smoke": Profile(
    rows=(
      Row(
        "mul4x4",
        "multiplication 4x4",
        f"{_MUL}:smoke",
        bootstrap=_bootstrap(1, 16, 5, k=2),
      ),
    ),
    t2_row="mul4x4",
    # One setting per series: the pipeline, in as few commands as possible.
    t2_extra_passes=(1,),
    t2_check_train=_check(0.1),
    t2_samples=(2,),
    t2_temperature=0.7,
    t2_beam=(2,),
    t2_guidance=(2.0,),
    t2_guidance_train=("--config.model.question_dropout=0.2",),
    t2_diffusion_steps=(4,),
    t2_num=16,
    prm=(
      "--prm.num_problems=8",
      "--prm.valid_problems=4",
      "--prm.rollouts=2",
      "--prm.steps=5",
      "--prm.batch_size=16",
    ),
    benchmark=(
      f"--config={_MUL}:smoke",
      "--steps=2",
      "--rounds=2",
      "--peak_n=256",
    ),
  ),
  # 2 CPU cores, about 6 hours in all (estimated from the measured step
  # rates; the 4x4 row alone is about 2.4 hours).
  "cpu": Profile(
    rows=(
      Row(
        "mul4x4",
        "multiplication 4x4",
        f"{_MUL}:cpu",
        latent=(
          "--config.model.latent_passes=1",
          "--config.train.latent_curriculum_steps=1000",
        ),
        bootstrap=_bootstrap(1, 2000, 300),
      ),
      Row(
        "mul5x5",
        "multiplication 5x5",
        f"{_MUL}:cpu",
        overrides=(
          "--config.data.task=multiplication_5x5",
          "--config.train.num_steps=1200",
        ),
        bootstrap=_bootstrap(1, 2000, 300),
      ),
      # The text rows get a small budget (about 2 s a step here): they show
      # the pipeline and the ordering of the models, not converged numbers.
      _prontoqa(
        "experiments/prontoqa.py:quickstart",
        overrides=("--config.train.num_steps=300",),
        bootstrap=_bootstrap(1, 500, 100),
      ),
      _gsm8k(
        "experiments/gsm8k.py:quickstart",
        overrides=("--config.train.num_steps=300",),
        bootstrap=_bootstrap(1, 500, 100),
      ),
    ),
    # 5x5 (1200 steps) leaves room to gain: on the 4x4 cell (100% on the
    # test split) every Table 2 setting but extra passes gave 100%.
    t2_row="mul5x5",
    t2_extra_passes=(0, 1, 2),
    # As the BottomUp cell of the row (same steps), with a check pass.
    t2_check_train=_check(0.1),
    t2_samples=(1, 4, 8),
    t2_temperature=0.7,
    t2_beam=(2, 4),
    t2_guidance=(1.0, 1.5, 2.0),
    t2_guidance_train=("--config.model.question_dropout=0.1",),
    t2_diffusion_steps=(8, 16, 32),
    t2_num=500,
    prm=("--prm.num_problems=500", "--prm.valid_problems=200"),
    benchmark=(f"--config={_MUL}:cpu", "--steps=10", "--rounds=3"),
  ),
  # One GPU/TPU: the multiplication rows fit in about 9 minutes on an H200.
  "accel": Profile(
    rows=(
      # 21 multiplication cells in about 9 minutes on one H200 (an
      # estimate: no GPU was at hand to time it): each cell is mostly
      # process start and compilation, so the model is the cpu preset's
      # (1.1M params) with a large batch and few steps.
      Row(
        "mul4x4",
        "multiplication 4x4",
        f"{_MUL}:cpu",
        overrides=_accel_mul(4, 800),
        bootstrap=_bootstrap(1, 5000, 200, k=8),
      ),
      Row(
        "mul5x5",
        "multiplication 5x5",
        f"{_MUL}:cpu",
        overrides=_accel_mul(5, 1200),
        bootstrap=_bootstrap(1, 5000, 200, k=8),
      ),
      Row(
        "mul7x7",
        "multiplication 7x7",
        f"{_MUL}:cpu",
        overrides=_accel_mul(7, 2000),
        bootstrap=_bootstrap(1, 5000, 200, k=8),
      ),
      _prontoqa(
        "experiments/prontoqa.py:accel", bootstrap=_bootstrap(2, 2000, 500)
      ),
      _gsm8k("experiments/gsm8k.py:accel", bootstrap=_bootstrap(2, 2000, 500)),
    ),
    t2_row="mul5x5",
    t2_extra_passes=(0, 1, 2, 4),
    t2_check_train=_check(0.1),
    t2_samples=(1, 4, 16),
    t2_temperature=0.7,
    t2_beam=(2, 4),
    t2_guidance=(1.0, 1.5, 2.0, 3.0),
    t2_guidance_train=("--config.model.question_dropout=0.1",),
    t2_diffusion_steps=(8, 16, 32, 64),
    t2_num=1000,
    prm=("--prm.num_problems=2000", "--prm.valid_problems=500"),
    benchmark=(
      f"--config={_MUL}:cpu",
      "--config.train.batch_size=512",
      "--steps=20",
    ),
  ),
}
