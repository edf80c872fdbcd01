"""Tests for bottomup.metrics."""

import io
import json
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.util import tensor_util

from bottomup import metrics


def read_event_scalars(workdir) -> dict[str, list[tuple[int, float]]]:
  """tag -> [(step, value)] from every event file in `workdir`."""
  scalars = {}
  for path in sorted(workdir.glob("events.out.tfevents.*")):
    for event in event_file_loader.EventFileLoader(str(path)).Load():
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name != "scalars":
          continue
        number = float(tensor_util.make_ndarray(value.tensor))
        scalars.setdefault(value.tag, []).append((event.step, number))
  return scalars


def test_process_zero_writes_events_and_jsonl(tmp_path):
  workdir = tmp_path / "run"
  with metrics.MetricWriter(workdir, process_index=0) as writer:
    writer.write_hparams({"optim": {"lr": 1e-3, "schedule": None}, "seed": 1})
    writer.write_scalars(10, {"loss": jnp.float32(2.5), "lr": 1e-3})
    writer.write_scalars(20, {"loss": np.float32(1.5)})
    writer.write_texts(20, {"sample": "12*34 = 408"})
    writer.flush()
  assert read_event_scalars(workdir)["loss"] == [(10, 2.5), (20, 1.5)]
  lines = (workdir / metrics.METRICS_JSONL).read_text().splitlines()
  assert [json.loads(line) for line in lines] == [
    {"step": 10, "loss": 2.5, "lr": 1e-3},
    {"step": 20, "loss": 1.5},
  ]


def test_other_processes_write_nothing(tmp_path):
  workdir = tmp_path / "run"
  writer = metrics.MetricWriter(workdir, process_index=1)
  writer.write_hparams({"seed": 1})
  writer.write_scalars(1, {"loss": 1.0})
  writer.write_texts(1, {"sample": "x"})
  writer.flush()
  writer.close()
  assert not workdir.exists()


def test_write_json_replaces_atomically(tmp_path):
  path = tmp_path / "sub" / "eval_results.json"
  metrics.write_json(path, {"accuracy": np.float32(0.5), "n": np.int64(3)})
  assert json.loads(path.read_text()) == {"accuracy": 0.5, "n": 3}
  metrics.write_json(path, {"per_pass": jnp.arange(3)})
  assert json.loads(path.read_text()) == {"per_pass": [0, 1, 2]}
  # A failed write leaves the previous file intact and no temporary file.
  with pytest.raises(TypeError):
    metrics.write_json(path, {"bad": object()})
  assert json.loads(path.read_text()) == {"per_pass": [0, 1, 2]}
  assert [p.name for p in path.parent.iterdir()] == ["eval_results.json"]


def test_progress_bar_reports_rate_eta_and_metrics():
  stream = io.StringIO()
  bar = metrics.ProgressBar(
    100, start_step=10, every_seconds=0.0, enabled=True, stream=stream
  )
  bar.update(20, {"loss": jnp.float32(1.23456), "acc": 0.5})
  bar.update(30)
  bar.close()
  lines = stream.getvalue().splitlines()
  assert len(lines) == 2
  assert lines[0].startswith("step 20/100 (20.0%) | ")
  assert "steps/s" in lines[0] and "ETA " in lines[0]
  assert lines[0].endswith("loss 1.235 acc 0.5")


def test_progress_bar_throttles_and_flushes_on_close():
  stream = io.StringIO()
  bar = metrics.ProgressBar(
    50, every_seconds=3600.0, enabled=True, stream=stream
  )
  for step in range(1, 10):
    bar.update(step, {"loss": 1.0})
  assert stream.getvalue() == ""
  bar.close()  # The last step is always reported.
  assert stream.getvalue().startswith("step 9/50 ")
  bar.update(50)  # So is the final step.
  assert stream.getvalue().splitlines()[-1].startswith("step 50/50 ")


def test_progress_bar_disabled_prints_nothing(capsys):
  bar = metrics.ProgressBar(10, every_seconds=0.0, enabled=False)
  bar.update(10, {"loss": 1.0})
  bar.close()
  assert capsys.readouterr().err == ""


def test_format_duration():
  assert metrics._format_duration(4.2) == "4s"
  assert metrics._format_duration(65) == "1m05s"
  assert metrics._format_duration(3725) == "1h02m05s"


def test_writer_without_tensorflow_logs_and_keeps_jsonl(tmp_path, monkeypatch):
  # A host without TensorFlow: importing clu's metric writers fails.
  import clu

  monkeypatch.delattr(clu, "metric_writers", raising=False)
  monkeypatch.setitem(sys.modules, "clu.metric_writers", None)
  with metrics.MetricWriter(tmp_path / "w", process_index=0) as writer:
    writer.write_scalars(3, {"loss": 1.5})
    writer.write_hparams({"a": {"b": 1}})
    writer.write_texts(3, {"sample": "x"})
  lines = (tmp_path / "w" / metrics.METRICS_JSONL).read_text().splitlines()
  assert [json.loads(x) for x in lines] == [{"step": 3, "loss": 1.5}]
  assert not list((tmp_path / "w").glob("events.out.tfevents*"))


def test_writer_without_tensorboard_never_opens_the_event_writer(
  tmp_path, monkeypatch
):
  def no_tensorboard(workdir):
    raise AssertionError("tensorboard=False must not open clu's writer")

  monkeypatch.setattr(metrics, "_default_writer", no_tensorboard)
  with metrics.MetricWriter(
    tmp_path / "w", process_index=0, tensorboard=False
  ) as writer:
    writer.write_scalars(1, {"loss": 2.0})
  lines = (tmp_path / "w" / metrics.METRICS_JSONL).read_text().splitlines()
  assert [json.loads(x) for x in lines] == [{"step": 1, "loss": 2.0}]
  assert not list((tmp_path / "w").glob("events.out.tfevents*"))
