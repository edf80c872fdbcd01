"""Metrics: the one module that knows the metric writers (STYLE rule 9).

Process 0 writes, under the workdir:

    events.out.tfevents.*  TensorBoard scalars, texts and hparams (clu)
    metrics.jsonl          one JSON object per `write_scalars` call, for
                           scripts and tests that should not need TensorBoard
                           (local workdirs only: object stores cannot append)

and logs every scalar line through absl (clu's LoggingWriter). Other
processes write nothing, so a multi-host run has one copy of each file.

`ProgressBar` prints one status line to stderr every few seconds on local
runs; `write_json` writes small result files (config.json,
eval_results.json) atomically.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any, TextIO

import jax
import numpy as np
from absl import logging
from etils import epath

METRICS_JSONL = "metrics.jsonl"


class MetricWriter:
  """TensorBoard + log + JSONL metric writer that is silent off process 0."""

  def __init__(
    self,
    workdir: str | os.PathLike[str],
    *,
    process_index: int | None = None,
    tensorboard: bool = True,
  ):
    """Opens the writers (process 0 only).

    Args:
      workdir: folder for the event files and metrics.jsonl (local or gs://);
        created if missing.
      process_index: this process's index; None asks JAX.
      tensorboard: write TensorBoard event files (False: the log and
        metrics.jsonl only, and TensorFlow is not imported).
    """
    if process_index is None:
      process_index = jax.process_index()
    self.active = process_index == 0
    self._writer = None
    self._jsonl: TextIO | None = None
    if not self.active:
      return
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    self._writer = _default_writer(workdir) if tensorboard else _LogWriter()
    if "://" not in os.fspath(workdir):  # Object stores cannot append.
      self._jsonl = (workdir / METRICS_JSONL).open("a")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes scalar metrics for `step`.

    Args:
      step: training step the values belong to.
      scalars: name -> number (Python, numpy or a 0-d jax.Array).
    """
    if not self.active:
      return
    values = {k: float(v) for k, v in scalars.items()}
    self._writer.write_scalars(step, values)
    if self._jsonl is not None:
      self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
      # Flushed per write (rare) so that a live run can be followed.
      self._jsonl.flush()

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    """Writes text summaries (e.g. decoded samples) for `step`.

    Args:
      step: training step the texts belong to.
      texts: name -> text.
    """
    if self.active:
      self._writer.write_texts(step, dict(texts))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Writes hyperparameters for TensorBoard's HParams tab.

    Args:
      hparams: possibly nested mapping (e.g. `config.to_dict()`); nested
        keys are joined with "." and values that TensorBoard cannot show
        (None, lists, ...) are written as strings.
    """
    if self.active:
      self._writer.write_hparams(_flat_hparams(hparams))

  def flush(self) -> None:
    """Blocks until everything written so far is on disk."""
    if self.active:
      self._writer.flush()
      if self._jsonl is not None:
        self._jsonl.flush()

  def close(self) -> None:
    """Flushes and closes the writers; further writes are errors."""
    if self.active:
      self._writer.close()
      if self._jsonl is not None:
        self._jsonl.close()

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


class ProgressBar:
  """A one-line status report on stderr every few seconds.

  The line reads, e.g.

      step 1200/10000 (12.0%) | 5.31 steps/s | ETA 27m37s | loss 1.234

  The rate is measured over the steps since the previous line, so it
  reflects the current speed (the first line includes compilation).
  """

  def __init__(
    self,
    total_steps: int,
    *,
    start_step: int = 0,
    every_seconds: float = 10.0,
    enabled: bool | None = None,
    max_metrics: int = 4,
    stream: TextIO | None = None,
  ):
    """Starts the clock.

    Args:
      total_steps: the step at which training ends.
      start_step: the step training starts (or resumes) from.
      every_seconds: minimum time between two lines; 0 prints every update.
      enabled: print or not; None prints on process 0 only.
      max_metrics: how many of the latest metrics to show.
      stream: where to print; None is sys.stderr at print time.
    """
    if enabled is None:
      enabled = jax.process_index() == 0
    self.enabled = enabled
    self._total = total_steps
    self._every = every_seconds
    self._max_metrics = max_metrics
    self._stream = stream
    self._last_step = start_step
    self._last_time = time.monotonic()
    self._pending: tuple[int, Mapping[str, Any] | None] | None = None

  def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> None:
    """Reports that `step` is done; prints if `every_seconds` have passed.

    Args:
      step: the number of completed training steps.
      metrics: latest metrics to show (name -> number). They are converted
        only when a line is printed, so device values cost no sync per step.
    """
    if not self.enabled:
      return
    now = time.monotonic()
    if now - self._last_time >= self._every or step >= self._total:
      self._print(step, metrics, now)
    else:
      self._pending = (step, metrics)

  def close(self) -> None:
    """Prints the last unreported step, if any."""
    if self.enabled and self._pending is not None:
      self._print(*self._pending, time.monotonic())

  def _print(
    self, step: int, metrics: Mapping[str, Any] | None, now: float
  ) -> None:
    elapsed = max(now - self._last_time, 1e-9)
    rate = (step - self._last_step) / elapsed
    parts = [f"step {step}/{self._total} ({100 * step / self._total:.1f}%)"]
    parts.append(f"{rate:.3g} steps/s")
    if rate > 0:
      eta = _format_duration(max(self._total - step, 0) / rate)
    else:
      eta = "?"
    parts.append(f"ETA {eta}")
    if metrics:
      shown = list(metrics.items())[: self._max_metrics]
      parts.append(" ".join(f"{k} {float(v):.4g}" for k, v in shown))
    stream = self._stream or sys.stderr
    print(" | ".join(parts), file=stream, flush=True)
    self._last_step, self._last_time = step, now
    self._pending = None


def _default_writer(workdir: epath.Path):
  """clu's TensorBoard + log writer, or a log-only one without TensorFlow."""
  try:
    # Imported here: clu's metric_writers package imports TensorFlow at
    # import time, which processes that write nothing should not pay for.
    from clu import metric_writers
  except ImportError:
    # Accelerator hosts may have no TensorFlow: metrics.jsonl and the log
    # still carry every value.
    logging.warning("TensorFlow/clu unavailable: no TensorBoard event files")
    return _LogWriter()
  # Asynchronous: event-file writes must not stall the training loop.
  return metric_writers.create_default_writer(
    os.fspath(workdir), asynchronous=True
  )


class _LogWriter:
  """The clu writer interface, logging only (no TensorFlow needed)."""

  def write_scalars(self, step, scalars):
    logging.info("[%d] %s", step, scalars)

  def write_texts(self, step, texts):
    logging.info("[%d] %s", step, texts)

  def write_hparams(self, hparams):
    logging.info("hparams %s", hparams)

  def flush(self):
    pass

  def close(self):
    pass


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
  """Writes `obj` as indented JSON, so that readers never see half a file.

  Local files are written to a temporary file in the same folder and then
  renamed over `path` (atomic on POSIX); on object stores (gs://) a single
  upload is already atomic.

  Args:
    path: the file to (over)write; its folder is created if missing.
    obj: JSON-serializable data; numpy and jax arrays and scalars are
      converted to lists and numbers.
  """
  text = json.dumps(obj, indent=2, default=_to_builtin) + "\n"
  path_text = os.fspath(path)
  if "://" in path_text:
    epath.Path(path_text).write_text(text)
    return
  folder = os.path.dirname(os.path.abspath(path_text))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
    dir=folder, prefix=f".{os.path.basename(path_text)}.", suffix=".tmp"
  )
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path_text)
  except BaseException:
    os.unlink(tmp)
    raise


def _to_builtin(value: Any) -> Any:
  """json.dumps fallback for numpy/jax values."""
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    return np.asarray(value).tolist()
  raise TypeError(
    f"Object of type {type(value).__name__} is not JSON serializable"
  )


def _flat_hparams(
  hparams: Mapping[str, Any], prefix: str = ""
) -> dict[str, bool | int | float | str]:
  """Flattens nested keys to "a.b" and stringifies non-scalar values."""
  flat = {}
  for key, value in hparams.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(_flat_hparams(value, prefix=f"{name}."))
    elif isinstance(value, (bool, int, float, str)):
      flat[name] = value
    else:
      flat[name] = str(value)
  return flat


def _format_duration(seconds: float) -> str:
  """3725 -> '1h02m05s', 65 -> '1m05s', 4 -> '4s'."""
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m{secs:02d}s"
  if minutes:
    return f"{minutes}m{secs:02d}s"
  return f"{secs}s"
