"""How good a process reward model is: calibration and ranking.

Used by `bottomup/prm.py` on the valid rollouts: the Brier score and AUROC
of P(correct) against every rollout's outcome, and the within-question
ranking accuracy that PRM selection relies on.
"""

from __future__ import annotations

import numpy as np


def auroc(scores, labels) -> float:
  """Area under the ROC curve (Mann-Whitney, ties counted half); NaN when
  only one class is present."""
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
  pos, neg = scores[labels], scores[~labels]
  if not len(pos) or not len(neg):
    return float("nan")
  order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
  allv = np.concatenate([pos, neg])[order]
  ranks = np.empty(len(allv))
  # Average ranks over ties.
  _, start, counts = np.unique(allv, return_index=True, return_counts=True)
  for s0, c in zip(start, counts):
    ranks[s0 : s0 + c] = s0 + (c + 1) / 2
  r = np.empty(len(allv))
  r[order] = ranks
  r_pos = r[: len(pos)].sum()
  return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def ranking_accuracy(scores, values, groups) -> tuple[float | None, int]:
  """How often the higher-valued draft of a pair scores higher.

  Over the pairs of drafts in the same group (problem and pass) whose
  values differ; ties in score count half. Returns (accuracy or None when
  there is no such pair, number of pairs).
  """
  scores, values = np.asarray(scores), np.asarray(values)
  groups = np.asarray(groups)
  wins, pairs = 0.0, 0
  for g in np.unique(groups):
    idx = np.flatnonzero(groups == g)
    s, v = scores[idx], values[idx]
    dv = v[:, None] - v[None, :]
    ds = s[:, None] - s[None, :]
    better = dv > 0  # row i is worth more than column j
    pairs += int(better.sum())
    wins += float((ds[better] > 0).sum() + 0.5 * (ds[better] == 0).sum())
  return (wins / pairs if pairs else None), pairs


def _none_if_nan(x: float) -> float | None:
  return None if np.isnan(x) else x


def calibration(probs, outcomes) -> dict:
  """Brier score and AUROC of P(correct) against every rollout's outcome."""
  p = np.repeat(np.asarray(probs)[:, None], outcomes.shape[1], axis=1)
  y = np.asarray(outcomes)
  base = y.mean()
  return dict(
    brier=float(np.mean((p - y) ** 2)),
    brier_base_rate=float(np.mean((base - y) ** 2)),
    # None when the outcomes are all one class.
    auroc=_none_if_nan(auroc(p.ravel(), y.ravel() > 0.5)),
    base_rate=float(base),
    num_drafts=int(len(probs)),
  )
