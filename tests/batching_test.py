"""Tests of trajectory batching and the generator stream."""

import dataclasses
import re

import numpy as np
import pytest

from data_pipelines import batching
from data_pipelines import tokenizer as tok_lib
from data_pipelines.tasks import get_task, multiplication
from data_pipelines.trajectory import DataError

PAD, EOS = tok_lib.PAD_ID, tok_lib.EOS_ID
# 4x4 questions are 9 characters, `scale` drafts 18 (4 of them), the `icot`
# draft 58 (1 of them); the char tokenizer spends one token per character.
_Q_LEN, _SCALE_LEN, _ICOT_LEN = 9, 18, 58


@pytest.fixture(scope="module")
def task():
  return multiplication.MultiplicationTask(4)


@pytest.fixture(scope="module")
def tok(task):
  texts = []
  for scheme in task.schemes:
    for t in task.generate("train", num=20, seed=0, scheme=scheme):
      texts += [t.question, *t.drafts]
  return tok_lib.Tokenizer.train(texts, model_type="char")


def _trajs(task, num=3, scheme="scale", seed=0):
  return list(task.generate("valid", num=num, seed=seed, scheme=scheme))


def _row(tok, text, length, eos=True):
  ids = tok.encode(text) + ([EOS] if eos else [])
  return np.array(ids + [PAD] * (length - len(ids)), np.int32)[:length]


def test_shapes_dtypes_and_contents(task, tok):
  trajs = _trajs(task)
  shapes = batching.Shapes(max_question_len=12, max_draft_len=24, max_drafts=6)
  batch, counts = batching.encode_trajectories(trajs, tok, shapes)
  assert batch["question"].shape == (3, 12)
  assert batch["drafts"].shape == (3, 6, 24)
  assert batch["num_drafts"].shape == (3,)
  assert all(v.dtype == np.int32 for v in batch.values())
  assert counts.total() == 0
  np.testing.assert_array_equal(batch["num_drafts"], [4, 4, 4])
  for i, traj in enumerate(trajs):
    # Questions carry no specials; drafts end in EOS, then PAD.
    want_q = _row(tok, traj.question, 12, eos=False)
    np.testing.assert_array_equal(batch["question"][i], want_q)
    for t, draft in enumerate(traj.drafts):
      row = batch["drafts"][i, t]
      np.testing.assert_array_equal(row, _row(tok, draft, 24))
      assert row[_SCALE_LEN] == EOS and not row[_SCALE_LEN + 1 :].any()
      assert tok.decode(row) == draft


def test_draft_axis_is_padded_by_repeating_the_last_draft(task, tok):
  trajs = _trajs(task, num=2, scheme="icot") + _trajs(task, num=2)
  shapes = batching.Shapes(
    max_question_len=_Q_LEN, max_draft_len=_ICOT_LEN + 1, max_drafts=5
  )
  assert len(trajs[0].drafts[0]) == _ICOT_LEN
  batch, counts = batching.encode_trajectories(trajs, tok, shapes)
  assert counts.total() == 0
  np.testing.assert_array_equal(batch["num_drafts"], [1, 1, 4, 4])
  drafts = batch["drafts"]
  for i, n in enumerate(batch["num_drafts"]):
    for t in range(n, 5):
      np.testing.assert_array_equal(drafts[i, t], drafts[i, n - 1])
  assert tok.decode(drafts[0, 4]) == trajs[0].drafts[-1]
  assert tok.decode(drafts[3, 4]) == trajs[3].drafts[-1]
  assert not np.array_equal(drafts[3, 0], drafts[3, 3])


def test_exact_fit_is_not_counted_but_the_eos_needs_room(task, tok):
  trajs = _trajs(task)
  fit = batching.Shapes(_Q_LEN, _SCALE_LEN + 1, 4)
  _, counts = batching.encode_trajectories(trajs, tok, fit)
  assert counts == batching.OverlengthCounts()
  no_eos = batching.Shapes(_Q_LEN, _SCALE_LEN, 4)
  batch, counts = batching.encode_trajectories(trajs, tok, no_eos)
  assert counts.drafts == 3 * 4
  assert not (batch["drafts"] == EOS).any()


def test_overlong_questions_are_truncated_and_counted(task, tok):
  trajs = _trajs(task)
  shapes = batching.Shapes(5, _SCALE_LEN + 1, 4)
  batch, counts = batching.encode_trajectories(trajs, tok, shapes)
  assert (counts.questions, counts.drafts, counts.levels) == (3, 0, 0)
  for i, traj in enumerate(trajs):
    np.testing.assert_array_equal(
      batch["question"][i], tok.encode(traj.question)[:5]
    )


def test_overlong_drafts_are_truncated_and_counted(task, tok):
  trajs = _trajs(task)
  # Padding levels repeat a cut draft but are not counted again.
  shapes = batching.Shapes(_Q_LEN, 10, 6)
  batch, counts = batching.encode_trajectories(trajs, tok, shapes)
  assert (counts.questions, counts.drafts, counts.levels) == (0, 12, 0)
  assert counts.total() == 12
  for i, traj in enumerate(trajs):
    for t, draft in enumerate(traj.drafts):
      np.testing.assert_array_equal(
        batch["drafts"][i, t], tok.encode(draft)[:10]
      )


def test_extra_levels_keep_the_finest_drafts_and_are_counted(task, tok):
  trajs = _trajs(task)
  shapes = batching.Shapes(_Q_LEN, _SCALE_LEN + 1, 2)
  batch, counts = batching.encode_trajectories(trajs, tok, shapes)
  assert (counts.questions, counts.drafts, counts.levels) == (0, 0, 3)
  np.testing.assert_array_equal(batch["num_drafts"], [2, 2, 2])
  for i, traj in enumerate(trajs):
    got = [tok.decode(row) for row in batch["drafts"][i]]
    assert got == list(traj.drafts[-2:])


def test_overlength_counts_add_up():
  total = batching.OverlengthCounts(1, 2, 3)
  total.add(batching.OverlengthCounts(10, 20, 30))
  assert (total.questions, total.drafts, total.levels) == (11, 22, 33)
  assert total.total() == 66


@pytest.mark.parametrize(
  "shapes",
  [
    batching.Shapes(5, _SCALE_LEN + 1, 4),  # question too long
    batching.Shapes(_Q_LEN, 10, 4),  # a draft too long
    batching.Shapes(_Q_LEN, _SCALE_LEN + 1, 3),  # too many drafts
  ],
)
def test_reject_mode_names_the_offending_example(task, tok, shapes):
  fits, long = _trajs(task, num=2)
  # Small enough for every shape above: 5 question tokens, one 9+1 draft.
  fits = dataclasses.replace(
    fits, question=fits.question[:5], drafts=(fits.drafts[0][:9],)
  )
  long = dataclasses.replace(long, id="the-long-one")
  with pytest.raises(DataError, match=re.escape("the-long-one:")):
    batching.encode_trajectories([fits, long], tok, shapes, "reject")
  # The example that fits alone passes in reject mode.
  batch, counts = batching.encode_trajectories([fits], tok, shapes, "reject")
  assert counts.total() == 0
  assert batch["num_drafts"][0] == 1


def test_unknown_overlength_mode_is_rejected(task, tok):
  shapes = batching.Shapes(_Q_LEN, _SCALE_LEN + 1, 4)
  with pytest.raises(ValueError, match="truncate|reject"):
    batching.encode_trajectories(_trajs(task), tok, shapes, "drop")


def _stream(task, tok, **kwargs):
  kwargs = {"batch_size": 4, "seed": 5} | kwargs
  shapes = batching.Shapes(_Q_LEN, _SCALE_LEN + 1, 4)
  return batching.GeneratorStream(task, tok, shapes, **kwargs)


def _assert_same(x, y):
  assert x.keys() == y.keys()
  for k in x:
    np.testing.assert_array_equal(x[k], y[k])


def test_stream_resumes_exactly_at_any_step(task, tok):
  stream = _stream(task, tok)
  uninterrupted = [next(stream) for _ in range(4)]
  assert stream.get_state() == {"step": 4}
  resumed = _stream(task, tok, start_step=2)
  _assert_same(next(resumed), uninterrupted[2])
  _assert_same(next(resumed), uninterrupted[3])
  restored = _stream(task, tok)
  restored.set_state({"step": 3})
  _assert_same(next(restored), uninterrupted[3])
  assert restored.get_state() == {"step": 4}
  _assert_same(_stream(task, tok).batch_at(1), uninterrupted[1])
  # Steps differ from each other.
  assert not np.array_equal(
    uninterrupted[0]["question"], uninterrupted[1]["question"]
  )


def test_stream_is_deterministic_in_seed_and_step(task, tok):
  a = _stream(task, tok, seed=11)
  b = _stream(task, tok, seed=11)
  c = _stream(task, tok, seed=12)
  for step in (0, 7):
    _assert_same(a.batch_at(step), b.batch_at(step))
    assert not np.array_equal(
      a.batch_at(step)["question"], c.batch_at(step)["question"]
    )


def test_processes_get_different_batches(task, tok):
  p0 = _stream(task, tok, process_index=0, process_count=2)
  p1 = _stream(task, tok, process_index=1, process_count=2)
  q0, q1 = p0.batch_at(3)["question"], p1.batch_at(3)["question"]
  assert not np.array_equal(q0, q1)
  assert not {tok.decode(r) for r in q0} & {tok.decode(r) for r in q1}


def test_stream_batches_are_trajectories_of_its_split(task, tok):
  for split in ("train", "valid"):
    batch = _stream(task, tok, split=split).batch_at(0)
    assert batch["question"].shape == (4, _Q_LEN)
    assert batch["drafts"].shape == (4, 4, _SCALE_LEN + 1)
    for i, row in enumerate(batch["question"]):
      a, b = task.operands(tok.decode(row))
      assert multiplication.split_of(a, b) == split
      final = tok.decode(batch["drafts"][i, -1])
      assert task.verify(final, multiplication.rev(a * b, 8))


def test_stream_counts_overlength(task, tok):
  shapes = batching.Shapes(_Q_LEN, 10, 4)
  stream = batching.GeneratorStream(
    task, tok, shapes, batch_size=3, seed=0, scheme="scale_plain"
  )
  next(stream)
  assert stream.overlength_counts.total() == 0  # plain drafts are 8 long
  stream = batching.GeneratorStream(task, tok, shapes, batch_size=3, seed=0)
  next(stream)
  next(stream)
  assert stream.overlength_counts.drafts == 2 * 3 * 4
  stream = batching.GeneratorStream(
    task, tok, shapes, batch_size=3, seed=0, overlength="reject"
  )
  with pytest.raises(DataError, match="multiplication_4x4-train"):
    next(stream)


def test_stream_needs_a_generated_task(tok):
  shapes = batching.Shapes(8, 8, 2)
  with pytest.raises(ValueError, match="no generator"):
    batching.GeneratorStream(
      get_task("prontoqa"), tok, shapes, batch_size=2, seed=0
    )
