"""The cells of the paper tables (DESIGN §7), per profile, as data
(their sizes: `launch/profiles.py`).

A cell is one ordinary command (`python -m bottomup.main ...`, `python -m
bottomup.evaluate ...`, a benchmark) with its own workdir under
OUT/cells/<id>; `launch.reproduce` runs the cells in order and builds the
tables from what they wrote. Nothing here runs anything: `plan(profile,
out)` only lists the cells, so the tables' contents can be read (and
tested) without training.

Table 1 (accuracy on the test split): one row per task, one column per
model; the baselines' parameters are matched to the refiner's
(`model.match_params=refiner`). Table 2 (test-time compute): evaluations of
the Table 1 BottomUp cell (and of a cell trained with question dropout, for
guidance; of the MDLM cell, for its denoising steps). Table 3 (efficiency):
the train-throughput benchmark and the latency per solved problem, read
from the Table 1 cells.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import pathlib

from launch.profiles import PROFILE_SPECS

COLUMNS = (
  "ar_nocot",
  "ar_cot",
  "ar_trajectory",
  "mdlm",
  "bottomup",
  "bottomup_latent",
  "bottomup_bootstrap",
)
COLUMN_TITLES = {
  "ar_nocot": "AR, no CoT",
  "ar_cot": "AR + CoT",
  "ar_trajectory": "AR, whole trajectory",
  "mdlm": "MDLM",
  "bottomup": "BottomUp (tokens)",
  "bottomup_latent": "BottomUp (latent passes)",
  "bottomup_bootstrap": "BottomUp + bootstrap",
}
PROFILES = ("smoke", "cpu", "accel")
# Where the raw datasets live: `--data_dir`, else this variable, else none
# (rows that need raw data are then skipped, with the reason).
DATA_ENV = "BOTTOMUP_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class Cell:
  """One command of the tables.

  Attributes:
    id: unique; also its folder name under OUT/cells.
    table: 1, 2 or 3 (0: a preparation step no table shows).
    row: the row's title.
    column: the Table 1 column, or the Table 2/3 series.
    kind: prepare | train | bootstrap | prm | evaluate | benchmark.
    argv: the command (argv[0] "python" = this interpreter).
    needs: cell ids that must have finished first.
    raw: the raw dataset folder it needs ("" = none).
    value: the Table 2 knob's setting.
    base: for an evaluate/prm cell, the training cell it reads.
  """

  id: str
  table: int
  row: str
  column: str
  kind: str
  argv: tuple[str, ...]
  needs: tuple[str, ...] = ()
  raw: str = ""
  value: float = 0.0
  base: str = ""


_MODEL_FLAGS = {
  "ar_nocot": ("--config.model.name=ar_nocot",),
  "ar_cot": ("--config.model.name=ar_cot",),
  "ar_trajectory": ("--config.model.name=ar_trajectory",),
  "mdlm": ("--config.model.name=mdlm",),
}


def cell_dir(out, cell_id: str) -> pathlib.Path:
  return pathlib.Path(out) / "cells" / cell_id


def plan(profile: str, out) -> list[Cell]:
  """Every cell of the three tables under `profile`, in running order.

  Args:
    profile: smoke | cpu | accel.
    out: the output folder (cell workdirs are OUT/cells/<id>).
  """
  if profile not in PROFILE_SPECS:
    raise ValueError(
      f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}"
    )
  p = PROFILE_SPECS[profile]
  out = pathlib.Path(out)
  prepared = out / "prepared"
  cells: list[Cell] = []

  def wd(cell_id):
    return str(cell_dir(out, cell_id))

  # Table 1.
  for row in p.rows:
    common = [f"--config={row.config}", *row.overrides]
    needs = ()
    if row.prepare:
      pid = f"t0.{row.key}.prepare"
      cells.append(
        Cell(
          pid,
          0,
          row.title,
          "prepare",
          "prepare",
          (
            "python",
            "-m",
            "data_pipelines.prepare",
            *row.prepare,
            f"--data_dir={prepared}",
          ),
          raw=row.raw,
        )
      )
      common.append(f"--config.data.data_dir={prepared}")
      needs = (pid,)
    for col in COLUMNS:
      cid = f"t1.{row.key}.{col}"
      extra, kind, cneeds = (), "train", needs
      if col in _MODEL_FLAGS:
        extra = (*_MODEL_FLAGS[col], "--config.model.match_params=refiner")
      elif col == "bottomup_latent":
        extra = row.latent
      elif col == "bottomup_bootstrap":
        base = f"t1.{row.key}.bottomup"
        extra = (*row.bootstrap, f"--config.bootstrap.init_workdir={wd(base)}")
        kind, cneeds = "bootstrap", (*needs, base)
      argv = (
        "python",
        "-m",
        "bottomup.main",
        *common,
        *extra,
        f"--workdir={wd(cid)}",
      )
      cells.append(Cell(cid, 1, row.title, col, kind, argv, cneeds, row.raw))

  # Table 2: test-time compute on one row's cells.
  (row,) = [r for r in p.rows if r.key == p.t2_row]
  base = f"t1.{row.key}.bottomup"
  num = (f"--num={p.t2_num}",) if p.t2_num else ()

  def evaluate(series, value, of, flags, needs=(), cid="", table=2, on=row):
    cid = cid or f"t2.{on.key}.{series}.{value:g}"
    argv = (
      "python",
      "-m",
      "bottomup.evaluate",
      f"--workdir={wd(of)}",
      *num,
      "--show=0",
      *flags,
      f"--output={wd(cid)}/results.json",
    )
    cells.append(
      Cell(
        cid,
        table,
        on.title,
        series,
        "evaluate",
        argv,
        (of, *needs),
        on.raw,
        float(value),
        of,
      )
    )

  t = f"--temperature={p.t2_temperature:g}"
  for e in p.t2_extra_passes:
    evaluate("extra_passes", e, base, (f"--extra_passes={e}",))
  for n in p.t2_samples:
    flags = (f"--num_samples={n}", t) if n > 1 else ("--num_samples=1",)
    evaluate("samples_likelihood", n, base, flags)
  prm_id = f"t2.{row.key}.prm"
  cells.append(
    Cell(
      prm_id,
      2,
      row.title,
      "prm",
      "prm",
      ("python", "-m", "bottomup.prm", f"--workdir={wd(base)}", *p.prm),
      (base,),
      row.raw,
      base=base,
    )
  )
  for sel in ("prm", "prm_likelihood"):
    for n in p.t2_samples:
      if n > 1:
        flags = (f"--num_samples={n}", t, f"--selection={sel}")
        evaluate(f"samples_{sel}", n, base, flags, (prm_id,))
  n_beam = max(p.t2_samples)
  for w in p.t2_beam:
    flags = (f"--num_samples={n_beam}", t, "--selection=prm")
    evaluate("beam_prm", w, base, (*flags, f"--beam_width={w}"), (prm_id,))

  def train(cid, series, flags):
    argv = ("python", "-m", "bottomup.main", f"--config={row.config}")
    argv += (*row.overrides, *flags, f"--workdir={wd(cid)}")
    cells.append(Cell(cid, 2, row.title, series, "train", argv, raw=row.raw))

  guided = f"t2.{row.key}.bottomup_qdrop"
  train(guided, "train_guidance", p.t2_guidance_train)
  for w in p.t2_guidance:
    evaluate("guidance", w, guided, (f"--guidance={w:g}",))
  checked = f"t2.{row.key}.bottomup_check"
  train(checked, "train_check", p.t2_check_train)
  for e in p.t2_extra_passes:
    evaluate("extra_passes_check", e, checked, (f"--extra_passes={e}",))
  mdlm = f"t1.{row.key}.mdlm"
  for s in p.t2_diffusion_steps:
    evaluate("mdlm_steps", s, mdlm, (f"--diffusion_steps={s}",))

  # Table 3: the throughput benchmark, and the latency per solved problem
  # of BottomUp and AR + CoT on the first row (the same number of test
  # problems each).
  first = p.rows[0]
  for col in ("bottomup", "ar_cot"):
    of = f"t1.{first.key}.{col}"
    evaluate(col, 0, of, (), cid=f"t3.latency.{col}", table=3, on=first)
  bench = "t3.train_throughput"
  cells.append(
    Cell(
      bench,
      3,
      row.title,
      "train_throughput",
      "benchmark",
      (
        "python",
        "benchmarks/train_throughput.py",
        *p.benchmark,
        f"--output={wd(bench)}/results.json",
      ),
    )
  )
  return cells


def select(cells: list[Cell], table: str, patterns: str = "") -> list[Cell]:
  """The cells that `--table=table` (1, 2, 3 or all) needs, with their deps.

  Args:
    cells: the plan.
    table: 1, 2, 3 or all.
    patterns: comma-separated shell patterns on cell ids (`--cells`); only
      the matching cells of the table (and what they need) are kept.
  """
  if table not in ("1", "2", "3", "all"):
    raise ValueError(f"--table must be 1, 2, 3 or all, not {table!r}")
  pats = [x for x in patterns.split(",") if x]
  by_id = {c.id: c for c in cells}
  want: set[str] = set()
  stack = [
    c.id
    for c in cells
    if table in ("all", str(c.table))
    and (not pats or any(fnmatch.fnmatchcase(c.id, x) for x in pats))
  ]
  if not stack:
    raise ValueError(f"no cell of table {table} matches --cells={patterns}")
  while stack:
    cid = stack.pop()
    if cid not in want:
      want.add(cid)
      stack.extend(by_id[cid].needs)
  return [c for c in cells if c.id in want]
