"""launch.reproduce: the tables' cells, adoption, and a whole smoke run."""

import json
import pathlib
import subprocess
import sys

import pytest
from runs import subprocess_env

from launch import cells, configs, reproduce

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("profile", cells.PROFILES)
def test_plan_has_every_column_and_runs_inputs_first(profile, tmp_path):
  plan = cells.plan(profile, tmp_path)
  ids = [c.id for c in plan]
  assert len(ids) == len(set(ids))
  seen = set()
  for c in plan:
    assert set(c.needs) <= seen, f"{c.id} runs before {c.needs}"
    seen.add(c.id)
  t1 = [c for c in plan if c.table == 1]
  rows = {c.row for c in t1}
  for row in rows:
    assert [c.column for c in t1 if c.row == row] == list(cells.COLUMNS)
  assert {c.table for c in plan} == {0, 1, 2, 3} - (
    {0} if profile == "smoke" else set()
  )
  # Every training command writes into its own cell folder.
  for c in plan:
    if c.kind in ("train", "bootstrap"):
      assert c.argv[-1] == f"--workdir={cells.cell_dir(tmp_path, c.id)}"


def test_cpu_plan_rows_and_matched_baselines(tmp_path):
  plan = cells.plan("cpu", tmp_path)
  rows = {c.row for c in plan if c.table == 1}
  assert rows == {
    "multiplication 4x4",
    "multiplication 5x5",
    "ProntoQA (5 hops)",
    "GSM8K",
  }
  for c in plan:
    if c.table == 1 and c.column.startswith(("ar_", "mdlm")):
      assert "--config.model.match_params=refiner" in c.argv
    if c.row in ("ProntoQA (5 hops)", "GSM8K"):
      assert c.raw in ("prontoqa", "gsm8k")
  boot = [c for c in plan if c.column == "bottomup_bootstrap"]
  for c in boot:
    base = c.id.replace("bottomup_bootstrap", "bottomup")
    assert base in c.needs
    assert any(a.startswith("--config.bootstrap.init_workdir=") for a in c.argv)


def test_select_pulls_in_dependencies(tmp_path):
  plan = cells.plan("smoke", tmp_path)
  t2 = cells.select(plan, "2")
  ids = {c.id for c in t2}
  assert "t1.mul4x4.bottomup" in ids and "t1.mul4x4.mdlm" in ids
  assert "t1.mul4x4.ar_nocot" not in ids
  t3 = {c.id for c in cells.select(plan, "3")}
  assert {"t1.mul4x4.bottomup", "t1.mul4x4.ar_cot"} <= t3
  only = [c.id for c in cells.select(plan, "all", "t2.*.guidance.*")]
  assert only == ["t2.mul4x4.bottomup_qdrop", "t2.mul4x4.guidance.2"]
  with pytest.raises(ValueError, match="no cell"):
    cells.select(plan, "1", "t2.*")
  with pytest.raises(ValueError, match="--table"):
    cells.select(plan, "4")
  with pytest.raises(ValueError, match="unknown profile"):
    cells.plan("tpu", tmp_path)


def test_cell_config_parses_the_command(tmp_path):
  (cell,) = [
    c for c in cells.plan("smoke", tmp_path) if c.id == "t1.mul4x4.ar_cot"
  ]
  cfg = configs.cell_config(cell.argv)
  assert cfg["model"]["name"] == "ar_cot"
  assert cfg["model"]["match_params"] == "refiner"
  assert cfg["model"]["d_model"] == 32  # the smoke preset
  have = json.loads(json.dumps(cfg))
  have["model"]["d_model"] = 64
  del have["sampling"]["beam_width"]
  differ, absent = configs.compare(cfg, have)
  assert differ == [("model.d_model", 64, 32)]
  assert absent == ["sampling.beam_width"]


def test_missing_raw_data_skips_with_the_reason(tmp_path):
  plan = cells.plan("cpu", tmp_path)
  (prep,) = [c for c in plan if c.id == "t0.prontoqa.prepare"]
  st, why = reproduce.run_cell(prep, tmp_path, "", {})
  assert st == "skipped" and "BOTTOMUP_DATA_DIR" in why
  st, why = reproduce.run_cell(prep, tmp_path, str(tmp_path), {})
  assert st == "skipped" and f"no {tmp_path}/prontoqa" in why
  (train,) = [c for c in plan if c.id == "t1.prontoqa.bottomup"]
  (tmp_path / "prontoqa").mkdir()
  st, why = reproduce.run_cell(train, tmp_path, str(tmp_path), {})
  assert st == "skipped" and "t0.prontoqa.prepare" in why
  assert not (cells.cell_dir(tmp_path, train.id)).exists()


def test_a_failed_command_leaves_no_cell_json(tmp_path):
  bad = cells.Cell(
    "t1.x.bad",
    1,
    "x",
    "bottomup",
    "train",
    ("python", "-c", "import sys; print('boom'); sys.exit(3)"),
  )
  done = {}
  st, why = reproduce.run_cell(bad, tmp_path, "", done)
  cdir = cells.cell_dir(tmp_path, bad.id)
  assert st == "failed" and "exit status 3" in why
  assert not (cdir / reproduce.CELL_FILE).exists() and not done
  failed = json.loads((cdir / reproduce.FAILED_FILE).read_text())
  assert failed["rc"] == 3 and "boom" in failed["log_tail"]


def test_adopt_checks_the_config(tmp_path):
  out = tmp_path / "out"
  (cell,) = [c for c in cells.plan("smoke", out) if c.id == "t1.mul4x4.mdlm"]
  run = tmp_path / "run"
  run.mkdir()
  cfg = configs.cell_config(cell.argv)
  with pytest.raises(ValueError, match="did not finish"):
    reproduce.adopt(cell, out, run)
  (run / "eval_results.json").write_text(
    json.dumps(
      dict(
        accuracy=0.25,
        num_correct=16,
        num_examples=64,
        num_params=1234,
        flops_per_problem=1e6,
      )
    )
  )
  (run / "timing.json").write_text(
    json.dumps(dict(wall_seconds_this_run=12.5, eval_problems_per_second=9))
  )
  other = json.loads(json.dumps(cfg))
  other["train"]["num_steps"] = 999
  (run / "config.json").write_text(json.dumps(other))
  with pytest.raises(ValueError, match="train.num_steps"):
    reproduce.adopt(cell, out, run)
  (run / "config.json").write_text(json.dumps(cfg))
  rec = reproduce.adopt(cell, out, run)
  assert rec["accuracy"] == 0.25 and rec["params"] == 1234
  assert rec["adopted_from"] == str(run.resolve())
  assert rec["train_tokens"] > 0 and rec["wall_s"] == 12.5
  assert reproduce.load_done(out, [cell])[cell.id] == rec


def test_results_records_count_as_finished_and_are_published(tmp_path):
  """--results: a profile run in pieces, on machines that do not share
  OUT, gathers in one committed folder."""
  out, res = tmp_path / "out", tmp_path / "results"
  plan = cells.plan("smoke", out)
  by_id = {c.id: c for c in plan}
  train, mdlm = by_id["t1.mul4x4.bottomup"], by_id["t1.mul4x4.mdlm"]
  rec = reproduce._record(train, commit="abc", wall_s=5.0, accuracy=0.5)
  (res / "cells").mkdir(parents=True)
  (res / "cells" / f"{train.id}.json").write_text(json.dumps(rec))
  # OUT's own finished cell wins over a record of it.
  mine = reproduce._record(mdlm, commit="def", wall_s=1.0, accuracy=0.25)
  cells.cell_dir(out, mdlm.id).mkdir(parents=True)
  (cells.cell_dir(out, mdlm.id) / reproduce.CELL_FILE).write_text(
    json.dumps(mine)
  )
  stale = dict(mine, accuracy=0.0)
  (res / "cells" / f"{mdlm.id}.json").write_text(json.dumps(stale))
  done = reproduce.load_done(out, plan)
  assert reproduce.load_recorded(res, plan, done) == {train.id}
  assert done[train.id] == rec and done[mdlm.id] == mine
  # An evaluation of the recorded model has no checkpoint to read.
  (evals,) = [c for c in plan if c.id == "t2.mul4x4.extra_passes.1"]
  st, why = reproduce.run_cell(evals, out, "", done, {train.id})
  assert st == "skipped" and "ran elsewhere" in why and train.id in why
  assert not cells.cell_dir(out, evals.id).exists()
  rc = reproduce.main(
    ["--table=1", "--profile=smoke", f"--out={out}", f"--results={res}"]
    + ["--tables_only"]
  )
  assert rc == 0
  row = [x for x in (res / "table1.md").read_text().splitlines() if "4x4" in x]
  assert "50.0%" in row[0] and "25.0%" in row[0]
  assert (res / "table1.csv").exists()
  published = json.loads((res / "cells" / f"{mdlm.id}.json").read_text())
  assert published == mine
  # A record filed under the wrong name is refused, naming the file.
  (res / "cells" / "t1.mul4x4.ar_cot.json").write_text(json.dumps(rec))
  with pytest.raises(SystemExit):
    reproduce.main(
      ["--profile=smoke", f"--out={out}", f"--results={res}", "--tables_only"]
    )


def test_a_cell_made_by_another_command_is_stale(tmp_path):
  out = tmp_path / "out"
  plan = cells.plan("smoke", out)
  (train,) = [c for c in plan if c.id == "t1.mul4x4.bottomup"]
  here = reproduce.command_text(train.argv)
  # The same command under another OUT is the same cell.
  moved = here.replace(str(out), "/elsewhere/tables")
  assert moved != here and reproduce.same_command(moved, train.argv)
  other = here.replace("--config=", "--config.train.num_steps=7 --config=")
  assert not reproduce.same_command(other, train.argv)
  cdir = cells.cell_dir(out, train.id)
  cdir.mkdir(parents=True)
  rec = dict(reproduce._record(train, accuracy=0.5), command=other)
  (cdir / reproduce.CELL_FILE).write_text(json.dumps(rec))
  done = reproduce.load_done(out, plan)
  assert train.id not in done
  st, why = reproduce.run_cell(train, out, "", done)
  assert st == "skipped" and "stale" in why
  # A record of another command in --results is ignored, too.
  res = tmp_path / "results"
  (res / "cells").mkdir(parents=True)
  (res / "cells" / f"{train.id}.json").write_text(json.dumps(rec))
  assert reproduce.load_recorded(res, plan, {}) == set()


@pytest.mark.slow
def test_smoke_profile_writes_all_tables(tmp_path):
  """The acceptance command, end to end (a few minutes on 2 CPU cores)."""
  out = tmp_path / "tables"
  cmd = [
    sys.executable,
    "-m",
    "launch.reproduce",
    "--table=all",
    "--profile=smoke",
    f"--out={out}",
  ]
  env = subprocess_env()  # each cell is an ordinary single-host run
  r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  t1 = (out / "table1.md").read_text()
  for title in cells.COLUMN_TITLES.values():
    assert title in t1
  assert "not run" not in t1 and "failed" not in t1
  rows = (out / "table1.csv").read_text().splitlines()
  assert len(rows) == 1 + len(cells.COLUMNS)
  for name in ("table2", "table3"):
    assert (out / f"{name}.md").exists() and (out / f"{name}.csv").exists()
  assert (out / "table1.png").stat().st_size > 0
  assert (out / "table2.png").stat().st_size > 0
  rec = json.loads(
    (cells.cell_dir(out, "t1.mul4x4.bottomup") / "cell.json").read_text()
  )
  assert rec["command"].startswith("python -m bottomup.main")
  assert rec["commit"] and rec["params"] > 0 and rec["train_tokens"] > 0
  t2 = (out / "table2.csv").read_text()
  assert "guidance" in t2 and "samples_prm" in t2 and "mdlm_steps" in t2
  bench = json.loads(
    (cells.cell_dir(out, "t3.train_throughput") / "cell.json").read_text()
  )
  assert bench["peak_gflops_f32"] > 0 and len(bench["rows"]) == 2
  # A second run finds every cell finished and reruns none.
  r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  assert r.returncode == 0
  assert "] ran:" not in r.stdout and "] done:" in r.stdout
