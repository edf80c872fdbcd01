"""Tests of the input pipeline over a small prepared multiplication dataset.

Both paths (tf.data over TFDS, numpy over the `.npz`) must give the batches
of `batching.encode_trajectories`, in an order that depends only on
(seed, epoch, process), and restart exactly at any step.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import batching, builders, input_pipeline, prepare
from data_pipelines import tokenizer as tok_lib
from data_pipelines.builders import trajectories
from data_pipelines.trajectory import DataError, Trajectory

TASK = "multiplication_4x4"
# 203 train examples: epochs do not divide into 2 or 3 processes evenly.
NUM = {"train": 203, "valid": 37, "test": 10}
FITS = batching.Shapes(max_question_len=12, max_draft_len=20, max_drafts=4)
BACKENDS = ("tfdata", "numpy")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """The root of a small prepared multiplication_4x4."""
  root = tmp_path_factory.mktemp("prepared")
  prepare.prepare(TASK, root, num_examples=NUM, seed=1)
  return root


def _iterator(prepared, backend, **kw):
  args = dict(batch_size=16, shapes=FITS, seed=0) | kw
  return input_pipeline.make_train_iterator(
    prepared, TASK, backend=backend, **args
  )


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert set(x) == set(y) == {"question", "drafts", "num_drafts"}
    for k in x:
      assert x[k].dtype == y[k].dtype == np.int32
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_numpy_reader_equals_tfdata(prepared):
  kw = dict(process_index=1, process_count=2, seed=5)
  # 30 steps of 16 cross several epochs of 101 examples mid-batch.
  tf_batches = _take(_iterator(prepared, "tfdata", **kw), 30)
  np_batches = _take(_iterator(prepared, "numpy", **kw), 30)
  _assert_same(tf_batches, np_batches)


def test_batches_are_the_batching_format(prepared):
  """Same as `batching.encode_trajectories` on the examples of the order."""
  path = builders.dataset_dir(prepared, TASK)
  cols = trajectories.read_split_texts(path, "train")
  tokenizer = tok_lib.Tokenizer.load(path)
  order = input_pipeline.ExampleOrder(NUM["train"], 16, seed=0)
  for backend in BACKENDS:
    it = _iterator(prepared, backend)
    for step in range(3):
      trajs = [
        Trajectory(
          cols["id"][i],
          TASK,
          cols["question"][i],
          cols["drafts"][i],
          cols["answer"][i],
        )
        for i in order.indices(step)
      ]
      want, _ = batching.encode_trajectories(trajs, tokenizer, FITS)
      _assert_same([next(it)], [want])


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_in_seed(prepared, backend):
  a = _take(_iterator(prepared, backend, seed=3), 15)
  b = _take(_iterator(prepared, backend, seed=3), 15)
  c = _take(_iterator(prepared, backend, seed=4), 15)
  _assert_same(a, b)
  assert any((x["question"] != y["question"]).any() for x, y in zip(a, c))


def test_order_is_a_function_of_seed_and_epoch():
  order = input_pipeline.ExampleOrder(50, 7, seed=9)
  again = input_pipeline.ExampleOrder(50, 7, seed=9)
  for e in range(3):
    np.testing.assert_array_equal(order.epoch(e), again.epoch(e))
    np.testing.assert_array_equal(np.sort(order.epoch(e)), np.arange(50))
  assert (order.epoch(0) != order.epoch(1)).any()
  # Batches run through the epochs back to back.
  flat = np.concatenate([order.indices(s) for s in range(20)])
  np.testing.assert_array_equal(
    flat, np.concatenate([order.epoch(e) for e in range(3)])[:140]
  )


@pytest.mark.parametrize("n", [201, 203])
def test_process_shards_are_disjoint_and_cover(n):
  for epoch in range(3):
    shards = [
      input_pipeline.ExampleOrder(n, 4, 0, p, 3).epoch(epoch) for p in range(3)
    ]
    assert all(len(s) == n // 3 for s in shards)
    union = np.concatenate(shards)
    assert len(set(union.tolist())) == len(union)
    assert len(union) == n - n % 3  # all when 3 divides n


@pytest.mark.parametrize("backend", BACKENDS)
def test_restart_at_step_k_equals_uninterrupted(prepared, backend):
  full = _take(_iterator(prepared, backend, seed=2), 20)
  fresh = _iterator(prepared, backend, seed=2)
  fresh.set_state({"step": 13})
  _assert_same(_take(fresh, 7), full[13:])
  # Moving back after prefetching must not leak the old position.
  moved = _iterator(prepared, backend, seed=2)
  _take(moved, 4)
  state = moved.get_state()
  assert state == {"step": 4}
  _take(moved, 3)
  moved.set_state(state)
  _assert_same(_take(moved, 5), full[4:9])
  started = _iterator(prepared, backend, seed=2, start_step=17)
  _assert_same(_take(started, 3), full[17:])


def test_truncation_is_counted_the_same_by_both_paths(prepared):
  small = batching.Shapes(max_question_len=6, max_draft_len=10, max_drafts=2)
  out = {}
  for backend in BACKENDS:
    it = _iterator(prepared, backend, shapes=small, batch_size=8)
    batches = _take(it, 5)
    out[backend] = (batches, it.overlength_counts)
  _assert_same(out["tfdata"][0], out["numpy"][0])
  # Every question (9 tokens), both kept drafts (18 + EOS), 4 > 2 levels.
  want = batching.OverlengthCounts(questions=40, drafts=80, levels=40)
  assert out["tfdata"][1] == out["numpy"][1] == want
  batch = out["numpy"][0][0]
  assert batch["drafts"].shape == (8, 2, 10)
  assert (batch["num_drafts"] == 2).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_reject_fails_before_the_first_batch(prepared, backend):
  # 18 draft tokens + EOS do not fit in 18.
  small = batching.Shapes(max_question_len=12, max_draft_len=18, max_drafts=4)
  with pytest.raises(DataError, match=r"203 example\(s\).*multiplication"):
    _iterator(prepared, backend, shapes=small, overlength="reject")
  next(_iterator(prepared, backend, overlength="reject"))  # FITS fits


def test_eval_examples_cover_the_split_once(prepared):
  seen = []
  per_process = []
  for p in range(3):
    ev = input_pipeline.make_eval_examples(
      prepared,
      TASK,
      "valid",
      batch_size=5,
      shapes=FITS,
      process_index=p,
      process_count=3,
    )
    per_process.append(len(ev.batches))
    for b in ev.batches:
      real = b["index"] >= 0
      assert (b["num_drafts"][~real] == 0).all()
      assert (b["question"][~real] == tok_lib.PAD_ID).all()
      assert (b["num_drafts"][real] == 4).all()
      seen.extend(b["index"][real].tolist())
    assert len(ev.answers) == NUM["valid"]
  assert len(set(per_process)) == 1  # every process runs the same steps
  assert sorted(seen) == list(range(NUM["valid"]))


def test_encode_decode_is_exact(prepared):
  path = builders.dataset_dir(prepared, TASK)
  tokenizer = tok_lib.Tokenizer.load(path)
  for split in NUM:
    cols = trajectories.read_split_texts(path, split)
    data = input_pipeline.load_split(prepared, TASK, split)
    assert data.ids == cols["id"] and data.answers == cols["answer"]
    for i in range(len(data)):
      assert tokenizer.decode(data.question(i)) == cols["question"][i]
      decoded = [tokenizer.decode(d) for d in data.drafts(i)]
      assert decoded == cols["drafts"][i]


def test_numpy_path_never_imports_tensorflow(prepared):
  code = f"""
import sys
from data_pipelines import batching, input_pipeline as ip
shapes = batching.Shapes(12, 20, 4)
it = ip.make_train_iterator({str(prepared)!r}, {TASK!r}, batch_size=4,
                            shapes=shapes, seed=0, backend="numpy")
next(it)
ip.make_eval_examples({str(prepared)!r}, {TASK!r}, "test", batch_size=4,
                      shapes=shapes)
assert "tensorflow" not in sys.modules, "tensorflow was imported"
"""
  repo = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, PYTHONPATH=os.fspath(repo))
  res = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, env=env
  )
  assert res.returncode == 0, res.stderr


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError, match="data_pipelines.prepare"):
    _iterator(tmp_path, "numpy")
