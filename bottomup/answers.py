"""Drafts back to text, and self-consistency over final answers."""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np


def decode_text(tokenizer, drafts) -> list[list[str]]:
  """Drafts [B, T, Ld] of ids -> B lists of T strings (latent rows: "")."""
  drafts = np.asarray(drafts)
  return [[tokenizer.decode(row) for row in example] for example in drafts]


def majority_vote(answers: Sequence[Sequence[str | None]]) -> list[str | None]:
  """Self-consistency: the most common answer per example.

  Args:
    answers: per example, the final answers of its k samples; None for a
      sample whose answer could not be extracted (it gets no vote).

  Returns:
    Per example, the answer with the most votes (ties go to the one seen
    first), or None when no sample has an answer.
  """
  out = []
  for votes in answers:
    counts = collections.Counter(a for a in votes if a is not None)
    # Counter keeps first-seen order, and max returns the first maximum.
    out.append(max(counts, key=counts.__getitem__) if counts else None)
  return out
