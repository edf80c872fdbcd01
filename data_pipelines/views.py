"""Views: what a model is trained to write, taken from a trajectory.

The refiner reads every draft of a trajectory; the baselines write a single
sequence made from the same data, so that a comparison differs only in the
model (same questions, tokenizer, splits and verifier):

  trajectory  the drafts d_0 ... d_{T-1} as they are (the refiner).
  checked     d_0 ... d_{T-1}, d_{T-1}: a refiner with a final check pass
              that reads the final draft and writes it again. Re-applying
              the last pass (`sampling.extra_passes`) is then a fixed-point
              iteration; under the plain view the last pass repeats its own
              step (in `scale` multiplication it adds its partial product
              again). With input noise (`model.corrupt_prob`) the check
              pass is also trained to repair a damaged final draft.
  final       the last draft only: the full worked solution, i.e. the usual
              left-to-right chain of thought (ar_cot, mdlm).
  concat      d_0 <sep> d_1 <sep> ... <sep> d_{T-1} as one draft: the
              refiner's information written left to right (ar_trajectory).
  answer      only the final answer, in a form the task's verifier reads
              (`Task.answer_draft`; ar_nocot).

A view applies to text (`view_trajectory`, used by generated streams and
evaluation) and to a pre-tokenized split (`view_split`, used by prepared
datasets); the two agree token for token (tests/views_test.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines import tokenizer as tok_lib
from data_pipelines.builders.tokenized import TokenizedSplit
from data_pipelines.trajectory import Task, Trajectory

VIEWS = ("trajectory", "checked", "final", "concat", "answer")
# Views that keep every draft (several passes; the refiner's).
MULTI_DRAFT_VIEWS = ("trajectory", "checked")


def check_view(view: str) -> str:
  if view not in VIEWS:
    raise ValueError(f"unknown view {view!r}; known: {', '.join(VIEWS)}")
  return view


def view_trajectory(task: Task, traj: Trajectory, view: str) -> Trajectory:
  """The trajectory as `view` sees it (one draft unless multi-draft)."""
  check_view(view)
  if view == "trajectory":
    return traj
  if view == "checked":
    drafts = (*traj.drafts, traj.drafts[-1])
  elif view == "final":
    drafts = (traj.drafts[-1],)
  elif view == "concat":
    drafts = (tok_lib.SEP_PIECE.join(traj.drafts),)
  else:
    drafts = (task.answer_draft(traj.answer),)
  return dataclasses.replace(traj, drafts=drafts)


def format_viewed(task: Task, draft: str) -> str:
  """A viewed draft, human-readable: a concat view's drafts joined by |."""
  return " | ".join(
    task.format_draft(d) for d in draft.split(tok_lib.SEP_PIECE)
  )


def view_split(
  task: Task, tokenizer: tok_lib.Tokenizer, data: TokenizedSplit, view: str
) -> TokenizedSplit:
  """A pre-tokenized split as `view` sees it (see `view_trajectory`)."""
  check_view(view)
  if view == "trajectory":
    return data
  n = len(data)
  if view == "answer":
    drafts = tokenizer.encode_many([task.answer_draft(a) for a in data.answers])
  elif view == "checked":
    rows = [list(data.drafts(i)) for i in range(n)]
    return TokenizedSplit.from_token_lists(
      [data.question(i) for i in range(n)],
      [[np.asarray(d, np.int32) for d in (*r, r[-1])] for r in rows],
      data.ids,
      data.answers,
    )
  else:
    drafts = []
    sep = np.asarray([tok_lib.SEP_ID], np.int32)
    for i in range(n):
      rows = data.drafts(i)
      if view == "final":
        drafts.append(rows[-1])
      else:
        parts = [rows[0]]
        for r in rows[1:]:
          parts += [sep, r]
        drafts.append(np.concatenate(parts))
  return TokenizedSplit.from_token_lists(
    [data.question(i) for i in range(n)],
    [[np.asarray(d, np.int32)] for d in drafts],
    data.ids,
    data.answers,
  )


HINT_SEP = f" {tok_lib.SEP_PIECE} "


def with_hint(task: Task, traj: Trajectory) -> Trajectory:
  """`traj` with its answer appended to the question as a hint.

  The question becomes `question <sep> answer_draft`: the rationalization
  of the bootstrap rounds (STaR) asks a model trained with some hinted
  questions (`data.hint_prob`) to solve a problem it failed, given the
  answer, and keeps the solution without the hint.
  """
  hint = task.answer_draft(traj.answer)
  return dataclasses.replace(traj, question=traj.question + HINT_SEP + hint)
