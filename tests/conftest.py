"""Test setup: 8 fake CPU devices, set before jax is imported anywhere."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


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
