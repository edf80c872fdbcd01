"""The unit of data: a coarse-to-fine trajectory, and the Task interface.

A trajectory is a question, a list of drafts from coarse to fine (the last is
the full worked solution) and the canonical final answer. Every task module in
`data_pipelines.tasks` implements `Task`: it loads local files and/or
generates seeded synthetic data, verifies answers, and coarsens a full
solution into drafts under one or more named schemes.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import pathlib
from collections.abc import Iterator, Sequence

DATA_DIR_ENV = "BOTTOMUP_DATA_DIR"


class DataError(ValueError):
  """Bad input data; the message names the file, line and field."""


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """One coarse-to-fine example.

  Attributes:
    id: unique within its task and split.
    task: the task name, e.g. `multiplication_4x4`.
    question: the question in the task's own format.
    drafts: drafts coarse -> fine; the last is the full solution.
    answer: the canonical final answer, for the verifier.
  """

  id: str
  task: str
  question: str
  drafts: tuple[str, ...]
  answer: str

  def __post_init__(self):
    if not self.drafts:
      raise DataError(f"trajectory {self.id!r}: no drafts")
    object.__setattr__(self, "drafts", tuple(self.drafts))

  def to_json(self) -> dict:
    """A JSON-ready dict with the DESIGN §1 field names."""
    return dataclasses.asdict(self) | {"drafts": list(self.drafts)}

  @classmethod
  def from_json(cls, record: dict, where: str = "record") -> Trajectory:
    """Builds a trajectory from a dict; errors name `where` and the field."""
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    for name in fields:
      if name not in record:
        raise DataError(f"{where}: missing field {name!r}")
    if not isinstance(record["drafts"], list) or not all(
      isinstance(d, str) for d in record["drafts"]
    ):
      raise DataError(f"{where}: field 'drafts' must be a list of strings")
    for name in ("id", "task", "question", "answer"):
      if not isinstance(record[name], str):
        raise DataError(f"{where}: field {name!r} must be a string")
    return cls(**{k: record[k] for k in fields})


class Task(abc.ABC):
  """A reasoning task family: data, verifier, coarsening schemes.

  Subclasses set `name`, `schemes` (the first is the default) and
  `source_files` (relative paths of the raw files it reads, empty for pure
  generators), and implement the abstract methods.
  """

  name: str = ""
  schemes: tuple[str, ...] = ()
  # The scheme whose final draft is the usual full left-to-right solution,
  # when that is not the default scheme's (multiplication: the iCoT chain).
  # Models that write only the final draft use it unless a scheme is set.
  cot_scheme: str | None = None
  # split -> file name (relative to the task's raw folder) it is loaded from.
  source_files: dict[str, str] = {}
  # Subfolder of the raw data directory that holds `source_files`.
  source_subdir: str = ""
  # Where the public originals live, for the missing-data error message.
  source_url: str = ""
  # True when training data come from a seeded generator.
  generated: bool = False
  # Splits that exist for this task.
  splits: tuple[str, ...] = ("train", "valid", "test")

  @property
  def default_scheme(self) -> str:
    return self.schemes[0]

  def check_scheme(self, scheme: str | None) -> str:
    """Returns `scheme` (or the default); rejects an unknown one clearly."""
    scheme = scheme or self.default_scheme
    if scheme not in self.schemes:
      raise ValueError(
        f"task {self.name!r} has no scheme {scheme!r}; known: "
        f"{', '.join(self.schemes)}"
      )
    return scheme

  def trajectories(
    self,
    split: str,
    *,
    scheme: str | None = None,
    source_dir: str | os.PathLike | None = None,
    num: int | None = None,
    seed: int = 0,
  ) -> Iterator[Trajectory]:
    """All trajectories of a split, from files or from the generator.

    Args:
      split: `train`, `valid` or `test`.
      scheme: coarsening scheme (default: the task's first).
      source_dir: raw data folder (else $BOTTOMUP_DATA_DIR); unused by
        generated tasks.
      num: how many to yield (generators need it; loaders cap at it).
      seed: generator seed (the split is folded in, so splits differ).

    Returns:
      An iterator of trajectories.
    """
    if split not in self.splits:
      raise ValueError(
        f"task {self.name!r} has no split {split!r}; known: "
        f"{', '.join(self.splits)}"
      )
    scheme = self.check_scheme(scheme)
    if self.generated:
      if num is None:
        raise ValueError(f"task {self.name!r} is generated: give `num`")
      yield from self.generate(split, num=num, seed=seed, scheme=scheme)
      return
    path = self.source_path(split, source_dir)
    for i, traj in enumerate(self.load(path, split=split, scheme=scheme)):
      if num is not None and i >= num:
        return
      yield traj

  def source_path(
    self, split: str, source_dir: str | os.PathLike | None
  ) -> pathlib.Path:
    """Resolves the raw file of a split, or says what is needed and where."""
    name = self.source_files[split]
    root = source_dir or os.environ.get(DATA_DIR_ENV)
    candidates = []
    if root:
      root = pathlib.Path(root)
      candidates = [root / self.source_subdir / name, root / name]
      for path in candidates:
        if path.is_file():
          return path
    needed = ", ".join(sorted(set(self.source_files.values())))
    looked = (
      " (looked at " + ", ".join(str(c) for c in candidates) + ")"
      if candidates
      else f" (no --source_dir given and ${DATA_DIR_ENV} is not set)"
    )
    raise FileNotFoundError(
      f"task {self.name!r} needs {needed} in <source_dir>/"
      f"{self.source_subdir}/ or <source_dir>/{looked}. Pass "
      f"--source_dir or set ${DATA_DIR_ENV}. The public originals are at "
      f"{self.source_url}."
    )

  def load(
    self, path: pathlib.Path, *, split: str, scheme: str
  ) -> Iterator[Trajectory]:
    """Reads one raw file; malformed records raise DataError(file:line)."""
    raise NotImplementedError(f"task {self.name!r} has no file loader")

  def generate(
    self, split: str, *, num: int, seed: int, scheme: str
  ) -> Iterator[Trajectory]:
    """Yields `num` seeded synthetic trajectories."""
    raise NotImplementedError(f"task {self.name!r} has no generator")

  @abc.abstractmethod
  def extract_answer(self, text: str) -> str | None:
    """The final answer written in a draft, canonicalized, or None."""

  def verify(self, text: str, answer: str) -> bool:
    """Whether a draft's final answer equals the reference `answer`."""
    got = self.extract_answer(text)
    return got is not None and got == self.canonical_answer(answer)

  def canonical_answer(self, answer: str) -> str:
    """Canonical form of a reference answer (identity by default)."""
    return answer.strip()

  @abc.abstractmethod
  def parse_question(self, text: str) -> str:
    """Turns a user's plain question into the task's question format."""

  def format_draft(self, draft: str) -> str:
    """A human-readable rendering of one draft (identity by default)."""
    return draft

  def format_answer(self, answer: str) -> str:
    """A human-readable rendering of an answer (identity by default)."""
    return answer

  def answer_draft(self, answer: str) -> str:
    """A draft that states only `answer`, in a form `verify` accepts.

    The `answer` view (a model trained without any solution) writes this.
    """
    return answer


def check_unique_ids(trajs: Sequence[Trajectory]) -> None:
  """Raises DataError if two trajectories share an id."""
  seen = set()
  for t in trajs:
    if t.id in seen:
      raise DataError(f"duplicate trajectory id {t.id!r}")
    seen.add(t.id)
