"""Writes the tables (md, csv) and plots from the finished cells' records."""

from __future__ import annotations

import csv
import datetime
import pathlib
import platform

from launch import cells as cells_lib

# -- Formatting ----------------------------------------------------------------


def _pct(x) -> str:
  return "" if x is None else f"{100 * x:.1f}%"


def _num(x, fmt="{:,.0f}") -> str:
  return "" if x is None else fmt.format(x)


def _sci(x) -> str:
  return "" if x is None else f"{x:.3g}"


def _md_table(header, rows) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
  return "\n".join(lines)


def _status_text(cell, done, status) -> str:
  if cell.id in done:
    return "done"
  st = status.get(cell.id)
  return f"{st[0]}: {st[1]}" if st else "not run"


def _write(out, name, title, body, header, csv_rows) -> list[pathlib.Path]:
  md = out / f"{name}.md"
  md.write_text(f"# {title}\n\n{body}\n")
  cf = out / f"{name}.csv"
  with open(cf, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(csv_rows)
  return [md, cf]


_DETAIL = ("cell", "status", "params", "training tokens", "wall time (s)")
_DETAIL += ("commit", "command")


def _detail_rows(cell_list, done, status):
  rows = []
  for c in cell_list:
    r = done.get(c.id, {})
    rows.append(
      (
        c.id,
        _status_text(c, done, status),
        _num(r.get("params")),
        _num(r.get("train_tokens"), "{:.3g}"),
        _num(r.get("wall_s"), "{:.0f}"),
        r.get("commit", ""),
        f"`{r.get('command') or ' '.join(c.argv)}`",
      )
    )
  return rows


def table1(out, plan, done, status, header_note) -> list[pathlib.Path]:
  t1 = [c for c in plan if c.table == 1]
  rows = list(dict.fromkeys(c.row for c in t1))
  cols = cells_lib.COLUMNS
  grid = []
  for row in rows:
    line = [row]
    for col in cols:
      (c,) = [x for x in t1 if x.row == row and x.column == col]
      r = done.get(c.id)
      line.append(
        _pct(r["accuracy"]) if r else f"({_status_text(c, done, status)})"
      )
    grid.append(line)
  header = ["task", *(cells_lib.COLUMN_TITLES[c] for c in cols)]
  body = (
    f"{header_note}\n\nAccuracy of the final answer on the test split "
    "(exact match); the baselines' parameters are matched to BottomUp's "
    "within each row.\n\n"
    + _md_table(header, grid)
    + "\n\n## Cells\n\n"
    + _md_table(_DETAIL, _detail_rows(t1, done, status))
  )
  csv_header = [
    "row",
    "column",
    "accuracy",
    "num_correct",
    "num_examples",
    "params",
    "train_tokens",
    "train_tokens_per_s",
    "wall_s",
    "commit",
    "command",
  ]
  csv_rows = [
    [c.row, c.column] + [done.get(c.id, {}).get(k, "") for k in csv_header[2:]]
    for c in t1
  ]
  paths = _write(out, "table1", "Table 1: accuracy", body, csv_header, csv_rows)
  png = _plot_table1(out, rows, cols, t1, done)
  return paths + ([png] if png else [])


_TRAINED = {
  "train_guidance": "with question dropout",
  "train_check": "with a check pass (view `checked`, input noise)",
}


def table2(out, plan, done, status, header_note) -> list[pathlib.Path]:
  t2 = [c for c in plan if c.table == 2]
  header = ["series", "setting", "accuracy", "FLOPs / problem"]
  header += ["problems/s", "other"]
  rows, csv_rows = [], []
  for c in t2:
    r = done.get(c.id, {})
    other = ""
    if c.kind == "prm" and r:
      auroc = _sci(r["auroc"]) or "undefined (one outcome only)"
      other = (
        f"PRM on valid drafts: AUROC {auroc}, Brier "
        f"{_sci(r['brier'])} (base rate {_sci(r['brier_base_rate'])})"
      )
      if r.get("ranking_accuracy") is not None:
        other += (
          f"; ranks drafts of one question right "
          f"{_pct(r['ranking_accuracy'])} of the time"
        )
      if r.get("kept_step"):
        other += f"; early-stopped at step {r['kept_step']}"
    elif c.kind == "train" and r:
      how = _TRAINED.get(c.column, c.column)
      other = f"trained {how}: {_pct(r['accuracy'])}"
    elif not r:
      other = _status_text(c, done, status)
    setting = f"{c.value:g}" if c.kind == "evaluate" else ""
    rows.append(
      (
        c.column,
        setting,
        _pct(r.get("accuracy")) if c.kind == "evaluate" else "",
        _sci(r.get("flops_per_problem")) if c.kind == "evaluate" else "",
        _num(r.get("problems_per_s"), "{:.1f}"),
        other,
      )
    )
    csv_rows.append(
      [c.column, setting]
      + [r.get(k, "") for k in ("accuracy", "flops_per_problem")]
      + [r.get("problems_per_s", ""), r.get("command", "")]
    )
  row = t2[0].row if t2 else ""
  body = (
    f"{header_note}\n\nTest-time compute on {row}: BottomUp's Table 1 cell "
    "with extra passes, n samples per pass ranked by likelihood or by the "
    "process reward model (PRM), a beam over drafts, classifier-free "
    "guidance (a cell trained with question dropout), extra passes of a "
    "cell trained with a final check pass (series `extra_passes_check`: "
    "without one, re-applying the last pass repeats its step), and "
    "MDLM's denoising steps. FLOPs per problem: matmul FLOPs estimated as 2 x "
    "params x positions (`bottomup.flops.sampling_flops`).\n\n"
    + _md_table(header, rows)
    + "\n\n## Cells\n\n"
    + _md_table(_DETAIL, _detail_rows(t2, done, status))
  )
  csv_header = [
    "series",
    "setting",
    "accuracy",
    "flops_per_problem",
    "problems_per_s",
    "command",
  ]
  paths = _write(
    out, "table2", "Table 2: test-time compute", body, csv_header, csv_rows
  )
  png = _plot_table2(out, t2, done)
  return paths + ([png] if png else [])


def table3(out, plan, done, status, header_note) -> list[pathlib.Path]:
  t3 = [c for c in plan if c.table == 3]
  lines, csv_rows = [], []
  bench = next(
    (done[c.id] for c in t3 if c.kind == "benchmark" and c.id in done), None
  )
  if bench:
    lines.append(
      "Matmul peak measured in the same run (the median of its rounds, "
      "which alternate it with the timed steps): float32 "
      f"{bench['peak_gflops_f32']:.1f} GFLOP/s, bf16 (f32 accumulation) "
      f"{bench['peak_gflops_bf16']:.1f} GFLOP/s. Config: {bench['config']}."
      "\n"
    )
    brows = [
      (
        r["dtype"],
        _num(r["params"]),
        _num(r["tokens_per_s"]),
        f"{r['model_gflops']:.1f}",
        _pct(r["mfu_f32_peak"]),
        _pct(r["mfu_own_peak"]),
      )
      for r in bench["rows"]
    ]
    lines.append(
      _md_table(
        (
          "compute",
          "params",
          "train tokens/s",
          "model GFLOP/s",
          "MFU (f32 peak)",
          "MFU (own peak)",
        ),
        brows,
      )
    )
    if bench.get("bf16_speedup"):
      lines.append(f"\nbf16 / float32: {bench['bf16_speedup']:.2f}x\n")
    for r in bench["rows"]:
      csv_rows.append(
        [
          "train_throughput",
          r["dtype"],
          r["params"],
          r["tokens_per_s"],
          r["mfu_f32_peak"],
          "",
          "",
          "",
        ]
      )
  lat_rows = []
  for c in t3:
    if c.kind != "evaluate":
      continue
    r, base = done.get(c.id), done.get(c.base)
    if not r:
      lat_rows.append((c.column, "", "", "", "", _status_text(c, done, status)))
      continue
    solved = r["problems_per_s"] * r["accuracy"]
    latency = 1.0 / solved if solved else None
    lat_rows.append(
      (
        c.column,
        _num(base and base.get("params")),
        f"{r['problems_per_s']:.1f}",
        _pct(r["accuracy"]),
        _num(latency * 1e3, "{:.2f}") if latency else "no problem solved",
        _num(base and base.get("train_tokens_per_s")),
      )
    )
    csv_rows.append(
      [
        "latency",
        c.column,
        base and base.get("params"),
        base and base.get("train_tokens_per_s"),
        "",
        r["problems_per_s"],
        r["accuracy"],
        latency,
      ]
    )
  lines.append(
    "\nLatency per solved problem (batched sampling of the test problems; "
    "1 / (problems/s x accuracy)) and training tokens/s of the Table 1 "
    "runs (median logged steps/s x target tokens per step):\n"
  )
  lines.append(
    _md_table(
      (
        "model",
        "params",
        "problems/s",
        "accuracy",
        "ms per solved problem",
        "train tokens/s",
      ),
      lat_rows,
    )
  )
  body = (
    f"{header_note}\n\n"
    + "\n".join(lines)
    + "\n\n## Cells\n\n"
    + _md_table(_DETAIL, _detail_rows(t3, done, status))
  )
  csv_header = [
    "kind",
    "name",
    "params",
    "train_tokens_per_s",
    "mfu_f32_peak",
    "problems_per_s",
    "accuracy",
    "seconds_per_solved_problem",
  ]
  return _write(
    out, "table3", "Table 3: efficiency", body, csv_header, csv_rows
  )


# -- Plots -----------------------------------------------------------------------


def _pyplot():
  try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    print("matplotlib is not installed: no plots (pip install matplotlib)")
    return None
  return plt


def _plot_table1(out, rows, cols, t1, done):
  plt = _pyplot()
  if plt is None:
    return None
  fig, ax = plt.subplots(figsize=(9, 3.5))
  width = 0.8 / len(cols)
  for j, col in enumerate(cols):
    ys = []
    for row in rows:
      (c,) = [x for x in t1 if x.row == row and x.column == col]
      ys.append(100 * done[c.id]["accuracy"] if c.id in done else 0.0)
    xs = [i + (j - len(cols) / 2 + 0.5) * width for i in range(len(rows))]
    ax.bar(xs, ys, width, label=cells_lib.COLUMN_TITLES[col])
  ax.set_xticks(range(len(rows)), rows)
  ax.set_ylabel("test accuracy (%)")
  ax.set_ylim(0, 100)
  ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.12))
  fig.tight_layout()
  path = out / "table1.png"
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _plot_table2(out, t2, done):
  plt = _pyplot()
  if plt is None:
    return None
  fig, ax = plt.subplots(figsize=(6, 4))
  series = {}
  for c in t2:
    r = done.get(c.id)
    if c.kind == "evaluate" and r and r.get("flops_per_problem"):
      series.setdefault(c.column, []).append(
        (r["flops_per_problem"], 100 * r["accuracy"], c.value)
      )
  for name, pts in series.items():
    pts.sort()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
  ax.set_xscale("log")
  ax.set_xlabel("matmul FLOPs per problem (estimated)")
  ax.set_ylabel("test accuracy (%)")
  if series:
    ax.legend(fontsize=7)
  fig.tight_layout()
  path = out / "table2.png"
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_all(out, profile, plan, done, table, status) -> list[pathlib.Path]:
  """Writes the tables `table` (1, 2, 3 or all) asks for; returns paths."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  note = (
    f"Profile `{profile}`; written {datetime.date.today().isoformat()} on "
    f"{platform.node()} ({platform.machine()}, {_devices()}). Cells not "
    "finished are shown with their status."
  )
  makers = {"1": table1, "2": table2, "3": table3}
  paths = []
  for t in ("1", "2", "3"):
    if table in (t, "all"):
      paths += makers[t](out, plan, done, status, note)
  return paths


def _devices() -> str:
  import os

  return f"{os.cpu_count()} CPU threads"
