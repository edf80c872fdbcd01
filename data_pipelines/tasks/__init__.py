"""Task registry: `get_task(name)` for every reasoning family."""

from __future__ import annotations

import importlib

from data_pipelines.tasks import multiplication
from data_pipelines.trajectory import Task

# name -> "module:Class" for tasks with a fixed name (imported lazily).
_FIXED = {
  "prontoqa": "data_pipelines.tasks.prontoqa:ProntoQATask",
  "gsm8k": "data_pipelines.tasks.gsm8k:GSM8KTask",
}
KNOWN = (
  "multiplication_NxN (N = 1, 2, ...; e.g. multiplication_4x4)",
) + tuple(_FIXED)


def get_task(name: str) -> Task:
  """The task called `name`; an unknown name lists the known ones."""
  n = multiplication.parse_name(name)
  if n is not None:
    return multiplication.MultiplicationTask(n)
  if name in _FIXED:
    module, cls = _FIXED[name].split(":")
    return getattr(importlib.import_module(module), cls)()
  raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(KNOWN)}")
