"""Helpers shared by the tests that train smoke runs (not a test module)."""

import importlib
import json
import os
import pathlib

from conftest import FAST_COMPILE_FLAGS


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


def subprocess_env(devices: int | None = None, **extra) -> dict[str, str]:
  """The environment for a CLI run that a test starts: the CPU, quiet
  TensorFlow, the suite's fast-compile XLA flag, and `devices` fake
  devices (None: one, the default of an ordinary run)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  flags = [FAST_COMPILE_FLAGS]
  if devices is not None:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  env["XLA_FLAGS"] = " ".join(flags)
  env.update(extra)
  return env
