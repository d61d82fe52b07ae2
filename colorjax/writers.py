"""Metric writers: TensorBoard event files, and always a `metrics.jsonl`.

The console gets the trainer's own readable lines (step, losses, img/s, ETA; each eval), so
clu's LoggingWriter, which would repeat every scalar in a second line, is left out. Without the
`tensorboard` package a run still trains, logging to the console and to `metrics.jsonl` (plus
PNG sample grids), with one line saying TensorBoard is off.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import socket
import time
from typing import Any, Mapping

import numpy as np
from PIL import Image

from colorjax.data import shards

try:  # the `tensorboard` extra; TensorFlow is not needed (`TensorBoardWriter`)
  from tensorboard.compat.proto import event_pb2, summary_pb2
  from tensorboard.plugins.hparams import summary_v2 as hparams_summary
  from tensorboard.plugins.image import metadata as image_metadata
  from tensorboard.plugins.scalar import metadata as scalar_metadata
  from tensorboard.summary.writer.record_writer import RecordWriter
  from tensorboard.util import tensor_util
  TENSORBOARD_MISSING: ImportError | None = None
except ImportError as e:
  TENSORBOARD_MISSING = e


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
  """Calls each writer in turn. Logs are not worth a run: a writer that fails to write (a full
  disk) is dropped with a warning, and training goes on to its checkpoint."""

  def __init__(self, writers: list[Any]):
    self._writers = writers

  def __getattr__(self, name: str):
    def call(*args, **kwargs):
      for w in list(self._writers):
        try:
          getattr(w, name)(*args, **kwargs)
        except OSError as e:  # the disk; anything else is a bug, raised
          logging.warning("%s failed (%s: %s): it writes nothing more in this run",
                          type(w).__name__, type(e).__name__, e)
          self._writers.remove(w)
    return call


def create_writer(workdir: str, is_main: bool, step: int = 0) -> MultiWriter:
  """TensorBoard event files + `workdir/metrics.jsonl` (main process only), for a run at `step`."""
  if not is_main:
    return MultiWriter([])
  jsonl = JsonlWriter(os.path.join(workdir, "metrics.jsonl"), step)
  if TENSORBOARD_MISSING:
    logging.warning("TensorBoard logging off (%s); metrics go to the console and metrics.jsonl",
                    TENSORBOARD_MISSING)
    return MultiWriter([jsonl])
  return MultiWriter([TensorBoardWriter(os.path.join(workdir, "tensorboard"), step), jsonl])


class TensorBoardWriter:
  """TensorBoard event files without TensorFlow: the records clu's `SummaryWriter` writes (TF2
  scalar, image and hparams summaries), framed by the `tensorboard` package's own writer.

  Written here because clu's writer runs on TensorFlow: ~5 s of import at each start of a run,
  and GPU images, which cannot install it, logged no TensorBoard at all. TensorBoard's
  `EventFileWriter` would import TensorFlow too, for its file system, wherever it is installed.
  A run writes a few hundred bytes per log line, so each write goes to the file at once, for a
  TensorBoard watching the run (TensorFlow's writer flushed every 2 minutes).
  """

  _opened = itertools.count()  # two writers of one process in one second get two files

  def __init__(self, logdir: str, step: int = 0):
    """A new event file in `logdir` for a run at checkpoint `step` (0: none). It begins with
    TensorBoard's restart marker, a SessionLog START at the step after `step`: the server then
    drops what earlier runs logged from there on (trained again here), as metrics.jsonl drops
    their rows. Its reader takes a folder's first START as the beginning, so a new run has one too.
    (TensorBoard's legacy `event_accumulator` drops nothing; the server's reader does.)"""
    os.makedirs(logdir, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}."
            f"{next(self._opened)}.v2")
    self._records = RecordWriter(open(os.path.join(logdir, name), "wb"))  # pylint: disable=consider-using-with
    self._write(file_version="brain.Event:2")
    self._write(step=step + 1 if step else 0,
                session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))

  def _write(self, **event: Any) -> None:
    self._records.write(event_pb2.Event(wall_time=time.time(), **event).SerializeToString())
    self._records.flush()

  def _write_tensors(self, step: int, plugin: Any, tensors: Mapping[str, np.ndarray]) -> None:
    """One event of `tensors` by tag, each shown by TensorBoard's `plugin` (its metadata module)."""
    self._write(step=int(step), summary=summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=tag, metadata=plugin.create_summary_metadata("", ""),
                                  tensor=tensor_util.make_tensor_proto(tensor))
        for tag, tensor in tensors.items()]))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._write_tensors(step, scalar_metadata, {tag: np.float32(value) for tag, value in scalars.items()})

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """uint8 images, [N, H, W, C] or one [H, W, C]."""
    self._write_tensors(step, image_metadata, {tag: _png_tensor(batch) for tag, batch in images.items()})

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """TensorBoard's HParams tab: the run's settings (bool, int, float or str values)."""
    self._write(step=0, summary=hparams_summary.hparams_pb(dict(hparams)))

  def flush(self) -> None:
    self._records.flush()

  def close(self) -> None:
    self._records.close()


def _png_tensor(batch: np.ndarray) -> np.ndarray:
  """`tf.summary.image`'s tensor: the width, the height, then each image as PNG."""
  batch = batch[None] if batch.ndim == 3 else batch
  pngs = []
  for image in batch:
    with io.BytesIO() as f:
      Image.fromarray(np.squeeze(image, -1) if image.shape[-1] == 1 else image).save(f, "PNG")
      pngs.append(f.getvalue())
  return np.array([str(batch.shape[2]).encode(), str(batch.shape[1]).encode(), *pngs], dtype=object)
