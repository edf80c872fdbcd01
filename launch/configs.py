"""The config a cell's command makes, and how it compares with a run's."""

from __future__ import annotations

import json


def cell_config(argv) -> dict:
  """The experiment config (as saved to config.json) of a cell's command.

  Parses the command's `--config=FILE[:PRESET]` and `--config.x=y` flags
  the way `bottomup.main` does, without running anything.
  """
  from absl import flags
  from ml_collections import config_flags

  args = ["reproduce", *(a for a in argv if a.startswith("--config"))]
  if len(args) == 1:
    raise ValueError(f"no --config flag in {' '.join(argv)}")
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config", None, "", flag_values=fv, lock_config=True, sys_argv=args
  )
  fv(args)
  # Through JSON, as the trainer saves it (tuples become lists).
  return json.loads(json.dumps(fv.config.to_dict()))


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def compare(want: dict, have: dict) -> tuple[list, list]:
  """(fields that differ as (name, run's, cell's), fields the run lacks).

  A field the run's config lacks is a field added to the code after the
  run; it is reported, not treated as a difference.
  """
  w, h = _flatten(want), _flatten(have)
  differ = [(k, h[k], w[k]) for k in sorted(w) if k in h and h[k] != w[k]]
  differ += [(k, h[k], None) for k in sorted(h) if k not in w]
  absent = sorted(k for k in w if k not in h)
  return differ, absent
