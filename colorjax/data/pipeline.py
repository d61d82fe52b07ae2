"""grain pipelines: records of any source -> batches of uint8 RGB crops [B, S, S, 3].

A record is what `sources.resolve` lists: a photo file's path (`folder:`), a shard record
(`shards:`, bytes) or a TFDS example (`tfds:`, a dict); `load_rgb` turns each into uint8 RGB
and one crop/flip transform serves them all.

Records stay uint8 RGB until they reach the device, where the jitted step converts them to
Lab (`colorjax.color`): 4x less to copy than float Lab, and the maths runs on the
accelerator. A photo that fails to decode here (changed since the scan) is dropped with a
warning, a gray TFDS example quietly, and the batch is filled from the next ones.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Sequence

from absl import flags
import grain
import jax
import numpy as np

from colorjax.data import shards
from colorjax.data.images import (BadImageError, GrayscaleError, Unreadable, center_crop, is_grayscale,
                                  open_image, resize_short_side, within_aspect)

Record = str | bytes | dict | Unreadable  # a file path, a shard record, a TFDS example, or a failed read


def load_rgb(record: Record, draft_size: int) -> np.ndarray:
  """Any source's record -> uint8 RGB [H, W, 3]; BadImageError if it can't be used.

  `draft_size` lets a JPEG decode at a reduced scale that keeps its short side >= draft_size.
  Folders and shards were scanned for gray photos up front; a TFDS example is checked here and
  raises GrayscaleError (about 1% of COCO), so no source trains or scores on a gray photo.
  """
  if isinstance(record, str):
    return open_image(record, draft_size=draft_size)[0]
  if isinstance(record, bytes):
    return shards.decode_record(record, draft_size)
  if isinstance(record, Unreadable):
    raise record.error()
  image = np.asarray(record["image"])
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise BadImageError(f"TFDS example: image {image.dtype} {image.shape}, expected uint8 [H, W, 3]")
  if is_grayscale(image):
    raise GrayscaleError("TFDS example: a grayscale photo")
  return image


def load_train_crop(record: Record, rng: np.random.Generator, image_size: int,
                    max_zoom: float = 1.0) -> np.ndarray | None:
  """A random `image_size` crop of the photo resized to a short side of image_size * U(1, max_zoom).

  max_zoom > 1 shows the network details as well as whole scenes: on a few dozen photos it is
  the difference between memorising them and learning colours that carry over.
  """
  short = int(image_size * rng.uniform(1.0, max_zoom))
  try:
    rgb = load_rgb(record, draft_size=short)
  except GrayscaleError:
    return None
  except BadImageError as e:
    logging.warning("skipping %s", e)
    return None
  # Upscaled when the photo is smaller, as RandomResizedCrop does: shards and most of the
  # shared photos have a 256 px short side, and capping there made max_zoom a no-op at 256 px.
  rgb = resize_short_side(within_aspect(rgb, rng), short)
  h, w = rgb.shape[:2]
  top, left = rng.integers(0, h - image_size + 1), rng.integers(0, w - image_size + 1)
  crop = rgb[top:top + image_size, left:left + image_size]
  return crop[:, ::-1] if rng.random() < 0.5 else crop


def load_eval_crop(record: Record, image_size: int, draft: bool = True) -> np.ndarray:
  """The held-out crop every score is taken on: short side `image_size`, centre square.

  A large JPEG is decoded at a reduced scale (its draft) and resized with PIL's reducing_gap,
  not decoded whole and resized bicubic: a 2048x1536 photo's crop differs by up to 11 levels
  (47 dB) between the two, for a decode 7x faster (12 ms vs 83). Where a photo is scored
  against another file of it (`evaluate --predictions`: a PNG, or a JPEG of another size), both
  must be decoded alike: `draft=False` decodes whole.
  """
  rgb = load_rgb(record, draft_size=image_size if draft else None)
  return center_crop(resize_short_side(within_aspect(rgb), image_size), image_size)


UNREADABLE_RAISE_RATIO = 0.5  # of each 1000 photos drawn


def _exit_with_parent(parent: int, worker_index: int, worker_count: int) -> None:
  """In each grain worker: exit once the trainer (pid `parent`, passed in, since it may be gone
  before the worker starts) is. A trainer killed by SIGKILL or the OOM killer cannot stop its
  workers, and they would hold their memory until rebooted."""
  del worker_index, worker_count

  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(0)

  threading.Thread(target=watch, daemon=True, name="exit_with_parent").start()


def train_dataset(files: Sequence[Record], image_size: int, local_batch_size: int, seed: int,
                  num_workers: int = 0, shard_index: int | None = None,
                  shard_count: int | None = None, max_zoom: float = 1.0) -> grain.IterDataset:
  """Endless, reshuffled every epoch, this process's disjoint share of the records `files`.

  Its iterator's position is checkpointed with the model (`grain.checkpoint`).
  """
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  ds = grain.MapDataset.source(files)[shard_index::shard_count]
  # Each process its own random numbers (grain draws them by seed and index within the share):
  # with one seed, sample k of every process would get the same zoom, crop and flip.
  ds = ds.seed(seed + shard_index).shuffle().repeat()
  ds = ds.random_map(functools.partial(load_train_crop, image_size=image_size, max_zoom=max_zoom))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, num_workers) * 2, prefetch_buffer_size=64))
  # Photos that vanish or break after the scan are skipped one by one, but if most do (an
  # unmounted drive), grain raises instead of looking for a readable one forever.
  ds = grain.experimental.WithOptionsIterDataset(
      ds, grain.experimental.DatasetOptions(filter_raise_threshold_ratio=UNREADABLE_RAISE_RATIO))
  ds = ds.batch(local_batch_size, drop_remainder=True)
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a notebook has no command line
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers),
                        worker_init_fn=functools.partial(_exit_with_parent, os.getpid()))
  return ds


def eval_images(files: Sequence[Record], image_size: int, max_images: int) -> np.ndarray:
  """`max_images` of `files` as center crops in the files' order, uint8 [N, S, S, 3].

  Drawn in a fixed random order (the same on every process and every run), not the first ones:
  comma-joined sources are concatenated, and the first source alone is not the held-out set.
  """
  crops: dict[int, np.ndarray] = {}
  for i in np.random.default_rng(0).permutation(len(files)):
    if len(crops) == max_images:
      break
    try:
      crops[i] = load_eval_crop(files[i], image_size)
    except GrayscaleError:
      continue
    except BadImageError as e:
      logging.warning("skipping %s", e)
  return np.stack([crops[i] for i in sorted(crops)])
