r"""Input pipeline throughput: examples/s and tokens/s per path.

    python benchmarks/input_pipeline.py --data_dir=/tmp/bu_data \
        [--batch_size=256] [--steps=200] [--train_examples_per_s=1000]

Measures, for multiplication_4x4 and (when the raw data is found in
$BOTTOMUP_DATA_DIR or ../shared/data) gsm8k:

  tfdata     `input_pipeline` over the prepared TFDS records (tf.data);
  numpy      `input_pipeline` over the pre-tokenized `.npz` (no TensorFlow);
  generator  `batching.GeneratorStream` (generated tasks only).

Datasets missing under --data_dir are prepared first (default sizes). Tokens
are the non-PAD tokens of questions and real drafts. The last column is
examples/s over --train_examples_per_s, the rate the trainer consumes (the
CPU preset takes about 1000 examples/s); the target is >= 20x.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

from data_pipelines import batching, builders, input_pipeline, prepare
from data_pipelines import tokenizer as tok_lib
from data_pipelines.tasks import get_task

_SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def source_dir() -> str | None:
  """Raw data: $BOTTOMUP_DATA_DIR, else ../shared/data, else None."""
  env = os.environ.get("BOTTOMUP_DATA_DIR")
  if env:
    return env
  return os.fspath(_SHARED) if _SHARED.is_dir() else None


def real_tokens(batch: dict[str, np.ndarray]) -> int:
  """Non-PAD tokens of the question and of the real (not repeated) drafts."""
  levels = np.arange(batch["drafts"].shape[1])
  real = levels[None, :] < batch["num_drafts"][:, None]
  drafts = (batch["drafts"] != tok_lib.PAD_ID) & real[:, :, None]
  return int((batch["question"] != tok_lib.PAD_ID).sum() + drafts.sum())


def measure(stream, steps: int, warmup: int = 5) -> tuple[float, float]:
  """(examples/s, tokens/s) over `steps` batches after `warmup`."""
  for _ in range(warmup):
    next(stream)
  examples = tokens = 0
  start = time.perf_counter()
  for _ in range(steps):
    batch = next(stream)
    examples += len(batch["num_drafts"])
    tokens += real_tokens(batch)
  elapsed = time.perf_counter() - start
  return examples / elapsed, tokens / elapsed


def streams(task: str, data_dir: str, batch_size: int):
  """(name, stream) of every path that applies to `task`."""
  path = builders.require_prepared(data_dir, task)
  stats = json.loads((path / builders.STATS_FILE).read_text())
  shapes = batching.Shapes(**stats["suggested_shapes"])
  for backend in ("tfdata", "numpy"):
    yield (
      backend,
      input_pipeline.make_train_iterator(
        data_dir,
        task,
        batch_size=batch_size,
        shapes=shapes,
        seed=0,
        backend=backend,
      ),
    )
  task_obj = get_task(task)
  if task_obj.generated:
    yield (
      "generator",
      batching.GeneratorStream(
        task_obj,
        tok_lib.Tokenizer.load(path),
        shapes,
        batch_size=batch_size,
        seed=0,
      ),
    )


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", default="/tmp/bu_data")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--train_examples_per_s", type=float, default=1000.0)
  args = parser.parse_args(argv)
  raw = source_dir()
  tasks = ["multiplication_4x4"] + (["gsm8k"] if raw else [])
  if not raw:
    print("gsm8k skipped: set BOTTOMUP_DATA_DIR to the raw data folder")
  for task in tasks:
    prepare.prepare(task, args.data_dir, source_dir=raw)
  print(
    f"{'task':<20}{'path':<11}{'examples/s':>12}{'tokens/s':>13}{'x train':>9}"
  )
  for task in tasks:
    for name, stream in streams(task, args.data_dir, args.batch_size):
      ex_s, tok_s = measure(stream, args.steps)
      ratio = ex_s / args.train_examples_per_s
      print(f"{task:<20}{name:<11}{ex_s:>12,.0f}{tok_s:>13,.0f}{ratio:>8.1f}x")
  return 0


if __name__ == "__main__":
  sys.exit(main())
