"""Test setup: 8 fake CPU devices, set before jax is imported anywhere;
the longest modules first."""

import os
import pathlib

# Compilation, not running, is most of the suite's time: the tests compile
# hundreds of small programs and run each a few times. XLA's CPU backend at
# optimization level 0 compiles them about twice as fast (the HLO passes
# and the numerics are the same; the generated code is less optimized, which
# only the benchmarks, never the tests, would notice). Subprocesses that
# the tests start get the same flag through `runs.subprocess_env`.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0"

os.environ["XLA_FLAGS"] = " ".join(
  (
    os.environ.get("XLA_FLAGS", ""),
    FAST_COMPILE_FLAGS,
    "--xla_force_host_platform_device_count=8",
  )
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# The modules that take longest on 2 CPU cores, longest first (measured with
# `--durations`: the smoke profile end to end alone is about a quarter of
# the suite). `python -m pytest` runs modules in parallel workers
# (pytest-xdist, `-n` in pyproject.toml), a whole module per worker so that
# its fixtures are made once; starting these first lets the short modules
# fill the gaps instead of leaving one worker alone with a long tail.
LONGEST_FIRST = (
  "reproduce_test.py",
  "sharding_test.py",
  "bootstrap_test.py",
  "train_test.py",
  "prm_test.py",
  "baselines_cli_test.py",
)


def pytest_collection_modifyitems(config, items):
  """Longest modules first; the order within a module is kept."""
  del config
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def real_data_dir() -> pathlib.Path | None:
  """Where the real datasets live: $BOTTOMUP_DATA_DIR, else ../shared/data."""
  env = os.environ.get("BOTTOMUP_DATA_DIR")
  if env:
    return pathlib.Path(env)
  shared = REPO_ROOT.parent / "shared" / "data"
  return shared if shared.is_dir() else None


@pytest.fixture
def data_dir() -> pathlib.Path:
  """The real data folder, or a skip that says why it is missing."""
  path = real_data_dir()
  if path is None or not path.is_dir():
    pytest.skip(
      "real data not found: set BOTTOMUP_DATA_DIR to the folder with "
      "icot/, gsm8k/, prontoqa/ (see data_pipelines/tasks/*.py)"
    )
  return path
