"""Tests of `python -m data_pipelines.prepare` and the TFDS builder.

Data are made here: generated multiplication with small splits, and a tiny
GSM8K-shaped jsonl of made-up problems (no dataset text).
"""

import json
import os
import subprocess

import pytest

from data_pipelines import builders, prepare
from data_pipelines import tokenizer as tok_lib
from data_pipelines.builders import trajectories
from data_pipelines.tasks import gsm8k

SMALL = ["--num_train=120", "--num_valid=20", "--num_test=20"]
_SOLUTION = (
  "Ann buys {a} boxes of {b} pens, so she has {a} * {b} = <<{a}*{b}={ab}>>"
  "{ab} pens.\nShe gives away 3 and keeps {ab} - 3 = <<{ab}-3={k}>>{k}.\n"
  "#### {k}"
)


def _run(capsys, *args):
  """prepare's CLI in-process: (exit status, stdout, stderr)."""
  try:
    rc = prepare.main([str(a) for a in args])
  except SystemExit as e:  # argparse usage errors
    rc = e.code
  out, err = capsys.readouterr()
  return rc, out, err


def _fake_gsm8k(root, n_train, broken_line=None):
  """`root/gsm8k/{train,test}.jsonl` with made-up problems."""
  folder = root / "gsm8k"
  folder.mkdir(parents=True)
  for name, n in (("train.jsonl", n_train), ("test.jsonl", 12)):
    lines = []
    for i in range(n):
      a, b = 2 + i % 7, 3 + i % 5
      answer = _SOLUTION.format(a=a, b=b, ab=a * b, k=a * b - 3)
      q = f"Ann buys {a} boxes of {b} pens and gives 3 away. How many left?"
      lines.append(json.dumps({"question": q, "answer": answer}))
    if broken_line is not None and name == "train.jsonl":
      lines[broken_line - 1] = '{"question": "unterminated'
    (folder / name).write_text("\n".join(lines) + "\n")
  return root


def _complete_datasets(root):
  return sorted(p.parent for p in root.rglob(builders.MARKER_FILE))


def test_prepare_then_second_run_is_a_noop(tmp_path, capsys):
  rc, out, _ = _run(
    capsys, "--task=multiplication_4x4", f"--data_dir={tmp_path}", *SMALL
  )
  assert rc == 0, out
  path = builders.dataset_dir(tmp_path, "multiplication_4x4")
  assert _complete_datasets(tmp_path) == [path]
  for name in ("spm.model", "stats.json", "dataset_info.json"):
    assert (path / name).is_file()
  for split in ("train", "valid", "test"):
    assert (path / builders.tokens_file(split)).is_file()
  stats = json.loads((path / builders.STATS_FILE).read_text())
  assert stats["tokenizer"]["model_type"] == "char"
  assert {s: v["examples"] for s, v in stats["splits"].items()} == {
    "train": 120,
    "valid": 20,
    "test": 20,
  }
  assert stats["suggested_shapes"] == {
    "max_question_len": 16,  # 9 tokens, rounded up to 8s
    "max_draft_len": 24,  # 18 + EOS
    "max_drafts": 4,
  }
  assert stats["splits"]["train"]["overlength_at_suggested"] == {
    "questions": 0,
    "drafts": 0,
    "levels": 0,
  }
  marker = (path / builders.MARKER_FILE).stat().st_mtime_ns
  rc, out, _ = _run(
    capsys, "--task=multiplication_4x4", f"--data_dir={tmp_path}", *SMALL
  )
  assert rc == 0 and "already prepared" in out
  assert (path / builders.MARKER_FILE).stat().st_mtime_ns == marker
  # Other settings into the same folder: refused, not silently reused.
  rc, _, err = _run(
    capsys, "--task=multiplication_4x4", f"--data_dir={tmp_path}"
  )
  assert rc == 1 and "other settings" in err


def test_builder_configs_and_features():
  names = [c.name for c in trajectories.BottomupTrajectories.BUILDER_CONFIGS]
  assert names == list(builders.CONFIG_TASKS)
  config = trajectories.make_config("multiplication_4x4", "icot")
  assert config.name == "multiplication_4x4-icot"
  assert trajectories.make_config("gsm8k", "plan") is (
    trajectories.make_config("gsm8k")
  )
  builder = trajectories.BottomupTrajectories(
    data_dir="/nonexistent", config="prontoqa"
  )
  features = builder.info.features
  assert set(features.keys()) == {"id", "question", "drafts", "answer"}


def test_other_scheme_is_its_own_dataset(tmp_path, capsys):
  rc, out, _ = _run(
    capsys,
    "--task=multiplication_4x4",
    "--scheme=icot",
    f"--data_dir={tmp_path}",
    "--num_train=30",
    "--num_valid=5",
    "--num_test=5",
  )
  assert rc == 0, out
  path = builders.dataset_dir(tmp_path, "multiplication_4x4", "icot")
  assert path.parent.name == "multiplication_4x4-icot"
  cols = trajectories.read_split_texts(path, "valid")
  assert all(len(d) == 1 for d in cols["drafts"])


def test_gsm8k_text_task(tmp_path, capsys):
  raw = _fake_gsm8k(tmp_path / "raw", gsm8k.NUM_VALID + 40)
  out_dir = tmp_path / "out"
  rc, out, err = _run(
    capsys, "--task=gsm8k", f"--data_dir={out_dir}", f"--source_dir={raw}"
  )
  assert rc == 0, err
  path = builders.dataset_dir(out_dir, "gsm8k")
  stats = json.loads((path / builders.STATS_FILE).read_text())
  assert stats["tokenizer"]["model_type"] == "bpe"
  assert {s: v["examples"] for s, v in stats["splits"].items()} == {
    "train": 40,
    "valid": gsm8k.NUM_VALID,
    "test": 12,
  }
  assert stats["suggested_shapes"]["max_drafts"] == 3
  # encode -> decode is exact for every draft, newlines and all.
  tokenizer = tok_lib.Tokenizer.load(path)
  cols = trajectories.read_split_texts(path, "train")
  drafts = [d for ds in cols["drafts"] for d in ds]
  assert any("\n" in d for d in drafts)
  for d in drafts:
    assert tokenizer.decode(tokenizer.encode(d)) == d


def test_malformed_line_stops_and_leaves_nothing(tmp_path, capsys):
  raw = _fake_gsm8k(tmp_path / "raw", gsm8k.NUM_VALID + 10, broken_line=4)
  out_dir = tmp_path / "out"
  rc, out, err = _run(
    capsys, "--task=gsm8k", f"--data_dir={out_dir}", f"--source_dir={raw}"
  )
  assert rc == 1
  assert "train.jsonl:4" in err and "line 4" in err
  assert "Traceback" not in err
  assert _complete_datasets(out_dir) == []
  assert not list(out_dir.rglob(".prepare-*"))
  assert not builders.dataset_dir(out_dir, "gsm8k").exists()


def test_missing_source_says_where(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("BOTTOMUP_DATA_DIR", raising=False)
  rc, _, err = _run(capsys, "--task=gsm8k", f"--data_dir={tmp_path}")
  assert rc == 1 and "train.jsonl" in err and "--source_dir" in err
  assert _complete_datasets(tmp_path) == []


def test_unknown_task_and_bad_flag_list_the_tasks(tmp_path, capsys):
  rc, _, err = _run(capsys, "--task=sudoku_99", f"--data_dir={tmp_path}")
  assert rc == 2
  for known in ("multiplication_NxN", "prontoqa", "gsm8k"):
    assert known in err
  rc, _, err = _run(
    capsys, "--task=gsm8k", f"--data_dir={tmp_path}", "--nonsense=1"
  )
  assert rc == 2 and "--nonsense" in err and "prontoqa" in err


def test_interrupted_run_leaves_no_complete_dataset(tmp_path, monkeypatch):
  def crash(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(prepare.tokenized.TokenizedSplit, "save", crash)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(
      "multiplication_4x4", tmp_path, num_examples={"train": 20}, seed=0
    )
  assert _complete_datasets(tmp_path) == []
  assert not builders.dataset_dir(tmp_path, "multiplication_4x4").exists()
  assert not list(tmp_path.rglob(".prepare-*"))


def test_stale_tmp_of_a_killed_run_is_removed(tmp_path, capsys):
  proc = subprocess.Popen(["true"])
  proc.wait()  # a pid that no longer runs
  parent = builders.dataset_dir(tmp_path, "multiplication_4x4").parent
  stale = parent / f"{prepare._tmp_prefix()}{proc.pid}"
  (stale / "half").mkdir(parents=True)
  # A run still going (here: our parent process) keeps its folder.
  live = parent / f"{prepare._tmp_prefix()}{os.getppid()}"
  live.mkdir()
  rc, out, _ = _run(
    capsys,
    "--task=multiplication_4x4",
    f"--data_dir={tmp_path}",
    "--num_train=20",
    "--num_valid=5",
    "--num_test=5",
  )
  assert rc == 0 and "interrupted run" in out
  assert not stale.exists()
  assert live.exists()


def test_real_prontoqa_and_gsm8k(data_dir, tmp_path, capsys):
  """Prepares capped real splits (skipped without BOTTOMUP_DATA_DIR)."""
  for task in ("prontoqa", "gsm8k"):
    rc, _, err = _run(
      capsys,
      f"--task={task}",
      f"--data_dir={tmp_path}",
      f"--source_dir={data_dir}",
      "--num_train=300",
      "--num_test=50",
    )
    assert rc == 0, err
    stats = json.loads(
      (builders.dataset_dir(tmp_path, task) / builders.STATS_FILE).read_text()
    )
    assert stats["splits"]["train"]["examples"] == 300
    assert stats["splits"]["train"]["inexact_roundtrips"] == 0
