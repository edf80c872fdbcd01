r"""Reproduces the paper tables: one command, resumable cell by cell.

    python -m launch.reproduce --table=all --profile=cpu --out=DIR \
        [--data_dir=$BOTTOMUP_DATA_DIR] [--cells=PATTERNS] [--dry_run] \
        [--tables_only] [--adopt=ID=WORKDIR ...] [--results=results/cpu]

Every cell of the tables (`launch/cells.py`) is an ordinary command run in a
subprocess from the repository root, with its own workdir OUT/cells/<id>
(its output in log.txt there). When the command succeeds its figures are
read from what it wrote and saved, atomically, as OUT/cells/<id>/cell.json
with the exact command, the wall time, and the git commit; a cell with a
cell.json is never run again, and a cell killed halfway resumes from its
own checkpoints when the command is run again. A failed cell is reported
and the others go on (exit status 1 at the end); a cell whose raw dataset
is missing, or whose inputs failed, is skipped with the reason.

Then OUT/table{1,2,3}.md and .csv, and plots OUT/table1.png, table2.png
(matplotlib; left out with a message when it is not installed), are
written from every finished cell, so a partly run profile gives partial
tables.

`--adopt=ID=WORKDIR` takes a run made elsewhere as the cell ID, when the
run finished and its saved config equals the one the cell's command makes
(fields the run predates are listed in cell.json); it is copied in.

`--results=DIR` (the committed results, e.g. `results/cpu`) lets a profile
be run in pieces on different machines or sessions: a cell recorded in
DIR/cells/<id>.json counts as finished unless OUT has it, and at the end
the tables and the record of every finished cell are written to DIR as
well. A recorded cell has no checkpoints here, so a cell that needs one
(an evaluation of its model) is skipped with the reason; delete the record
to run the model again.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time

from launch import cells as cells_lib
from launch import figures as figures_lib
from launch import tables

ROOT = pathlib.Path(__file__).resolve().parent.parent
CELL_FILE = "cell.json"
FAILED_FILE = "failed.json"


def git_commit() -> str:
  """HEAD's commit, with "-dirty" when the tree has uncommitted changes."""
  try:
    head = subprocess.run(
      ["git", "rev-parse", "HEAD"],
      cwd=ROOT,
      capture_output=True,
      text=True,
      check=True,
    ).stdout.strip()
    dirty = subprocess.run(
      ["git", "status", "--porcelain", "--untracked-files=no"],
      cwd=ROOT,
      capture_output=True,
      text=True,
      check=True,
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return head + ("-dirty" if dirty else "")


def command_text(argv) -> str:
  return shlex.join(argv)


_OUT_PATH = re.compile(r"=[^\s=']*/(cells|prepared)(?=[/\s']|$)")


def same_command(recorded: str, argv) -> bool:
  """Whether a recorded command is the cell's, whatever OUT each used."""
  norm = lambda text: _OUT_PATH.sub(r"=OUT/\1", text)
  return norm(recorded) == norm(command_text(argv))


def _write_json(path: pathlib.Path, obj) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2) + "\n")
  os.replace(tmp, path)


def load_done(out, cell_list) -> dict[str, dict]:
  """{cell id: its cell.json} for the finished cells.

  A cell.json made by another command (the plan changed since) is not
  counted: the cell is reported stale and not run (its folder holds the
  other command's run; remove it to run the cell).
  """
  done = {}
  for c in cell_list:
    f = cells_lib.cell_dir(out, c.id) / CELL_FILE
    if f.exists():
      rec = json.loads(f.read_text())
      if same_command(rec.get("command", ""), c.argv):
        done[c.id] = rec
  return done


def load_recorded(results, cell_list, done) -> set[str]:
  """Adds to `done` the cells recorded in RESULTS/cells/<id>.json that OUT
  has not finished; returns their ids."""
  got = set()
  for c in cell_list:
    f = pathlib.Path(results) / "cells" / f"{c.id}.json"
    if c.id not in done and f.exists():
      rec = json.loads(f.read_text())
      if rec.get("id") != c.id:
        raise ValueError(f"{f}: records cell {rec.get('id')!r}, not {c.id!r}")
      if not same_command(rec.get("command", ""), c.argv):
        print(f"{f}: made by another command than the plan's; ignored")
        continue
      done[c.id] = rec
      got.add(c.id)
  return got


def publish(results, out, done, written) -> list[pathlib.Path]:
  """Copies the tables and every finished cell's record into `results`."""
  results = pathlib.Path(results)
  (results / "cells").mkdir(parents=True, exist_ok=True)
  paths = []
  for path in written:
    shutil.copyfile(path, results / path.name)
    paths.append(results / path.name)
  for cid, rec in sorted(done.items()):
    f = results / "cells" / f"{cid}.json"
    _write_json(f, rec)
    paths.append(f)
  return paths


def _raw_missing(cell, data_dir) -> str:
  if not cell.raw:
    return ""
  if not data_dir:
    return (
      f"needs the raw {cell.raw} dataset: give --data_dir or set "
      f"{cells_lib.DATA_ENV}"
    )
  if not (pathlib.Path(data_dir) / cell.raw).is_dir():
    return f"needs the raw {cell.raw} dataset: no {data_dir}/{cell.raw}"
  return ""


def _record(cell, **fields) -> dict:
  """A cell.json: the cell's identity and command, then `fields`."""
  return dict(
    id=cell.id,
    table=cell.table,
    row=cell.row,
    column=cell.column,
    kind=cell.kind,
    value=cell.value,
    command=command_text(cell.argv),
    **fields,
  )


def run_cell(cell, out, data_dir, done, recorded=()) -> tuple[str, str]:
  """Runs one cell unless done; returns (status, detail).

  `recorded`: the ids in `done` that come from `--results` (no workdir).
  """
  cdir = cells_lib.cell_dir(out, cell.id)
  if cell.id in done:
    return "done", "finished earlier"
  if (cdir / CELL_FILE).exists():
    return "skipped", (
      f"stale: {cdir} holds a run of another command (the plan changed); "
      "remove the folder to run this cell"
    )
  missing = _raw_missing(cell, data_dir)
  if missing:
    return "skipped", missing
  waiting = [n for n in cell.needs if n not in done]
  if waiting:
    return "skipped", f"needs {', '.join(waiting)}, which did not finish"
  elsewhere = [n for n in cell.needs if n in recorded]
  if elsewhere:
    return "skipped", (
      f"needs the workdir of {', '.join(elsewhere)}, which ran elsewhere "
      "(only its record is here); delete that record to run it again"
    )
  cdir.mkdir(parents=True, exist_ok=True)
  argv = [sys.executable if a == "python" else a for a in cell.argv]
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
  )
  if data_dir:
    env[cells_lib.DATA_ENV] = str(data_dir)
  commit = git_commit()
  print(f"[{cell.id}] {command_text(cell.argv)}", flush=True)
  t0 = time.time()
  with open(cdir / "log.txt", "a") as log:
    log.write(f"\n# {time.ctime()} commit {commit}\n# {command_text(argv)}\n")
    log.flush()
    rc = subprocess.run(
      argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    ).returncode
  wall = time.time() - t0
  attempts = cdir / "attempts.jsonl"
  with open(attempts, "a") as f:
    f.write(json.dumps(dict(rc=rc, wall_s=round(wall, 1), commit=commit)))
    f.write("\n")
  if rc != 0:
    tail = (cdir / "log.txt").read_text().splitlines()[-15:]
    _write_json(cdir / FAILED_FILE, dict(rc=rc, log_tail=tail))
    return "failed", f"exit status {rc}; see {cdir / 'log.txt'}"
  try:
    figures = figures_lib.read_figures(cell, out)
  except (OSError, KeyError, ValueError) as e:
    return "failed", f"ran, but its results could not be read: {e}"
  runs = [json.loads(x) for x in attempts.read_text().splitlines() if x]
  record = _record(
    cell,
    commit=commit,
    wall_s=round(sum(r["wall_s"] for r in runs), 1),
    attempts=len(runs),
    **figures,
  )
  (cdir / FAILED_FILE).unlink(missing_ok=True)
  _write_json(cdir / CELL_FILE, record)
  done[cell.id] = record
  return "ran", f"{wall:.0f} s"


def adopt(cell, out, workdir) -> dict:
  """Copies a finished run in as `cell` (see the module docstring)."""
  from launch import configs

  src = pathlib.Path(workdir)
  if cell.kind not in ("train", "bootstrap"):
    raise ValueError(f"{cell.id}: only training cells can be adopted")
  if not (src / "eval_results.json").exists():
    raise ValueError(f"{src}: no eval_results.json (the run did not finish)")
  want = configs.cell_config(cell.argv)
  have = json.loads((src / "config.json").read_text())
  differ, absent = configs.compare(want, have)
  if differ:
    raise ValueError(
      f"{src} was not made by {cell.id}'s command; differing fields: "
      + ", ".join(f"{k} (run {a!r}, cell {b!r})" for k, a, b in differ)
    )
  cdir = cells_lib.cell_dir(out, cell.id)
  if cdir.exists():
    raise ValueError(f"{cdir} exists: remove it first to adopt {src}")
  shutil.copytree(src, cdir)
  timing = json.loads((cdir / "timing.json").read_text())
  figures = figures_lib.read_figures(cell, out)
  record = _record(
    cell,
    commit="adopted",
    wall_s=timing.get("wall_seconds_this_run"),
    attempts=1,
    adopted_from=str(src.resolve()),
    fields_the_run_predates=absent,
    **figures,
  )
  _write_json(cdir / CELL_FILE, record)
  return record


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(
    prog="python -m launch.reproduce",
    description="Runs the cells of the paper tables and writes the tables.",
  )
  ap.add_argument("--table", default="all", choices=["1", "2", "3", "all"])
  ap.add_argument("--profile", required=True, choices=cells_lib.PROFILES)
  ap.add_argument("--out", required=True, help="Output folder.")
  ap.add_argument(
    "--data_dir",
    default=os.environ.get(cells_lib.DATA_ENV, ""),
    help=f"Raw datasets (default ${cells_lib.DATA_ENV}).",
  )
  ap.add_argument(
    "--cells",
    default="",
    metavar="PATTERNS",
    help="Only these cells (comma-separated shell patterns on cell ids, "
    "e.g. 't1.mul4x4.*'), with the cells they need.",
  )
  ap.add_argument(
    "--dry_run", action="store_true", help="Print the commands only."
  )
  ap.add_argument(
    "--tables_only",
    action="store_true",
    help="Run nothing: write the tables from the finished cells.",
  )
  ap.add_argument(
    "--adopt",
    action="append",
    default=[],
    metavar="ID=WORKDIR",
    help="Take a finished run as the cell ID (repeatable).",
  )
  ap.add_argument(
    "--results",
    default="",
    metavar="DIR",
    help="Committed results (e.g. results/cpu): cells recorded in "
    "DIR/cells count as finished; the tables and records are written there.",
  )
  args = ap.parse_args(argv)
  out = pathlib.Path(args.out).resolve()
  plan = cells_lib.plan(args.profile, out)
  try:
    todo = cells_lib.select(plan, args.table, args.cells)
  except ValueError as e:
    ap.error(str(e))
  by_id = {c.id: c for c in plan}
  for spec in args.adopt:
    cid, sep, wd = spec.partition("=")
    if not sep or cid not in by_id:
      ap.error(
        f"--adopt={spec}: expected ID=WORKDIR with a cell ID of the plan"
      )
    try:
      adopt(by_id[cid], out, wd)
    except ValueError as e:
      ap.error(f"--adopt={spec}: {e}")
    print(f"adopted {wd} as {cid}")
  if args.dry_run:
    for c in todo:
      print(f"[{c.id}] {command_text(c.argv)}")
    return 0
  out.mkdir(parents=True, exist_ok=True)
  done = load_done(out, plan)
  recorded = set()
  if args.results:
    try:
      recorded = load_recorded(args.results, plan, done)
    except ValueError as e:
      ap.error(f"--results={args.results}: {e}")
    print(f"{len(recorded)} cell(s) recorded in {args.results}")
  status = {}
  if not args.tables_only:
    for c in todo:
      st, detail = run_cell(c, out, args.data_dir, done, recorded)
      if c.id in recorded:
        detail = f"recorded in {args.results}"
      status[c.id] = (st, detail)
      print(f"[{c.id}] {st}: {detail}", flush=True)
  written = tables.write_all(out, args.profile, plan, done, args.table, status)
  if args.results:
    written += publish(args.results, out, done, written)
  for path in written:
    print(f"wrote {path}")
  failed = [cid for cid, (st, _) in status.items() if st == "failed"]
  if failed:
    print(f"{len(failed)} cell(s) failed: {', '.join(failed)}")
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
