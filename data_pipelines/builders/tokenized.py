"""The pre-tokenized form of a prepared split (`tokens_<split>.npz`).

Ragged rows are stored flat with offsets, strings as UTF-8 bytes with
offsets, so `np.load(..., allow_pickle=False)` reads everything and hosts
without TensorFlow can train from prepared data:

    question_tokens  uint16[Q]    all question tokens, concatenated
    question_offsets int64[N+1]   question i = question_tokens[o[i]:o[i+1]]
    draft_tokens     uint16[K]    all draft tokens (no EOS), concatenated
    draft_offsets    int64[D+1]   draft row r = draft_tokens[o[r]:o[r+1]]
    level_offsets    int64[N+1]   example i has draft rows o[i]:o[i+1]
    ids, answers     uint8[...]   UTF-8, with `<name>_offsets` int64[N+1]

Row i is record i of the TFDS split (both are in task order). Also here:
the per-example over-length flags that the input pipeline counts with.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from data_pipelines import batching
from data_pipelines import tokenizer as tok_lib
from data_pipelines.trajectory import DataError

# ids/answers are stored as UTF-8 bytes + offsets: no pickled objects.
_STRING_FIELDS = ("ids", "answers")


def _pack(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  raw = [s.encode("utf-8") for s in strings]
  offsets = np.concatenate([[0], np.cumsum([len(r) for r in raw])])
  return np.frombuffer(b"".join(raw), np.uint8), offsets.astype(np.int64)


def _unpack(data: np.ndarray, offsets: np.ndarray) -> list[str]:
  raw = data.tobytes()
  return [raw[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]


def _ragged(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
  flat = np.fromiter((t for r in rows for t in r), np.int32, offsets[-1])
  return flat, offsets.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class TokenizedSplit:
  """One tokenized split as flat arrays plus offsets (ragged rows).

  Attributes:
    question_tokens: all question tokens, concatenated.
    question_offsets: int64[N+1]; question i is tokens[o[i]:o[i+1]].
    draft_tokens: all draft tokens (no EOS), concatenated.
    draft_offsets: int64[D+1]; draft row r is tokens[o[r]:o[r+1]].
    level_offsets: int64[N+1]; example i has draft rows o[i]:o[i+1],
      coarse to fine.
    ids: example ids, in split order.
    answers: reference answers, in split order.
  """

  question_tokens: np.ndarray
  question_offsets: np.ndarray
  draft_tokens: np.ndarray
  draft_offsets: np.ndarray
  level_offsets: np.ndarray
  ids: list[str]
  answers: list[str]

  def __len__(self) -> int:
    return len(self.question_offsets) - 1

  @classmethod
  def from_token_lists(
    cls,
    questions: Sequence[Sequence[int]],
    drafts: Sequence[Sequence[Sequence[int]]],
    ids: Sequence[str],
    answers: Sequence[str],
  ) -> TokenizedSplit:
    """Packs per-example token lists (drafts: a list per example)."""
    q, qo = _ragged(questions)
    d, do = _ragged([row for example in drafts for row in example])
    lo = np.concatenate([[0], np.cumsum([len(x) for x in drafts])])
    return cls(q, qo, d, do, lo.astype(np.int64), list(ids), list(answers))

  def question(self, i: int) -> np.ndarray:
    return self.question_tokens[
      self.question_offsets[i] : self.question_offsets[i + 1]
    ]

  def drafts(self, i: int) -> list[np.ndarray]:
    o = self.draft_offsets
    rows = range(self.level_offsets[i], self.level_offsets[i + 1])
    return [self.draft_tokens[o[r] : o[r + 1]] for r in rows]

  def question_lengths(self) -> np.ndarray:
    return np.diff(self.question_offsets)

  def draft_lengths(self) -> np.ndarray:
    """Tokens per draft row (without the EOS the batch appends)."""
    return np.diff(self.draft_offsets)

  def num_levels(self) -> np.ndarray:
    return np.diff(self.level_offsets)

  def level_of_rows(self) -> np.ndarray:
    """The level (0 = coarsest) of every draft row."""
    starts = np.repeat(self.level_offsets[:-1], self.num_levels())
    return np.arange(len(self.draft_offsets) - 1) - starts

  def save(self, path: str | os.PathLike) -> None:
    """Writes a compressed `.npz` (atomically)."""
    path = pathlib.Path(path)
    arrays = {
      f.name: getattr(self, f.name)
      for f in dataclasses.fields(self)
      if f.name not in _STRING_FIELDS
    }
    # Vocabularies are far below 2**16: halve the file.
    for name in ("question_tokens", "draft_tokens"):
      if arrays[name].max(initial=0) < 2**16:
        arrays[name] = arrays[name].astype(np.uint16)
    for name in _STRING_FIELDS:
      arrays[name], arrays[f"{name}_offsets"] = _pack(getattr(self, name))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
      np.savez_compressed(f, **arrays)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str | os.PathLike) -> TokenizedSplit:
    """Reads a file written by `save` (no TensorFlow needed)."""
    with np.load(path, allow_pickle=False) as z:
      fields = {
        name: _unpack(z[name], z[f"{name}_offsets"]) for name in _STRING_FIELDS
      }
      for f in dataclasses.fields(cls):
        if f.name not in _STRING_FIELDS:
          fields[f.name] = z[f.name]
    for name in ("question_tokens", "draft_tokens"):
      fields[name] = fields[name].astype(np.int32)
    return cls(**fields)


def tokenize_split(
  texts: dict[str, list], tokenizer: tok_lib.Tokenizer
) -> TokenizedSplit:
  """Tokenizes the columns returned by `read_split_texts`."""
  flat = tokenizer.encode_many([d for ds in texts["drafts"] for d in ds])
  drafts, k = [], 0
  for ds in texts["drafts"]:
    drafts.append(flat[k : k + len(ds)])
    k += len(ds)
  return TokenizedSplit.from_token_lists(
    tokenizer.encode_many(texts["question"]),
    drafts,
    texts["id"],
    texts["answer"],
  )


def overlength_flags(
  data: TokenizedSplit, shapes: batching.Shapes
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per example: question cut, kept drafts cut, levels cut.

  The semantics of `batching.encode_token_lists`: only the finest T drafts
  are kept, and a draft is cut when draft + EOS exceeds Ld.

  Args:
    data: a tokenized split.
    shapes: the batch shapes.

  Returns:
    (bool[N], int64[N], bool[N]).
  """
  n = data.num_levels()
  kept = np.minimum(n, shapes.max_drafts)
  example = np.repeat(np.arange(len(data)), n)
  from_end = n[example] - data.level_of_rows()  # 1 for the finest draft
  cut = (data.draft_lengths() + 1 > shapes.max_draft_len) & (
    from_end <= kept[example]
  )
  drafts = np.bincount(example, weights=cut, minlength=len(data))
  return (
    data.question_lengths() > shapes.max_question_len,
    drafts.astype(np.int64),
    n > shapes.max_drafts,
  )


def count_overlength(
  flags: tuple[np.ndarray, np.ndarray, np.ndarray], index: np.ndarray
) -> batching.OverlengthCounts:
  """The counts of the examples `index` (negative entries are padding)."""
  index = index[index >= 0]
  q, d, lv = (int(f[index].sum()) for f in flags)
  return batching.OverlengthCounts(questions=q, drafts=d, levels=lv)


def check_not_overlength(
  data: TokenizedSplit, shapes: batching.Shapes, where: str
) -> None:
  """overlength='reject': fails before the first batch, naming an example."""
  flags = overlength_flags(data, shapes)
  bad = np.flatnonzero(flags[0] | (flags[1] > 0) | flags[2])
  if bad.size:
    raise DataError(
      f"{where}: {bad.size} example(s) longer than {shapes}, e.g. "
      f"{data.ids[bad[0]]!r} (set overlength='truncate' to cut and count "
      "them instead)"
    )
