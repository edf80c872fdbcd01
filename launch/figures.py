"""Reads what a finished cell wrote: the figures its cell.json records."""

from __future__ import annotations

import json
import pathlib
import statistics

from launch import cells as cells_lib


def _json(path: pathlib.Path) -> dict:
  return json.loads(path.read_text())


def tokens_per_step(workdir: pathlib.Path) -> float:
  """Target (written, loss-bearing) tokens in one training batch of a run.

  The mean over the first 4 batches of the run's own training stream.
  """
  import ml_collections
  import numpy as np

  from bottomup import datasets, steps

  config = ml_collections.ConfigDict(_json(workdir / "config.json"))
  data = datasets.build(config, workdir)
  stream = data.train_stream(config.train.batch_size)
  counts = []
  for _ in range(4):
    b = next(stream)
    latent = np.zeros((b["drafts"].shape[1],), bool)
    counts.append(
      float(steps.loss_mask(b["drafts"], b["num_drafts"], latent).sum())
    )
  return float(np.mean(counts))


def _steps_per_s(workdir: pathlib.Path) -> float | None:
  """Median logged training steps/s of a run (None when not logged)."""
  f = workdir / "metrics.jsonl"
  if not f.exists():
    return None
  rates = [
    r["steps_per_s"]
    for r in map(json.loads, f.read_text().splitlines())
    if "steps_per_s" in r
  ]
  return statistics.median(rates) if rates else None


def read_figures(cell, out) -> dict:
  """The figures a finished cell contributes to the tables."""
  cdir = cells_lib.cell_dir(out, cell.id)
  if cell.kind == "prepare":
    return {}
  if cell.kind in ("train", "bootstrap"):
    res = _json(cdir / "eval_results.json")
    cfg = _json(cdir / "config.json")
    fig = dict(
      accuracy=res["accuracy"],
      num_correct=res["num_correct"],
      num_examples=res["num_examples"],
      params=res.get("num_params"),
      flops_per_problem=res.get("flops_per_problem"),
    )
    if cell.kind == "train":
      per_step = tokens_per_step(cdir)
      steps_ = cfg["train"]["num_steps"]
      rate = _steps_per_s(cdir)
      fig.update(
        train_steps=steps_,
        train_tokens=per_step * steps_,
        train_tokens_per_s=per_step * rate if rate else None,
      )
      timing = cdir / "timing.json"
      if timing.exists():
        fig["eval_problems_per_s"] = _json(timing)["eval_problems_per_second"]
    else:  # the supervised cell's tokens + the rounds' fine-tuning
      base = pathlib.Path(
        cfg["bootstrap"]["init_workdir"] or cdir / "supervised"
      )
      rounds = _json(cdir / "rounds.json")
      b = cfg["bootstrap"]
      per_step = tokens_per_step(base)
      base_steps = _json(base / "config.json")["train"]["num_steps"]
      steps_ = base_steps + b["rounds"] * b["steps_per_round"]
      fig.update(
        train_steps=steps_,
        train_tokens=per_step * steps_,
        rounds=[
          {k: r.get(k) for k in ("round", "valid_accuracy", "yield", "kept")}
          for r in rounds
        ],
      )
    return fig
  if cell.kind == "evaluate":
    res = _json(cdir / "results.json")
    return dict(
      accuracy=res["accuracy"],
      num_correct=res["num_correct"],
      num_examples=res["num_examples"],
      problems_per_s=res["problems_per_second"],
      flops_per_problem=res.get("flops_per_problem"),
    )
  if cell.kind == "prm":
    base = cells_lib.cell_dir(out, cell.base)
    res = _json(base / "prm" / "prm_results.json")
    return dict(
      auroc=res["valid"]["auroc"],
      brier=res["valid"]["brier"],
      brier_base_rate=res["valid"]["brier_base_rate"],
      valid_drafts=res["valid"]["num_drafts"],
      kept_step=res.get("best_step"),
      ranking_accuracy=res["valid"].get("ranking_accuracy"),
    )
  if cell.kind == "benchmark":
    return _json(cdir / "results.json")
  raise ValueError(f"{cell.id}: unknown cell kind {cell.kind!r}")
