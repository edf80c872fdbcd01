"""Every experiment config loads for each preset, locks, and stays in base."""

import importlib
import inspect
import json
import pathlib

import ml_collections
import pytest

from experiments import base

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(
  p
  for p in (REPO / "experiments").glob("*.py")
  if p.name not in ("base.py", "__init__.py")
)


def _flatten(cfg, prefix=""):
  out = {}
  for k, v in cfg.items():
    if isinstance(v, ml_collections.ConfigDict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _module(path):
  return importlib.import_module(f"experiments.{path.stem}")


def _presets(module):
  """The presets a config file accepts, from its unknown-preset error."""
  if not inspect.signature(module.get_config).parameters:
    return [None]
  with pytest.raises(ValueError, match="known:") as e:
    module.get_config("no_such_preset")
  known = str(e.value).split("known:", 1)[1]
  return [p.strip() for p in known.split(",") if p.strip()]


def test_experiment_files_are_found():
  names = [p.name for p in EXPERIMENTS]
  assert "multiplication.py" in names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_configs_load_and_lock(path):
  module = _module(path)
  presets = _presets(module)
  if path.stem == "multiplication":
    assert set(presets) >= {"smoke", "quickstart", "cpu", "accel"}
  base_keys = set(_flatten(base.get_config()))
  # The docstring gives the launch command (STYLE rule 2).
  assert f"--config=experiments/{path.name}" in module.__doc__
  for preset in presets:
    cfg = module.get_config() if preset is None else module.get_config(preset)
    # Experiments override base fields; they never invent new ones.
    assert set(_flatten(cfg)) == base_keys, preset
    json.dumps(cfg.to_dict())  # config.json must be writable
    assert cfg.train.num_steps > 0
    assert cfg.train.batch_size % 8 == 0  # splits over 8 test devices
    cfg.lock()
    with pytest.raises((AttributeError, KeyError)):
      cfg.train.num_stepz = 3
    with pytest.raises((AttributeError, KeyError)):
      cfg.modle = ml_collections.ConfigDict()
    cfg.train.num_steps = 7  # an existing field still takes an override
    assert cfg.train.num_steps == 7


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_unknown_preset_raises(path):
  module = _module(path)
  if not inspect.signature(module.get_config).parameters:
    pytest.skip(f"{path.name} takes no preset")
  with pytest.raises(ValueError, match="bogus"):
    module.get_config("bogus")
