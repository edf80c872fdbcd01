"""GSM8K grade-school math word problems (`gsm8k`).

Raw format: `train.jsonl` (7,473 lines) and `test.jsonl` (1,319 lines), one
JSON object a line, `{"question": str, "answer": str}`. The answer is the
worked solution, one step a line, with calculator annotations `<<expr=value>>`
(the value is then repeated as text) and a last line `#### N`:

    Natalia sold 48/2 = <<48/2=24>>24 clips in May.
    Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.
    #### 72

Upstream has no valid split. So that nothing is ever tuned on test, `valid`
is carved out of `train.jsonl`: its last `num_valid` (500) records, which
`train` then leaves out. Ids name the source line: `gsm8k-train-7001`.

Trajectories (scheme `plan`, the default), coarse to fine:

  d0  the plan: the operations without values, one annotation a line. Result
      k is named by a capital letter (A, B, ..., Z, AA, ...); a number in a
      later expression that equals an earlier result (the most recent one)
      becomes that letter, every other number (a given quantity or a
      constant) becomes "n". The plan thus shows the data flow and no digits:
        "A=n/n\\nB=n+A"
      Equal values are matched by number, so a given quantity that happens to
      equal an earlier result is also written as its letter. A solution with
      no annotations (95 in train) has the plan "(none)".
  d1  the equations, values from the annotations, one a line, then the
      answer line of the solution:
        "48/2=24\\n48+24=72\\n#### 72"
  d2  the full solution as given, annotations included, ending "#### N".

Scheme `plan_clean` is `plan` with the annotations removed from d2 (plain
natural language); scheme `solution` has the single draft d2.

Answers are canonical numbers: no "$" or thousands commas, no trailing
zeros after the point, "-0" is "0" ("$1,000.50" -> "1000.5"). The verifier
reads the first number after the last "####" of a draft, else the last
number in the draft, and compares canonical forms. `check_annotations`
re-does every annotation's arithmetic with a small AST evaluator (numbers,
+ - * / ** % and parentheses only; nothing is `eval`ed).
"""

from __future__ import annotations

import ast
import dataclasses
import decimal
import json
import math
import operator
import pathlib
import re
from collections.abc import Iterable, Iterator, Mapping

from data_pipelines.trajectory import DataError, Task, Trajectory

ANSWER_MARKER = "####"
NO_PLAN = "(none)"
NUM_VALID = 500
# Relative tolerance when an annotation's value is checked.
REL_TOL = 1e-4

_ANNOTATION_RE = re.compile(r"<<([^<>]*)>>")
# A number in free text: optional sign and "$", thousands commas only in
# groups of three ("3,4" is two numbers). The look-behind keeps the "-" of
# "10-5" an operator and the "5" of "1.5" part of its number.
_TEXT_NUMBER_RE = re.compile(
  r"(?<![\w.])-?\$?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
)
_PLAIN_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
# Unsigned numbers inside an annotation expression (signs stay operators).
_EXPR_NUMBER_RE = re.compile(r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+")
# Python rejects "05"; annotations are arithmetic, where it means 5.
_LEADING_ZEROS_RE = re.compile(r"(?<![\d.])0+(?=\d)")
# Wide enough that no GSM8K quantity is ever rounded by the context.
_DECIMAL = decimal.Context(prec=100, rounding=decimal.ROUND_HALF_UP)

_BINARY_OPS = {
  ast.Add: operator.add,
  ast.Sub: operator.sub,
  ast.Mult: operator.mul,
  ast.Div: operator.truediv,
  ast.Pow: operator.pow,
  ast.Mod: operator.mod,
}
_UNARY_OPS = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def canonical_number(text: str) -> str | None:
  """The canonical form of a written number, or None if it is not one.

  Args:
    text: e.g. "$1,000", "0.50", "10.0", "-3", "72." (a sentence's period).

  Returns:
    "1000", "0.5", "10", "-3", "72" for these; None for anything else.
  """
  s = re.sub(r"[\s$,]", "", text).rstrip(".")
  if not _PLAIN_NUMBER_RE.fullmatch(s):
    return None
  d = decimal.Decimal(s)
  if d.is_zero():
    return "0"
  return format(d.normalize(_DECIMAL), "f")


def eval_arithmetic(expr: str) -> float:
  """Evaluates plain arithmetic safely (parsed with `ast`, never `eval`ed).

  Args:
    expr: numbers, + - * / ** %, parentheses (e.g. "(60+72+42)/3").

  Returns:
    The value, as a float.

  Raises:
    ValueError: anything else (names, calls, ...), division by zero,
      overflow or a complex result.
  """
  src = _LEADING_ZEROS_RE.sub("", re.sub(r"(?<=\d),(?=\d{3})", "", expr))

  def value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
      # Floats throughout: a huge power overflows at once instead of
      # building an enormous integer.
      return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
      return _BINARY_OPS[type(node.op)](value(node.left), value(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
      return _UNARY_OPS[type(node.op)](value(node.operand))
    raise ValueError(f"not plain arithmetic: {expr!r}")

  try:
    result = value(ast.parse(src.strip(), mode="eval").body)
  except (SyntaxError, ZeroDivisionError, OverflowError, RecursionError) as e:
    raise ValueError(f"cannot evaluate {expr!r}: {e}") from e
  if not isinstance(result, float) or not math.isfinite(result):
    raise ValueError(f"{expr!r} is not a finite real number")
  return result


def annotation_ok(expr: str, shown: str) -> bool:
  """Whether `expr` evaluates to the `shown` value.

  It does when they agree to a relative `REL_TOL`, or when the exact result
  rounded (half up) to the decimals shown is the shown value ("10/3=3.33").

  Args:
    expr: the annotation's left-hand side.
    shown: its right-hand side.

  Returns:
    True if the arithmetic checks out.

  Raises:
    ValueError: `expr` is not arithmetic or `shown` is not a number.
  """
  got = eval_arithmetic(expr)
  value = canonical_number(shown)
  if value is None:
    raise ValueError(f"annotation value {shown!r} is not a number")
  if math.isclose(got, float(value), rel_tol=REL_TOL, abs_tol=1e-9):
    return True
  decimals = len(re.sub(r"[\s$,]", "", shown).rstrip(".").partition(".")[2])
  step = decimal.Decimal(1).scaleb(-decimals)
  rounded = decimal.Decimal(repr(got)).quantize(step, context=_DECIMAL)
  return rounded == decimal.Decimal(value)


def annotations(solution: str) -> list[tuple[str, str]]:
  """The `(expr, value)` of each `<<expr=value>>` (split at the last "=")."""
  pairs = [body.rpartition("=") for body in _ANNOTATION_RE.findall(solution)]
  return [(expr.strip(), value.strip()) for expr, _, value in pairs]


@dataclasses.dataclass(frozen=True)
class AnnotationCheck:
  """What `check_annotations` found; record lists hold 0-based indices.

  Attributes:
    num_records: records checked.
    num_annotations: annotations checked.
    no_annotations: records with no annotation at all.
    unparsable: records with an annotation that cannot be evaluated.
    wrong: records whose annotations all evaluate, one or more to a value
      other than the one shown.
  """

  num_records: int
  num_annotations: int
  no_annotations: int
  unparsable: tuple[int, ...]
  wrong: tuple[int, ...]

  @property
  def num_ok(self) -> int:
    """Records with annotations that all check out."""
    bad = len(self.unparsable) + len(self.wrong) + self.no_annotations
    return self.num_records - bad


def check_annotations(records: Iterable[Mapping[str, str]]) -> AnnotationCheck:
  """Re-does the calculator arithmetic of every record's annotations.

  Args:
    records: raw records (`{"question", "answer"}` dicts), e.g. the second
      items of `read_records`.

  Returns:
    The counts; a record that cannot be parsed is counted, never raised.
  """
  num_records = num_annotations = no_annotations = 0
  unparsable, wrong = [], []
  for i, record in enumerate(records):
    num_records += 1
    pairs = annotations(record["answer"])
    num_annotations += len(pairs)
    no_annotations += not pairs
    try:
      # A list, not a generator: every annotation is evaluated, so an
      # unparsable one after a wrong one still makes the record unparsable.
      if not all([annotation_ok(expr, value) for expr, value in pairs]):
        wrong.append(i)
    except ValueError:
      unparsable.append(i)
  return AnnotationCheck(
    num_records=num_records,
    num_annotations=num_annotations,
    no_annotations=no_annotations,
    unparsable=tuple(unparsable),
    wrong=tuple(wrong),
  )


def _result_name(k: int) -> str:
  """A, B, ..., Z, AA, AB, ...: the name of the k-th result (0-based)."""
  name = ""
  k += 1
  while k:
    k, r = divmod(k - 1, 26)
    name = chr(ord("A") + r) + name
  return name


def make_plan(pairs: list[tuple[str, str]]) -> str:
  """The d0 plan of a solution's annotations (see the module docstring).

  Args:
    pairs: the solution's `annotations`.

  Returns:
    One line per annotation, e.g. "A=n/n\\nB=n+A"; `NO_PLAN` if none.
  """
  results: list[tuple[str, str | None]] = []
  lines = []
  for k, (expr, value) in enumerate(pairs):

    def placeholder(m: re.Match) -> str:
      number = canonical_number(m.group(0))
      for name, result in reversed(results):
        if number == result:
          return name
      return "n"

    name = _result_name(k)
    template = _EXPR_NUMBER_RE.sub(placeholder, "".join(expr.split()))
    lines.append(f"{name}={template}")
    results.append((name, canonical_number(value)))
  return "\n".join(lines) or NO_PLAN


def make_drafts(solution: str, scheme: str) -> tuple[str, ...]:
  """The drafts of a GSM8K solution under `scheme`, coarse to fine.

  Args:
    solution: the raw answer text, ending "#### N".
    scheme: `plan`, `plan_clean` or `solution`.

  Returns:
    The drafts; the last is the full solution.
  """
  solution = solution.strip()
  if scheme == "solution":
    return (solution,)
  pairs = annotations(solution)
  answer_line = ANSWER_MARKER + solution.rpartition(ANSWER_MARKER)[2]
  equations = [f"{expr}={value}" for expr, value in pairs]
  full = solution
  if scheme == "plan_clean":
    full = _ANNOTATION_RE.sub("", solution)
  return make_plan(pairs), "\n".join([*equations, answer_line]), full


def read_records(path: pathlib.Path) -> list[tuple[int, dict]]:
  """The checked records of a `.jsonl` file, with their 1-based lines.

  Args:
    path: a GSM8K `.jsonl` file.

  Returns:
    `(line number, record)` pairs; blank lines are skipped.

  Raises:
    DataError: malformed JSON, a missing or non-string field, or an answer
      without "#### <number>"; the message names `file:line`.
  """
  out = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{lineno}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(
          f"{where}: malformed JSON on line {lineno} ({e.msg})"
        ) from e
      if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object on line {lineno}")
      for field in ("question", "answer"):
        if field not in record:
          raise DataError(f"{where}: missing field {field!r} on line {lineno}")
        if not isinstance(record[field], str):
          raise DataError(f"{where}: field {field!r} must be a string")
      final = record["answer"].rpartition(ANSWER_MARKER)
      if not final[1] or canonical_number(final[2]) is None:
        raise DataError(f"{where}: answer does not end '#### <number>'")
      out.append((lineno, record))
  return out


class GSM8KTask(Task):
  """GSM8K word problems with calculator-annotated solutions (loader)."""

  name = "gsm8k"
  schemes = ("plan", "plan_clean", "solution")
  source_subdir = "gsm8k"
  # `valid` is carved out of the end of train.jsonl (see `num_valid`).
  source_files = {
    "train": "train.jsonl",
    "valid": "train.jsonl",
    "test": "test.jsonl",
  }
  source_url = (
    "https://github.com/openai/grade-school-math "
    "(grade_school_math/data/, commit 3101c7d)"
  )

  def __init__(self, num_valid: int = NUM_VALID):
    """Creates the task.

    Args:
      num_valid: how many of the last train records form `valid`.
    """
    if num_valid < 1:
      raise ValueError(f"num_valid must be >= 1, got {num_valid}")
    self.num_valid = num_valid

  def load(
    self, path: pathlib.Path, *, split: str, scheme: str
  ) -> Iterator[Trajectory]:
    """Trajectories of one split, in file order.

    Args:
      path: `train.jsonl` (for `train` and `valid`) or `test.jsonl`.
      split: which split to return.
      scheme: coarsening scheme.

    Raises:
      DataError: a malformed record (names `file:line`), or a train file too
        small to carve `valid` out of.
    """
    records = read_records(path)
    if split in ("train", "valid"):
      if len(records) <= self.num_valid:
        raise DataError(
          f"{path}: {len(records)} records, but the last {self.num_valid} "
          "are carved out for valid and train would be empty"
        )
      cut = len(records) - self.num_valid
      records = records[:cut] if split == "train" else records[cut:]
    for lineno, record in records:
      answer = record["answer"]
      try:
        question = self.parse_question(record["question"])
      except ValueError as e:
        raise DataError(f"{path}:{lineno}: field 'question': {e}") from e
      yield Trajectory(
        id=f"{self.name}-{path.stem}-{lineno}",
        task=self.name,
        question=question,
        drafts=make_drafts(answer, scheme),
        answer=self.canonical_answer(answer.rpartition(ANSWER_MARKER)[2]),
      )

  def answer_draft(self, answer: str) -> str:
    """The answer alone, after the marker the verifier reads."""
    return f"{ANSWER_MARKER} {self.canonical_answer(answer)}"

  def extract_answer(self, text: str) -> str | None:
    """The canonical first number after the last "####", else the last."""
    _, marker, tail = text.rpartition(ANSWER_MARKER)
    m = _TEXT_NUMBER_RE.search(tail) if marker else None
    if m is None:
      numbers = _TEXT_NUMBER_RE.findall(text)
      return canonical_number(numbers[-1]) if numbers else None
    return canonical_number(m.group(0))

  def canonical_answer(self, answer: str) -> str:
    """`canonical_number(answer)`, or the stripped text if not a number."""
    return canonical_number(answer) or answer.strip()

  def parse_question(self, text: str) -> str:
    """A user's word problem, whitespace collapsed (ValueError if empty)."""
    question = " ".join(text.split())
    if not question:
      raise ValueError("empty GSM8K question")
    return question
