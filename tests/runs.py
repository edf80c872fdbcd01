"""Helpers shared by the tests that train smoke runs (not a test module)."""

import importlib
import json
import pathlib


def smoke_config(**overrides):
  """The locked smoke config with `a__b=v` meaning `config.a.b = v`."""
  cfg = importlib.import_module("experiments.multiplication").get_config(
    "smoke"
  )
  cfg.lock()
  for key, value in overrides.items():
    *groups, field = key.split("__")
    node = cfg
    for g in groups:
      node = node[g]
    node[field] = value
  return cfg


def read_json(path):
  return json.loads(pathlib.Path(path).read_text())


def ckpt_steps(workdir):
  d = pathlib.Path(workdir) / "checkpoints"
  if not d.is_dir():
    return []
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())
