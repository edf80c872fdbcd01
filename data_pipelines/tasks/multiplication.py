"""Multiplication of two N-digit numbers (`multiplication_NxN`).

Numbers are written least-significant digit first (LSD first), as in the iCoT
files, so that the digit at position i of a number has significance 10**i.

Raw format (the iCoT line format, which `icot_line` reproduces exactly):

    5 6 3 2 * 7 4 3 4||5 5 5 6 1 + 0 0 6 4 9 0 ( 5 5 1 1 1 1 ) + ... #### 5 5 6 0 8 2 0 1

Trajectories are compact (no spaces: a character tokenizer then spends one
token per digit):

  question  "5632*7434"                       (a and b, LSD first)
  answer    "55608201"                        (a*b, LSD first, 2N digits)

Schemes, coarse to fine (N passes for N-digit operands):
  `scale`        d_k = "+P=E": E = a * (b truncated to its k+1 most
                 significant digits), P = the partial product this pass adds
                 (process supervision inside the trajectory: the quantity
                 added is written before the new estimate). P and E are both
                 2N digits, so position = significance. d_{N-1} ends in a*b.
  `scale_plain`  d_k = "E" only: the ablation without the added quantity.
  `icot`         one draft: the iCoT chain, compact, ending "####" a*b.

Generated splits are disjoint by construction: a pair (a, b) belongs to the
split chosen by a fixed hash of the pair (`split_of`), so no generated valid or
test problem can ever appear in generated training data.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
from collections.abc import Iterable, Iterator

import numpy as np

from data_pipelines.trajectory import DataError, Task, Trajectory

_NAME_RE = re.compile(r"^multiplication_(\d+)x(\d+)$")
# Out of `_NUM_BUCKETS` hash buckets, one is test and one is valid.
_NUM_BUCKETS = 20
_SPLIT_BUCKET = {"test": 0, "valid": 1}
_SPLIT_SEED = {"train": 0, "valid": 1, "test": 2}


def rev(x: int, width: int) -> str:
  """`x` as `width` digits, least-significant first."""
  s = str(x)
  if len(s) > width:
    raise ValueError(f"{x} has more than {width} digits")
  return s.zfill(width)[::-1]


def unrev(digits: str) -> int:
  """Inverse of `rev` (spaces ignored)."""
  return int(digits.replace(" ", "")[::-1])


def split_of(a: int, b: int) -> str:
  """The split a generated pair belongs to (a fixed, seed-free hash)."""
  h = hashlib.blake2b(f"{a}*{b}".encode(), digest_size=8).digest()
  bucket = int.from_bytes(h, "little") % _NUM_BUCKETS
  for split, b_ in _SPLIT_BUCKET.items():
    if bucket == b_:
      return split
  return "train"


def _spaced(digits: str) -> str:
  return " ".join(digits)


def icot_line(a: int, b: int, n: int) -> str:
  """The iCoT file line for a*b with n-digit operands, character for character.

  The chain lists a * (digit k of b) * 10**k, each written with n+1+k digits,
  joined by " + "; after every partial product but the first, the running
  sum (same width) follows in parentheses.
  """
  ra, rb = rev(a, n), rev(b, n)
  parts = []
  total = 0
  for k, digit in enumerate(rb):
    pp = a * int(digit) * 10**k
    total += pp
    width = n + 1 + k
    parts.append(_spaced(rev(pp, width)))
    if k > 0 and k < n - 1:
      parts.append("( " + _spaced(rev(total, width)) + " )")
    if k < n - 1:
      parts.append("+")
  chain = " ".join(parts)
  return (
    f"{_spaced(ra)} * {_spaced(rb)}||{chain} #### {_spaced(rev(a * b, 2 * n))}"
  )


def parse_icot_line(line: str, n: int, where: str) -> tuple[int, int]:
  """Operands of an iCoT line; DataError(where) if it is malformed or wrong."""
  try:
    q, rest = line.split("||", 1)
    ra, rb = q.split(" * ")
    chain, answer = rest.rsplit(" #### ", 1)
    a, b = unrev(ra), unrev(rb)
    ok = len(ra.split()) == n and len(rb.split()) == n
    ok = ok and unrev(answer) == a * b
  except ValueError as e:
    raise DataError(f"{where}: not an iCoT multiplication line ({e})") from e
  if not ok:
    raise DataError(f"{where}: operands are not {n} digits or a*b is wrong")
  del chain
  return a, b


class MultiplicationTask(Task):
  """N-digit by N-digit multiplication (generator + iCoT-file loader)."""

  schemes = ("scale", "scale_plain", "icot")
  # The default scheme's final draft is one addition; the full chain is iCoT.
  cot_scheme = "icot"
  generated = True
  source_url = "https://github.com/da03/Internalize_CoT_Step_by_Step (data/)"

  def __init__(self, n: int):
    if n < 1:
      raise ValueError(f"multiplication needs n >= 1, got {n}")
    self.n = n
    self.name = f"multiplication_{n}x{n}"
    self.source_subdir = f"icot/{n}_by_{n}_mult"
    # iCoT ships valid.txt and test_bigbench.txt (train.txt is Git LFS).
    self.source_files = {"valid": "valid.txt", "test": "test_bigbench.txt"}

  # -- Operands ------------------------------------------------------------

  def sample_pairs(
    self, split: str, num: int, seed: int
  ) -> Iterator[tuple[int, int]]:
    """`num` seeded operand pairs that belong to `split` (see `split_of`)."""
    if split not in _SPLIT_SEED:
      raise ValueError(f"unknown split {split!r}")
    rng = np.random.default_rng([seed, _SPLIT_SEED[split], self.n])
    lo, hi = 10 ** (self.n - 1), 10**self.n
    made = 0
    while made < num:
      a_s = rng.integers(lo, hi, size=4 * (num - made) + 16, dtype=np.int64)
      b_s = rng.integers(lo, hi, size=a_s.shape, dtype=np.int64)
      for a, b in zip(a_s.tolist(), b_s.tolist()):
        if split_of(a, b) == split:
          yield a, b
          made += 1
          if made == num:
            return

  def generate_lines(self, split: str, num: int, seed: int) -> Iterator[str]:
    """Unlimited seeded data in the iCoT line format."""
    for a, b in self.sample_pairs(split, num, seed):
      yield icot_line(a, b, self.n)

  # -- Trajectories ----------------------------------------------------------

  def drafts(self, a: int, b: int, scheme: str) -> tuple[str, ...]:
    """The drafts of a*b under `scheme`, coarse to fine."""
    n, w = self.n, 2 * self.n
    if scheme == "icot":
      line = icot_line(a, b, n)
      chain = line.split("||", 1)[1].replace(" ", "")
      return (chain,)
    out = []
    rb = rev(b, n)
    est = 0
    for k in range(n):
      place = n - 1 - k  # most significant digit of b first
      pp = a * int(rb[place]) * 10**place
      est += pp
      if scheme == "scale":
        out.append(f"+{rev(pp, w)}={rev(est, w)}")
      else:
        out.append(rev(est, w))
    return tuple(out)

  def make(self, a: int, b: int, scheme: str, id_: str) -> Trajectory:
    return Trajectory(
      id=id_,
      task=self.name,
      question=f"{rev(a, self.n)}*{rev(b, self.n)}",
      drafts=self.drafts(a, b, scheme),
      answer=rev(a * b, 2 * self.n),
    )

  def generate(
    self, split: str, *, num: int, seed: int, scheme: str
  ) -> Iterator[Trajectory]:
    for i, (a, b) in enumerate(self.sample_pairs(split, num, seed)):
      yield self.make(a, b, scheme, f"{self.name}-{split}-{seed}-{i}")

  def load(
    self, path: pathlib.Path, *, split: str, scheme: str
  ) -> Iterator[Trajectory]:
    """Trajectories from an iCoT `.txt` file (e.g. for final evaluation)."""
    with open(path, encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        line = line.rstrip("\n")
        if not line.strip():
          continue
        a, b = parse_icot_line(line, self.n, f"{path}:{lineno}")
        yield self.make(a, b, scheme, f"{path.stem}-{lineno}")

  def load_file(
    self, path: str | pathlib.Path, scheme: str | None = None
  ) -> Iterator[Trajectory]:
    """Trajectories of any iCoT-format file (`--eval_file`)."""
    path = pathlib.Path(path)
    return self.load(path, split="eval", scheme=self.check_scheme(scheme))

  # -- Verifier and parser ---------------------------------------------------

  def extract_answer(self, text: str) -> str | None:
    """The last run of 2N digits in a draft (the final estimate / product)."""
    runs = re.findall(r"\d+", text)
    if not runs or len(runs[-1]) != 2 * self.n:
      return None
    return runs[-1]

  def parse_question(self, text: str) -> str:
    """`1234*5678` (ordinary, most-significant first) -> `4321*8765`."""
    m = re.fullmatch(r"\s*(\d+)\s*[*x×]\s*(\d+)\s*", text)
    if not m:
      raise ValueError(f"not a multiplication question: {text!r}")
    a, b = int(m.group(1)), int(m.group(2))
    for x in (a, b):
      if len(str(x)) != self.n:
        raise ValueError(f"{self.name} needs {self.n}-digit operands: {x}")
    return f"{rev(a, self.n)}*{rev(b, self.n)}"

  def operands(self, question: str) -> tuple[int, int]:
    ra, rb = question.split("*")
    return unrev(ra), unrev(rb)

  def format_draft(self, draft: str) -> str:
    """Ordinary digit order, e.g. "+P=E" -> "+ 0094600 = 00111155"."""

    def fix(m):
      return m.group(0)[::-1]

    return re.sub(r"\d+", fix, draft).replace("+", "+ ").replace("=", " = ")

  def format_answer(self, answer: str) -> str:
    """LSD-first digits -> the ordinary number."""
    return str(unrev(answer)) if answer.isdigit() else answer

  def format_question(self, question: str) -> str:
    a, b = self.operands(question)
    return f"{a} * {b}"


def pairs_in(trajs: Iterable[Trajectory], task: MultiplicationTask):
  """The operand pairs of some trajectories (for disjointness checks)."""
  return {task.operands(t.question) for t in trajs}


def parse_name(name: str) -> int | None:
  """N from `multiplication_NxN`, or None."""
  m = _NAME_RE.match(name)
  if not m:
    return None
  if m.group(1) != m.group(2):
    raise ValueError(f"{name}: only square NxN multiplication is supported")
  return int(m.group(1))
