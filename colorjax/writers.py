"""Metric writers: clu's TensorBoard writer, and always a `metrics.jsonl`.

The console gets the trainer's own readable lines (step, losses, img/s, ETA; each eval), so
clu's LoggingWriter, which would repeat every scalar in a second line, is left out.
clu.metric_writers imports TensorFlow; GPU images without TF still train, logging to the
console and to `metrics.jsonl` (plus PNG sample grids), with one line saying TensorBoard is off.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Mapping

import numpy as np

from colorjax.data import shards


def _row_step(line: str) -> float:
  try:
    return json.loads(line)["step"]
  except (json.JSONDecodeError, KeyError, TypeError):
    return float("inf")


class JsonlWriter:
  """Appends one JSON object per `write_scalars` call: machine-readable, survives resumes."""

  def __init__(self, path: str, step: int = 0):
    """A run at checkpoint `step` (0: none yet) trains the steps after it again: their rows,
    written before it was stopped (and a last line cut short by a kill), go, so a plot of the
    file has one value per step."""
    self._path = path
    if os.path.exists(path):
      with open(path) as f:
        kept = [line for line in f if _row_step(line) <= step]
      with shards.local_path_for(path) as tmp, open(tmp, "w") as f:
        f.writelines(kept)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """One row: the step, when it was written (`time`, Unix seconds, as TensorBoard's wall_time),
    and the scalars."""
    row = {"step": int(step), "time": round(time.time(), 3), **{k: float(v) for k, v in scalars.items()}}
    with open(self._path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    del step, images  # PNGs are written by the trainer.

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    del hparams

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


class MultiWriter:
  """Calls each writer in turn. Logs are not worth a run: a writer that fails (a full disk,
  TensorBoard's own errors) is dropped with a warning, and training goes on to its checkpoint."""

  def __init__(self, writers: list[Any]):
    self._writers = writers

  def __getattr__(self, name: str):
    def call(*args, **kwargs):
      for w in list(self._writers):
        try:
          getattr(w, name)(*args, **kwargs)
        except Exception as e:
          if not (isinstance(e, OSError) or type(e).__module__.startswith("tensorflow")):
            raise  # a bug, not the disk: TensorFlow raises its own error types for I/O
          logging.warning("%s failed (%s: %s): it writes nothing more in this run",
                          type(w).__name__, type(e).__name__, e)
          self._writers.remove(w)
    return call


def create_writer(workdir: str, is_main: bool, step: int = 0) -> MultiWriter:
  """TensorBoard event files + `workdir/metrics.jsonl` (main process only), for a run at `step`."""
  if not is_main:
    return MultiWriter([])
  jsonl = JsonlWriter(os.path.join(workdir, "metrics.jsonl"), step)
  # TensorFlow only writes event files here: its import-time notice, printed to the console
  # twice ("oneDNN custom operations are on ..."), concerns TF's own ops, which never run.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    logging.warning("TensorBoard logging off (%s); metrics go to the console and metrics.jsonl", e)
    return MultiWriter([jsonl])
  summary = metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard"))
  _mark_start(summary, step)
  return MultiWriter([metric_writers.AsyncWriter(summary), jsonl])


def _mark_start(summary: Any, step: int) -> None:
  """Begins the run's event file with TensorBoard's restart marker, a SessionLog START event at
  the step after checkpoint `step` (0 when there is none): TensorBoard then drops the values
  earlier runs logged from that step on (trained again here), as metrics.jsonl drops their rows.
  Its reader takes the first START of a folder as the beginning, so a new run writes one too.
  TensorBoard's legacy `event_accumulator.EventAccumulator` drops no TF2 scalars (tensors) at
  all; the server (`plugin_event_accumulator`) does. TF2's summary API has no public call for
  the marker (import_event and clu's writer are internals): without them the replayed values
  show twice, as before."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
    from tensorflow.python.ops import summary_ops_v2  # pylint: disable=g-import-not-at-top
    event = event_pb2.Event(wall_time=time.time(), step=step + 1 if step else 0,
                            session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
    with summary._summary_writer.as_default():  # pylint: disable=protected-access
      summary_ops_v2.import_event(tf.constant(event.SerializeToString()))
  except (ImportError, AttributeError) as e:
    logging.info("TensorBoard restart marker not written (%s): values logged again after a resume "
                 "show twice there", e)
