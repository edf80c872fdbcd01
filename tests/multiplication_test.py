"""Tests of the multiplication task: iCoT format, generator, schemes, parser."""

import re

import pytest

from data_pipelines.tasks import get_task, multiplication
from data_pipelines.trajectory import DataError

_SIZES = (4, 5, 7, 9)
_SPLITS = ("train", "valid", "test")

# 1234 * 5678 = 7006652, worked by hand. Numbers are LSD first.
_A, _B = 1234, 5678
_ICOT_LINE = (
  "4 3 2 1 * 8 7 6 5||2 7 8 9 0 + 0 8 3 6 8 0 ( 2 5 2 6 9 0 ) + "
  "0 0 4 0 4 7 0 ( 2 5 6 6 3 8 0 ) + 0 0 0 0 7 1 6 0 #### 2 5 6 6 0 0 7 0"
)
_ICOT_DRAFT = "27890+083680(252690)+0040470(2566380)+00007160####25660070"
# Partial products a * (digit of b) * place, most significant digit of b
# first, and the running estimates, as ordinary numbers.
_PARTIALS = (6170000, 740400, 86380, 9872)
_ESTIMATES = (6170000, 6910400, 6996780, 7006652)
_SCALE_DRAFTS = (
  "+00007160=00007160",
  "+00404700=00401960",
  "+08368000=08769960",
  "+27890000=25660070",
)
_ANSWER = "25660070"


def _task(n=4):
  return multiplication.MultiplicationTask(n)


def _icot_pattern(n):
  """A regex for one iCoT line with n-digit operands."""
  num = lambda k: rf"\d(?: \d){{{k - 1}}}"
  return re.compile(
    rf"^{num(n)} \* {num(n)}\|\|"
    rf"\d(?: \d)*(?: \+ \d(?: \d)*(?: \( \d(?: \d)* \))?)* "
    rf"#### {num(2 * n)}$"
  )


@pytest.mark.parametrize("n", _SIZES)
def test_icot_line_reproduces_the_real_files(data_dir, n):
  folder = data_dir / "icot" / f"{n}_by_{n}_mult"
  task = _task(n)
  for name in ("valid.txt", "test_bigbench.txt"):
    path = folder / name
    assert path.is_file(), f"missing {path}"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 100
    for lineno, line in enumerate(lines, 1):
      a, b = multiplication.parse_icot_line(line, n, f"{path}:{lineno}")
      assert multiplication.icot_line(a, b, n) == line, f"{path}:{lineno}"
    # The loader reads the same file into trajectories that verify.
    trajs = list(task.load_file(path, "icot"))
    assert len(trajs) == len(lines)
    for traj, line in zip(trajs, lines):
      assert traj.drafts == (line.split("||")[1].replace(" ", ""),)
      assert task.verify(traj.drafts[-1], traj.answer)


def test_icot_line_matches_a_hand_worked_example():
  assert multiplication.icot_line(_A, _B, 4) == _ICOT_LINE
  assert multiplication.parse_icot_line(_ICOT_LINE, 4, "x") == (_A, _B)


def test_rev_and_unrev_are_inverse_and_lsd_first():
  assert multiplication.rev(1234, 6) == "432100"
  assert multiplication.unrev("4 3 2 1 0 0") == 1234
  with pytest.raises(ValueError, match="more than 3 digits"):
    multiplication.rev(1234, 3)


@pytest.mark.parametrize("n", _SIZES)
def test_generated_lines_are_icot_format_and_parse_back(n):
  pattern = _icot_pattern(n)
  lines = list(_task(n).generate_lines("train", 50, seed=0))
  assert len(lines) == 50
  for i, line in enumerate(lines):
    assert pattern.match(line), line
    a, b = multiplication.parse_icot_line(line, n, f"gen:{i}")
    assert multiplication.icot_line(a, b, n) == line


def test_generator_is_deterministic_per_seed_and_differs_across_seeds():
  task = _task(5)
  first = list(task.generate_lines("train", 200, seed=7))
  again = list(task.generate_lines("train", 200, seed=7))
  other = list(task.generate_lines("train", 200, seed=8))
  assert first == again
  assert first != other
  assert len(set(first) & set(other)) < 5
  trajs = list(task.generate("valid", num=20, seed=7, scheme="scale"))
  assert trajs == list(task.generate("valid", num=20, seed=7, scheme="scale"))
  assert len({t.id for t in trajs}) == 20


def test_generated_splits_are_disjoint_and_respect_split_of():
  task = _task(4)
  pairs = {}
  for split in _SPLITS:
    got = list(task.sample_pairs(split, 3000, seed=0))
    assert len(got) == 3000
    assert all(multiplication.split_of(a, b) == split for a, b in got)
    pairs[split] = set(got)
  assert not pairs["train"] & pairs["valid"]
  assert not pairs["train"] & pairs["test"]
  assert not pairs["valid"] & pairs["test"]
  # Valid and test each take one bucket in twenty.
  sample = list(task.sample_pairs("train", 1, seed=1))
  assert multiplication.split_of(*sample[0]) == "train"
  with pytest.raises(ValueError, match="unknown split"):
    next(task.sample_pairs("dev", 1, seed=0))


def test_split_of_gives_valid_and_test_a_small_share():
  counts = dict.fromkeys(_SPLITS, 0)
  for a in range(1000, 1100):
    for b in range(1000, 1100):
      counts[multiplication.split_of(a, b)] += 1
  for split in ("valid", "test"):
    assert 300 < counts[split] < 700, counts


@pytest.mark.parametrize("n", _SIZES)
def test_operands_have_exactly_n_digits(n):
  task = _task(n)
  for split in _SPLITS:
    for a, b in task.sample_pairs(split, 500, seed=3):
      assert len(str(a)) == n and len(str(b)) == n
  for traj in task.generate("test", num=50, seed=3, scheme="scale"):
    ra, rb = traj.question.split("*")
    assert len(ra) == len(rb) == n
    assert ra[-1] != "0" and rb[-1] != "0"  # no leading zero (LSD first)
    assert len(traj.answer) == 2 * n


def test_scale_drafts_of_a_hand_checked_example():
  task = _task(4)
  drafts = task.drafts(_A, _B, "scale")
  assert drafts == _SCALE_DRAFTS
  for k, draft in enumerate(drafts):
    partial, estimate = draft[1:].split("=")
    assert multiplication.unrev(partial) == _PARTIALS[k]
    # d_k's estimate = a * (b truncated to its k + 1 leading digits).
    truncated = int(str(_B)[: k + 1]) * 10 ** (3 - k)
    assert multiplication.unrev(estimate) == _A * truncated == _ESTIMATES[k]
  assert drafts[-1].endswith("=" + _ANSWER)
  assert multiplication.unrev(_ANSWER) == _A * _B


def test_scale_plain_drafts_are_the_estimates_only():
  drafts = _task(4).drafts(_A, _B, "scale_plain")
  assert drafts == tuple(d.split("=")[1] for d in _SCALE_DRAFTS)
  assert [multiplication.unrev(d) for d in drafts] == list(_ESTIMATES)
  assert drafts[-1] == _ANSWER


def test_icot_scheme_is_the_compact_icot_chain():
  drafts = _task(4).drafts(_A, _B, "icot")
  assert drafts == (_ICOT_DRAFT,)
  assert drafts[0] == _ICOT_LINE.split("||")[1].replace(" ", "")
  assert drafts[0].endswith("####" + _ANSWER)


@pytest.mark.parametrize("scheme", ["scale", "scale_plain", "icot"])
@pytest.mark.parametrize("n", _SIZES)
def test_final_draft_verifies_and_a_wrong_answer_does_not(n, scheme):
  task = _task(n)
  for traj in task.generate("valid", num=30, seed=1, scheme=scheme):
    a, b = task.operands(traj.question)
    assert traj.answer == multiplication.rev(a * b, 2 * n)
    assert len(traj.drafts) == (1 if scheme == "icot" else n)
    assert task.verify(traj.drafts[-1], traj.answer)
    assert task.extract_answer(traj.drafts[-1]) == traj.answer
    wrong = multiplication.rev(a * b + 1, 2 * n)
    assert not task.verify(traj.drafts[-1], wrong)
    if scheme != "icot":
      # Estimates only grow, and only the last one is the product.
      estimates = [multiplication.unrev(d.split("=")[-1]) for d in traj.drafts]
      assert estimates == sorted(estimates)
      assert estimates[-1] == a * b


def test_verify_rejects_a_wrong_final_estimate():
  task = _task(4)
  assert task.verify(_SCALE_DRAFTS[-1], _ANSWER)
  assert task.verify(_SCALE_DRAFTS[-1], " " + _ANSWER + "\n")
  assert not task.verify(_SCALE_DRAFTS[0], _ANSWER)
  assert not task.verify("+27890000=25660071", _ANSWER)


@pytest.mark.parametrize(
  "junk", ["", "abc", "####", "+27890000=2566007", "25660070x1", "1" * 9]
)
def test_extract_answer_returns_none_for_junk(junk):
  task = _task(4)
  assert task.extract_answer(junk) is None
  assert not task.verify(junk, _ANSWER)


@pytest.mark.parametrize("text", ["1234*5678", " 1234 x 5678 ", "1234×5678"])
def test_parse_question_reverses_operands(text):
  assert _task(4).parse_question(text) == "4321*8765"


@pytest.mark.parametrize(
  "text",
  [
    "123*5678",
    "1234*56789",
    "0123*5678",
    "abc",
    "",
    "1234+5678",
    "1234*5678*9",
    "12a4*5678",
  ],
)
def test_parse_question_rejects_bad_input(text):
  with pytest.raises(ValueError):
    _task(4).parse_question(text)


def test_format_question_and_drafts_are_msd_first():
  task = _task(4)
  question = task.parse_question("1234*5678")
  assert task.format_question(question) == "1234 * 5678"
  assert task.format_draft(_SCALE_DRAFTS[0]) == "+ 06170000 = 06170000"
  assert task.format_draft(_SCALE_DRAFTS[-1]) == "+ 00009872 = 07006652"
  assert task.format_draft(_ANSWER) == "07006652"


def test_get_task_builds_square_multiplication():
  task = get_task("multiplication_7x7")
  assert isinstance(task, multiplication.MultiplicationTask)
  assert task.n == 7 and task.name == "multiplication_7x7"
  assert task.source_subdir == "icot/7_by_7_mult"
  (traj,) = task.trajectories("train", num=1, seed=0)
  assert traj.task == "multiplication_7x7"
  assert len(traj.drafts) == 7
  assert task.verify(traj.drafts[-1], traj.answer)


def test_get_task_unknown_name_lists_known_tasks():
  with pytest.raises(ValueError, match="unknown task 'sorting'") as e:
    get_task("sorting")
  for known in ("multiplication_NxN", "prontoqa", "gsm8k"):
    assert known in str(e.value)


def test_get_task_rejects_non_square_multiplication():
  with pytest.raises(ValueError, match="multiplication_3x4.*square"):
    get_task("multiplication_3x4")


def test_bad_size_and_scheme_and_missing_num_are_rejected():
  with pytest.raises(ValueError, match="n >= 1"):
    multiplication.MultiplicationTask(0)
  task = _task(4)
  with pytest.raises(ValueError, match="scale, scale_plain, icot"):
    task.check_scheme("bogus")
  with pytest.raises(ValueError, match="give `num`"):
    next(task.trajectories("train"))


def _write_lines(path, pairs, n):
  lines = [multiplication.icot_line(a, b, n) for a, b in pairs]
  path.write_text("\n".join(lines[:1] + [""] + lines[1:]) + "\n")


def test_load_file_reads_an_icot_format_file(tmp_path):
  task = _task(4)
  pairs = [(_A, _B), (9999, 1000), (4321, 8765)]
  path = tmp_path / "mine.txt"
  _write_lines(path, pairs, 4)
  trajs = list(task.load_file(path))  # the default scheme: scale
  assert [task.operands(t.question) for t in trajs] == pairs
  assert [t.id for t in trajs] == ["mine-1", "mine-3", "mine-4"]
  assert trajs[0].drafts == _SCALE_DRAFTS
  assert trajs[0].answer == _ANSWER
  assert all(t.task == "multiplication_4x4" for t in trajs)
  assert multiplication.pairs_in(trajs, task) == set(pairs)
  icot = next(task.load_file(str(path), "icot"))
  assert icot.drafts == (_ICOT_DRAFT,)


@pytest.mark.parametrize(
  "bad",
  [
    "hello world",
    _ICOT_LINE.replace("#### 2 5 6 6 0 0 7 0", "#### 2 5 6 6 0 0 7 1"),
    _ICOT_LINE.replace("4 3 2 1 *", "4 3 2 1 5 *"),
    _ICOT_LINE.replace("||", " "),
    _ICOT_LINE.replace(" #### ", " "),
  ],
)
def test_malformed_line_raises_data_error_naming_file_and_line(tmp_path, bad):
  path = tmp_path / "bad.txt"
  path.write_text(_ICOT_LINE + "\n" + bad + "\n")
  trajs = _task(4).load_file(path)
  assert next(trajs).answer == _ANSWER  # line 1 is fine
  with pytest.raises(DataError, match=re.escape(f"{path}:2")):
    next(trajs)


def test_a_line_of_another_size_is_rejected(tmp_path):
  path = tmp_path / "five.txt"
  path.write_text(multiplication.icot_line(12345, 67890, 5) + "\n")
  with pytest.raises(DataError, match=re.escape(f"{path}:1")):
    list(_task(4).load_file(path))
