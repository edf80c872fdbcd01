r"""Prints a few trajectories of a prepared dataset and one batch's shapes.

    python -m data_pipelines.show --task=gsm8k --split=train --num=3 \
        --data_dir=/tmp/bu_data

Drafts are shown coarse to fine, rendered by the task (`format_draft`,
`format_question`: e.g. multiplication in ordinary digit order). The batch
uses the shapes suggested in the dataset's `stats.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from data_pipelines import batching, builders, input_pipeline
from data_pipelines.tasks import KNOWN, get_task


def _indent(text: str, prefix: str) -> str:
  return text.replace("\n", "\n" + " " * len(prefix))


def show(
  task: str,
  split: str,
  num: int,
  data_dir: str,
  scheme: str | None = None,
  batch_size: int = 8,
) -> None:
  """Prints `num` trajectories of `split`, then one training batch's shapes.

  Args:
    task: task name.
    split: split name.
    num: how many trajectories.
    data_dir: the `--data_dir` given to prepare.
    scheme: coarsening scheme (None: the task's default).
    batch_size: size of the example batch.
  """
  from data_pipelines.builders import trajectories  # noqa: PLC0415 (TF)

  task_obj = get_task(task)
  path = builders.require_prepared(data_dir, task, scheme)
  cols = trajectories.read_split_texts(path, split)
  fmt_q = getattr(task_obj, "format_question", lambda q: q)
  for i in range(min(num, len(cols["id"]))):
    print(f"=== {cols['id'][i]}")
    print(f"question: {_indent(fmt_q(cols['question'][i]), 'question: ')}")
    for t, draft in enumerate(cols["drafts"][i]):
      head = f"d{t}: "
      print(head + _indent(task_obj.format_draft(draft), head))
    answer = cols["answer"][i]
    shown = task_obj.format_draft(answer)
    print(
      f"answer: {shown}" + (f" (stored {answer})" if shown != answer else "")
    )
  stats = json.loads((path / builders.STATS_FILE).read_text())
  shapes = batching.Shapes(**stats["suggested_shapes"])
  it = input_pipeline.make_train_iterator(
    data_dir,
    task,
    split,
    batch_size=batch_size,
    shapes=shapes,
    seed=0,
    scheme=scheme,
  )
  batch = next(it)
  print(f"=== one batch ({type(it).__name__}, suggested {shapes}):")
  for k, v in batch.items():
    print(f"  {k}: {v.dtype}{list(v.shape)}")
  print(f"  over-length: {it.overlength_counts}")


def main(argv: Sequence[str] | None = None) -> int:
  """The CLI; returns the exit status."""
  parser = argparse.ArgumentParser(
    prog="python -m data_pipelines.show",
    epilog="known tasks: " + ", ".join(KNOWN),
  )
  parser.add_argument("--task", required=True)
  parser.add_argument("--split", default="train")
  parser.add_argument("--num", type=int, default=3)
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--scheme")
  parser.add_argument("--batch_size", type=int, default=8)
  args = parser.parse_args(argv)
  try:
    show(
      args.task,
      args.split,
      args.num,
      args.data_dir,
      args.scheme,
      args.batch_size,
    )
  except (FileNotFoundError, ValueError) as e:
    print(f"show: error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
