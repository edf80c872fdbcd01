r"""Prepares a task's dataset: TFDS records, tokenizer, tokens, stats.

    python -m data_pipelines.prepare --task=gsm8k --data_dir=/tmp/bu_data \
        --source_dir=$BOTTOMUP_DATA_DIR

writes `<data_dir>/bottomup_trajectories/<config>/<version>/` (the layout is
in `data_pipelines.builders`):

  1. the TFDS dataset, built offline (`builders.trajectories`);
  2. a sentencepiece tokenizer trained on the train split's questions and
     drafts (`char` when the text has no letters, as in multiplication;
     `bpe` otherwise), checked to decode every train draft exactly;
     with `--fold_words`, capitalized and plural words are folded into their
     stem's token (`data_pipelines.tokenizer`);
  3. `tokens_<split>.npz` (`builders.tokenized`), read without TensorFlow;
  4. `stats.json`: sizes, token-length percentiles, suggested shapes and the
     over-length counts at those shapes;
  5. `PREPARED.json`, the completion marker, written last.

Everything is built in a temporary folder next to the target and renamed
into place at the end, so an interrupted run never leaves a folder that looks
complete; a temporary folder left by a killed run is removed by the next one.
A second run with the same settings does nothing. Bad input (malformed
JSON/JSONL, a missing file, an unknown task) exits non-zero with a message
naming the problem, the file and the line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import shutil
import socket
import sys
from collections.abc import Sequence

import numpy as np

from data_pipelines import batching, builders
from data_pipelines import tokenizer as tok_lib
from data_pipelines.builders import tokenized
from data_pipelines.tasks import KNOWN, get_task
from data_pipelines.trajectory import DataError

# Default vocabulary of text tasks: small models, a few thousand pieces.
# It is lowered automatically when the training text cannot fill it.
DEFAULT_TEXT_VOCAB_SIZE = 4096
# Suggested shapes cover every train example unless the longest need more
# than SHAPE_TAIL_COST x the padding of the SHAPE_PERCENTILE-th percentile.
SHAPE_PERCENTILE = 99.9
SHAPE_TAIL_COST = 1.25


def _tmp_prefix() -> str:
  return f".prepare-{socket.gethostname()}-"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)  # signal 0: only asks whether the process exists
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    pass
  return True


def remove_stale_tmp(parent: pathlib.Path) -> None:
  """Removes temporary folders of dead prepare runs on this host."""
  if not parent.is_dir():
    return
  for path in parent.glob(_tmp_prefix() + "*"):
    pid = path.name.rsplit("-", 1)[-1]
    if pid.isdigit() and not _pid_alive(int(pid)):
      print(f"removing {path} (left by an interrupted run)")
      shutil.rmtree(path, ignore_errors=True)


def train_tokenizer(
  texts: list[str],
  model_type: str,
  vocab_size: int | None,
  fold_words: bool = False,
) -> tuple[tok_lib.Tokenizer, str]:
  """Trains the dataset's tokenizer; `auto` picks char for letter-free text.

  Args:
    texts: questions and drafts of the train split.
    model_type: `auto`, `char`, `unigram` or `bpe`.
    vocab_size: for unigram/bpe (None: `DEFAULT_TEXT_VOCAB_SIZE`, lowered to
      what the text supports).
    fold_words: fold capitalized and plural words into their stem's token.

  Returns:
    The trained tokenizer and its model type.
  """
  if model_type == "auto":
    letters = any(c.isalpha() for t in texts for c in set(t))
    # BPE, not unigram: on a small-vocabulary text such as ProntoQA the
    # unigram trainer caps the vocabulary at a few hundred pieces (most of
    # them byte fallbacks) and splits common words; BPE merges up to whole
    # words (ProntoQA questions: 152 tokens at the 99.9th percentile, against
    # 296 with unigram; GSM8K about equal).
    model_type = "bpe" if letters else "char"
  train = lambda **kw: tok_lib.Tokenizer.train(
    texts, model_type=model_type, fold_words=fold_words, **kw
  )
  if model_type == "char":
    return train(), model_type
  size = vocab_size or DEFAULT_TEXT_VOCAB_SIZE
  try:
    tok = train(vocab_size=size)
  except RuntimeError as e:
    # "Vocabulary size too high (4096). Please set it to a value <= 1234."
    if vocab_size is not None or "<=" not in str(e):
      raise
    size = int(str(e).rsplit("<=", 1)[1].strip(" .\n"))
    tok = train(vocab_size=size)
  return tok, model_type


def check_roundtrip(
  tokenizer: tok_lib.Tokenizer, data: tokenized.TokenizedSplit, texts: dict
) -> int:
  """How many questions/drafts do not decode back to their text exactly."""
  drafts = [d for ds in texts["drafts"] for d in ds]
  rows = [
    data.draft_tokens[a:b].tolist()
    for a, b in zip(data.draft_offsets[:-1], data.draft_offsets[1:])
  ]
  rows += [data.question(i).tolist() for i in range(len(data))]
  # Without control ids in the rows, Tokenizer.decode (which stops at EOS
  # and drops PAD/BOS) is the batched decode_many used here.
  reserved = (tok_lib.PAD_ID, tok_lib.BOS_ID, tok_lib.EOS_ID)
  control = sum(
    int(np.isin(t, reserved).any())
    for t in (data.draft_tokens, data.question_tokens)
  )
  decoded = tokenizer.decode_many(rows)
  wrong = sum(a != b for a, b in zip(decoded, drafts + texts["question"]))
  return control + wrong


def _percentiles(x: np.ndarray) -> dict[str, int]:
  if not x.size:
    return {}
  qs = {"p50": 50, "p90": 90, "p99": 99, "p99.9": 99.9, "max": 100}
  return {k: int(np.percentile(x, q, method="higher")) for k, q in qs.items()}


def _round_up(x: int, multiple: int = 8) -> int:
  return max(multiple, -(-x // multiple) * multiple)


def split_stats(data: tokenized.TokenizedSplit) -> dict:
  """Sizes and token-length percentiles of one split."""
  levels = data.level_of_rows()
  lengths = data.draft_lengths()
  return {
    "examples": len(data),
    "question_tokens": _percentiles(data.question_lengths()),
    "num_drafts": _percentiles(data.num_levels()),
    # Tokens of the draft text; a batch row adds one EOS.
    "draft_tokens_per_level": [
      _percentiles(lengths[levels == t])
      for t in range(int(data.num_levels().max(initial=0)))
    ],
  }


def suggest_shapes(train: tokenized.TokenizedSplit) -> dict[str, int]:
  """Lq, Ld (with EOS) rounded up to 8s, and T, from the train split."""

  def cover(x):
    most = _round_up(int(np.percentile(x, SHAPE_PERCENTILE, method="higher")))
    every = _round_up(int(x.max()))
    return every if every <= SHAPE_TAIL_COST * most else most

  return {
    "max_question_len": cover(train.question_lengths()),
    "max_draft_len": cover(train.draft_lengths() + 1),
    "max_drafts": min(int(train.num_levels().max()), tok_lib.MAX_DRAFT_MARKERS),
  }


def _build_tfds(tmp_root, task, scheme, source_dir, num_examples, seed):
  """Builds the TFDS dataset under `tmp_root`; returns its version folder."""
  # Imported here: TensorFlow takes seconds, and bad usage should not wait.
  import tensorflow_datasets as tfds  # noqa: PLC0415

  from data_pipelines.builders import trajectories  # noqa: PLC0415

  tfds.disable_progress_bar()
  builder = trajectories.BottomupTrajectories(
    data_dir=os.fspath(tmp_root),
    config=trajectories.make_config(task, scheme),
    source_dir=source_dir,
    num_examples=num_examples,
    seed=seed,
  )
  print(f"{task}: building {builder.info.full_name} ...", flush=True)
  # TFDS prints "Downloading ... Subsequent calls will reuse" with the
  # temporary path: misleading here, so it is swallowed.
  with contextlib.redirect_stdout(io.StringIO()):
    builder.download_and_prepare()
  return pathlib.Path(builder.data_dir)


def _write_outputs(path, splits_texts, settings, model_type, vocab_size):
  """Tokenizer, tokens, stats, marker in `path` (the TFDS version folder)."""
  train = splits_texts["train"]
  tokenizer, model_type = train_tokenizer(
    train["question"] + [d for ds in train["drafts"] for d in ds],
    model_type,
    vocab_size,
    settings.get("fold_words", False),
  )
  data = {
    split: tokenized.tokenize_split(texts, tokenizer)
    for split, texts in splits_texts.items()
  }
  inexact = {
    split: check_roundtrip(tokenizer, data[split], texts)
    for split, texts in splits_texts.items()
  }
  if inexact["train"]:
    raise DataError(
      f"tokenizer does not reproduce {inexact['train']} train "
      "question(s)/draft(s) exactly"
    )
  shapes = suggest_shapes(data["train"])
  stats = {
    "task": settings["task"],
    "scheme": settings["scheme"],
    "tokenizer": {
      "model_type": model_type,
      "vocab_size": tokenizer.vocab_size,
      "fold_words": tokenizer.folds_words,
    },
    "suggested_shapes": shapes,
    "splits": {},
  }
  batch_shapes = batching.Shapes(**shapes)
  for split, d in data.items():
    d.save(path / builders.tokens_file(split))
    flags = tokenized.overlength_flags(d, batch_shapes)
    stats["splits"][split] = split_stats(d) | {
      "inexact_roundtrips": inexact[split],
      "overlength_at_suggested": dict(
        questions=int(flags[0].sum()),
        drafts=int(flags[1].sum()),
        levels=int(flags[2].sum()),
      ),
    }
  tokenizer.save(path / tok_lib.MODEL_FILE)
  (path / builders.STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
  # Last: the folder is complete only once this exists.
  tmp = path / (builders.MARKER_FILE + ".tmp")
  tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
  os.replace(tmp, path / builders.MARKER_FILE)
  return stats


def prepare(
  task: str,
  data_dir: str | os.PathLike,
  *,
  source_dir: str | os.PathLike | None = None,
  scheme: str | None = None,
  num_examples: dict[str, int] | None = None,
  seed: int = 0,
  model_type: str = "auto",
  vocab_size: int | None = None,
  fold_words: bool = False,
) -> pathlib.Path:
  """Prepares (task, scheme) under `data_dir`, or does nothing if done.

  Args:
    task: task name.
    data_dir: output root.
    source_dir: raw data folder of file tasks (else $BOTTOMUP_DATA_DIR).
    scheme: coarsening scheme (None: the task's default).
    num_examples: split -> size; generated tasks default to
      `builders.DEFAULT_NUM_EXAMPLES`, file tasks to whole files.
    seed: generator seed (generated tasks).
    model_type: tokenizer type: `auto`, `char`, `unigram` or `bpe`.
    vocab_size: unigram/bpe vocabulary (None: automatic).
    fold_words: fold capitalized and plural words into their stem's token
      (`data_pipelines.tokenizer`).

  Returns:
    The prepared dataset folder.

  Raises:
    DataError: malformed input (the message names file and line).
    FileNotFoundError: raw files missing.
    ValueError: bad arguments, or an existing dataset with other settings.
  """
  task_obj = get_task(task)
  scheme = task_obj.check_scheme(scheme)
  num_examples = dict(num_examples or {})
  if task_obj.generated:
    num_examples = builders.DEFAULT_NUM_EXAMPLES | num_examples
  settings = {
    "task": task,
    "scheme": scheme,
    "num_examples": num_examples,
    "seed": seed if task_obj.generated else None,
    "model_type": model_type,
    "vocab_size": vocab_size,
  }
  if fold_words:  # Absent when off: datasets prepared before it still match.
    settings["fold_words"] = True
  final = builders.dataset_dir(data_dir, task, scheme)
  done = builders.read_marker(final)
  if done is not None:
    if done != settings:
      raise ValueError(
        f"{final} was prepared with other settings ({done}); remove it "
        "or use another --data_dir"
      )
    print(f"{task}: already prepared at {final}")
    return final
  final.parent.mkdir(parents=True, exist_ok=True)
  remove_stale_tmp(final.parent)
  tmp_root = final.parent / f"{_tmp_prefix()}{os.getpid()}"
  try:
    path = _build_tfds(tmp_root, task, scheme, source_dir, num_examples, seed)
    from data_pipelines.builders import trajectories  # noqa: PLC0415

    texts = {
      split: trajectories.read_split_texts(path, split)
      for split in task_obj.splits
    }
    for split, cols in texts.items():
      if len(set(cols["id"])) != len(cols["id"]):
        raise DataError(f"{task}/{split}: duplicate trajectory ids")
    stats = _write_outputs(path, texts, settings, model_type, vocab_size)
    if builders.read_marker(final) is not None:
      print(f"{task}: a concurrent run prepared {final} first; keeping it")
      return final
    if final.exists():  # no marker: an incomplete foreign leftover
      shutil.rmtree(final)
    os.rename(path, final)  # atomic: the folder appears complete
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)
  sizes = ", ".join(f"{s} {v['examples']}" for s, v in stats["splits"].items())
  print(
    f"{task}: prepared {final}\n  examples: {sizes}\n  tokenizer: "
    f"{stats['tokenizer']}\n  suggested shapes: {stats['suggested_shapes']}"
  )
  return final


class _Parser(argparse.ArgumentParser):
  """Usage errors also list the known tasks."""

  def error(self, message):
    self.print_usage(sys.stderr)
    self.exit(2, f"{self.prog}: error: {message}\nknown tasks: {_known()}\n")


def _known() -> str:
  return ", ".join(KNOWN)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """The command line (exits with status 2 and a message if it is bad)."""
  parser = _Parser(
    prog="python -m data_pipelines.prepare",
    description="Prepare a bottomup dataset (TFDS + tokenizer + tokens).",
    epilog=f"known tasks: {_known()}",
  )
  parser.add_argument("--task", required=True, help="task name")
  parser.add_argument("--data_dir", required=True, help="output root")
  parser.add_argument("--source_dir", help="raw data (else $BOTTOMUP_DATA_DIR)")
  parser.add_argument("--scheme", help="coarsening scheme (default: task's)")
  for split in ("train", "valid", "test"):
    parser.add_argument(
      f"--num_{split}",
      type=int,
      help=f"{split} size (generated tasks; caps file tasks)",
    )
  parser.add_argument("--seed", type=int, default=0, help="generator seed")
  parser.add_argument(
    "--model_type",
    default="auto",
    choices=("auto", "char", "unigram", "bpe"),
    help="tokenizer type (auto: char for text without letters, else bpe)",
  )
  parser.add_argument("--vocab_size", type=int, help="unigram/bpe vocab")
  parser.add_argument(
    "--fold_words",
    action="store_true",
    help="one token for a word's capitalized and plural forms (stem + "
    "marker pieces); for small closed vocabularies such as ProntoQA",
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """The CLI; returns the exit status (0 done, 1 bad data, 2 bad usage)."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    get_task(args.task)
  except ValueError as e:
    print(f"prepare: error: {e}", file=sys.stderr)
    return 2
  num = {
    split: getattr(args, f"num_{split}")
    for split in ("train", "valid", "test")
    if getattr(args, f"num_{split}") is not None
  }
  try:
    prepare(
      args.task,
      args.data_dir,
      source_dir=args.source_dir,
      scheme=args.scheme,
      num_examples=num,
      seed=args.seed,
      model_type=args.model_type,
      vocab_size=args.vocab_size,
      fold_words=args.fold_words,
    )
  except (DataError, FileNotFoundError, ValueError) as e:
    print(f"prepare: error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("prepare: interrupted; nothing half-built was left", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
