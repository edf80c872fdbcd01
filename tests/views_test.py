"""Tests of data_pipelines.views: text and token views agree."""

import numpy as np
import pytest

from data_pipelines import tasks, views
from data_pipelines import tokenizer as tok_lib
from data_pipelines.builders.tokenized import TokenizedSplit


def _setup(task_name="multiplication_4x4", num=6):
  task = tasks.get_task(task_name)
  trajs = list(task.trajectories("train", scheme="scale", num=num, seed=3))
  texts = [t.question for t in trajs] + [d for t in trajs for d in t.drafts]
  tok = tok_lib.Tokenizer.train(texts, model_type="char")
  split = TokenizedSplit.from_token_lists(
    tok.encode_many([t.question for t in trajs]),
    [tok.encode_many(list(t.drafts)) for t in trajs],
    [t.id for t in trajs],
    [t.answer for t in trajs],
  )
  return task, trajs, tok, split


@pytest.mark.parametrize("view", views.VIEWS)
def test_text_and_token_views_agree(view):
  task, trajs, tok, split = _setup()
  viewed = views.view_split(task, tok, split, view)
  assert len(viewed) == len(trajs)
  for i, traj in enumerate(trajs):
    t = views.view_trajectory(task, traj, view)
    np.testing.assert_array_equal(viewed.question(i), tok.encode(t.question))
    got = viewed.drafts(i)
    assert len(got) == len(t.drafts)
    for row, text in zip(got, t.drafts):
      np.testing.assert_array_equal(row, tok.encode(text))
    # Every view keeps the answer checkable from its last draft.
    assert task.verify(t.drafts[-1], t.answer)


def test_views_by_hand():
  task, trajs, _, _ = _setup()
  t = trajs[0]
  assert views.view_trajectory(task, t, "trajectory") is t
  assert views.view_trajectory(task, t, "final").drafts == (t.drafts[-1],)
  concat = views.view_trajectory(task, t, "concat").drafts
  assert concat == ("<sep>".join(t.drafts),)
  assert views.view_trajectory(task, t, "answer").drafts == (t.answer,)
  checked = views.view_trajectory(task, t, "checked").drafts
  assert checked == (*t.drafts, t.drafts[-1])


def test_checked_view_adds_one_pass_to_the_shapes(tmp_path):
  from runs import smoke_config

  from bottomup import datasets

  plain = datasets.build(smoke_config(), tmp_path / "a")
  checked = datasets.build(smoke_config(data__view="checked"), tmp_path / "b")
  assert checked.shapes.max_drafts == plain.shapes.max_drafts + 1
  (t,) = checked.trajectories("valid", 1)
  assert len(t.drafts) == checked.shapes.max_drafts
  assert t.drafts[-1] == t.drafts[-2]


def test_answer_view_of_text_tasks_has_the_marker():
  for name, answer in (("prontoqa", "False"), ("gsm8k", "1,234")):
    task = tasks.get_task(name)
    draft = task.answer_draft(answer)
    assert draft.startswith("####")
    assert task.verify(draft, answer)


def test_unknown_view_is_rejected():
  task, trajs, _, _ = _setup()
  with pytest.raises(ValueError, match="unknown view 'nope'"):
    views.view_trajectory(task, trajs[0], "nope")
