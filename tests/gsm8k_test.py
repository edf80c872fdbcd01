"""Tests of the GSM8K task: drafts, verifier, annotation checker, loader."""

import json

import pytest

from data_pipelines.tasks import get_task, gsm8k
from data_pipelines.trajectory import DataError

# Made-up problems in the dataset's shape (not dataset text).
_SOLUTION = (
  "Tom has 3 * 12 = <<3*12=36>>36 pens.\n"
  "After giving away 5 he has 36 - 5 = <<36-5=31>>31 pens.\n"
  "Each of his 31 pens costs $2, so they are worth 31 * 2 = $<<31*2=62>>62.\n"
  "#### 62"
)


def _record(i, answer=_SOLUTION):
  return {"question": f"Problem {i}: how many pens?", "answer": answer}


def _write(root, name, lines):
  folder = root / "gsm8k"
  folder.mkdir(exist_ok=True)
  path = folder / name
  path.write_text(
    "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
  )
  return path


def test_registry_returns_the_task():
  task = get_task("gsm8k")
  assert isinstance(task, gsm8k.GSM8KTask)
  assert task.num_valid == gsm8k.NUM_VALID


def test_plan_scheme_drafts():
  d0, d1, d2 = gsm8k.make_drafts(_SOLUTION, "plan")
  assert d0 == "A=n*n\nB=A-n\nC=B*n"
  assert d1 == "3*12=36\n36-5=31\n31*2=62\n#### 62"
  assert d2 == _SOLUTION


def test_plan_clean_and_solution_schemes():
  *_, clean = gsm8k.make_drafts(_SOLUTION, "plan_clean")
  assert "<<" not in clean and clean.startswith("Tom has 3 * 12 = 36 pens.")
  assert gsm8k.make_drafts(_SOLUTION, "solution") == (_SOLUTION,)


def test_plan_without_annotations():
  drafts = gsm8k.make_drafts("Half of 14 is 7.\n#### 7", "plan")
  assert drafts[:2] == (gsm8k.NO_PLAN, "#### 7")


def test_plan_names_results_past_z():
  pairs = [("1+1", "2")] + [("2+1", "3")] * 27
  plan = gsm8k.make_plan(pairs).splitlines()
  assert plan[0] == "A=n+n"
  assert plan[1] == "B=A+n"  # 2 is result A
  assert plan[26].startswith("AA=") and plan[27].startswith("AB=")


@pytest.mark.parametrize(
  "text, expected",
  [
    ("1,000", "1000"),
    ("$1,000.50", "1000.5"),
    ("0.50", "0.5"),
    ("10.0", "10"),
    ("100", "100"),
    ("-3", "-3"),
    ("-0.0", "0"),
    (".5", "0.5"),
    (" 72.", "72"),
    ("abc", None),
    ("1e5", None),
    ("", None),
  ],
)
def test_canonical_number(text, expected):
  assert gsm8k.canonical_number(text) == expected


@pytest.mark.parametrize(
  "text, expected",
  [
    ("so #### 1,000", "1000"),
    ("#### $18", "18"),
    ("#### 0.50", "0.5"),
    ("#### 10.0 dollars", "10"),
    ("#### -7", "-7"),
    ("#### 3\nno wait\n#### 4", "4"),  # the last marker wins
    ("The answer is 42.", "42"),  # no marker: the last number
    ("A=48-6, so 10-5", "5"),  # a minus between numbers is no sign
    ("It costs -$4 in total", "-4"),
    ("7 apples #### none", "7"),  # nothing after the marker
    ("A=n/n\nB=n+A", None),
  ],
)
def test_extract_answer(text, expected):
  assert gsm8k.GSM8KTask().extract_answer(text) == expected


def test_verify_compares_canonical_numbers():
  task = gsm8k.GSM8KTask()
  assert task.verify("#### $1,000", "1000")
  assert task.verify("#### 1000", "1,000")
  assert task.verify("#### 0.5", "0.50")
  assert task.verify("#### 10", "10.0")
  assert task.verify("#### -7", "-7")
  assert not task.verify("#### 7", "-7")
  assert not task.verify("no number here", "7")


@pytest.mark.parametrize(
  "expr, value",
  [
    ("(60+72+42)/3", 58),
    ("2**3", 8),
    ("7%3", 1),
    ("-4+-1", -5),
    ("05*2", 10),
    ("0.05*100", 5),
    ("1,000*2", 2000),
  ],
)
def test_eval_arithmetic(expr, value):
  assert gsm8k.eval_arithmetic(expr) == pytest.approx(value)


@pytest.mark.parametrize(
  "expr",
  [
    "__import__('os').getcwd()",
    "abs(-1)",
    "x*2",
    "True+1",
    "2j",
    "1/0",
    "9**9**9",
    "(-8)**0.5",
    "560//10",  # floor division is not among the allowed operators
    "",
  ],
)
def test_eval_arithmetic_rejects(expr):
  with pytest.raises(ValueError):
    gsm8k.eval_arithmetic(expr)


@pytest.mark.parametrize(
  "expr, shown, ok",
  [
    ("48/2", "24", True),
    ("10/3", "3.33", True),  # rounded to the decimals shown
    ("10/3", "3.3333", True),  # within the relative tolerance
    ("2/3", "0.67", True),
    ("2/3", "0.6", False),  # truncated, not rounded
    ("2*3", "7", False),
    ("1,000*2", "2,000", True),
    ("100*0.5", "50.00", True),
  ],
)
def test_annotation_ok(expr, shown, ok):
  assert gsm8k.annotation_ok(expr, shown) is ok


def test_check_annotations_counts_each_kind():
  records = [
    _record(0),  # all three check out
    _record(1, "2*3 = <<2*3=7>>7\n#### 7"),  # wrong
    _record(2, "<<x*2=4>>4\n#### 4"),  # unparsable expression
    _record(3, "<<1/2=1/2>>1/2\n#### 0.5"),  # unparsable value
    _record(4, "<<2*3=7>>7 <<2^3=8>>8\n#### 8"),  # wrong and unparsable
    _record(5, "Half of 14 is 7.\n#### 7"),  # no annotations
  ]
  check = gsm8k.check_annotations(records)
  assert check.num_records == 6
  assert check.num_annotations == 3 + 1 + 1 + 1 + 2
  assert check.wrong == (1,)
  assert check.unparsable == (2, 3, 4)
  assert check.no_annotations == 1
  assert check.num_ok == 1


def test_valid_is_carved_from_the_end_of_train(tmp_path):
  _write(tmp_path, "train.jsonl", [_record(i) for i in range(5)])
  task = gsm8k.GSM8KTask(num_valid=2)
  train = list(task.trajectories("train", source_dir=tmp_path))
  valid = list(task.trajectories("valid", source_dir=tmp_path))
  assert [t.id for t in train] == [f"gsm8k-train-{i}" for i in (1, 2, 3)]
  assert [t.id for t in valid] == ["gsm8k-train-4", "gsm8k-train-5"]
  assert valid[0].question == "Problem 3: how many pens?"
  assert all(t.answer == "62" for t in train + valid)
  with pytest.raises(DataError, match="carved out"):
    list(
      gsm8k.GSM8KTask(num_valid=5).trajectories("train", source_dir=tmp_path)
    )


@pytest.mark.parametrize(
  "line4, message",
  [
    ('{"question": "Broken', "malformed JSON"),
    ({"question": "No answer?"}, "missing field 'answer'"),
    ({"question": 3, "answer": "#### 3"}, "'question' must be a string"),
    (_record(3, "No final line."), "####"),
    ('"just a string"', "JSON object"),
  ],
)
def test_malformed_line_names_file_and_line(tmp_path, line4, message):
  lines = [_record(1), _record(2), "", line4, _record(5)]
  path = _write(tmp_path, "test.jsonl", lines)
  with pytest.raises(DataError, match=message) as e:
    list(gsm8k.GSM8KTask().trajectories("test", source_dir=tmp_path))
  assert f"{path}:4" in str(e.value)


def test_missing_file_names_files_and_upstream(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    next(gsm8k.GSM8KTask().trajectories("valid", source_dir=tmp_path))
  message = str(e.value)
  assert "train.jsonl" in message and "test.jsonl" in message
  assert "https://github.com/openai/grade-school-math" in message


def test_real_data(data_dir):
  task = gsm8k.GSM8KTask()
  trajs = {
    split: list(task.trajectories(split, source_dir=data_dir))
    for split in task.splits
  }
  assert {s: len(t) for s, t in trajs.items()} == {
    "train": 7473 - 500,
    "valid": 500,
    "test": 1319,
  }
  ids = [t.id for ts in trajs.values() for t in ts]
  assert len(set(ids)) == len(ids)
  for t in (t for ts in trajs.values() for t in ts):
    assert task.verify(t.drafts[-1], t.answer)
    assert task.verify(t.drafts[1], t.answer)
    assert task.extract_answer(t.drafts[0]) is None  # a plan has no values


def test_real_annotations_check_out(data_dir):
  path = data_dir / "gsm8k" / "train.jsonl"
  if not path.is_file():
    pytest.skip(f"{path} not found")
  check = gsm8k.check_annotations(r for _, r in gsm8k.read_records(path))
  print(check)
  assert check.num_records == 7473
  assert check.no_annotations == 95
  assert check.wrong == ()
  # Two annotations use floor division ("560//10", "180//3").
  assert len(check.unparsable) == 2
