"""grain pipelines: photo files -> batches of uint8 RGB crops [B, S, S, 3].

Records stay uint8 RGB until they reach the device, where the jitted step converts them to
Lab (`colorjax.color`): 4x less to copy than float Lab, and the maths runs on the
accelerator. A photo that fails to decode here (changed since the scan) is dropped with a
warning and the batch is filled from the next ones.
"""

from __future__ import annotations

import functools
import logging

import grain
import jax
import numpy as np

from colorjax.data.images import BadImageError, center_crop, open_image, resize_short_side


def load_train_crop(path: str, rng: np.random.Generator, image_size: int) -> np.ndarray | None:
  try:
    rgb, _ = open_image(path, draft_size=image_size)
  except BadImageError as e:
    logging.warning("skipping %s", e)
    return None
  rgb = resize_short_side(rgb, image_size)
  h, w = rgb.shape[:2]
  top, left = rng.integers(0, h - image_size + 1), rng.integers(0, w - image_size + 1)
  crop = rgb[top:top + image_size, left:left + image_size]
  return crop[:, ::-1] if rng.random() < 0.5 else crop


def load_eval_crop(path: str, image_size: int) -> np.ndarray:
  rgb, _ = open_image(path, draft_size=image_size)
  return center_crop(resize_short_side(rgb, image_size), image_size)


def train_dataset(files: list[str], image_size: int, local_batch_size: int, seed: int,
                  num_workers: int = 0, shard_index: int | None = None,
                  shard_count: int | None = None) -> grain.IterDataset:
  """Endless, reshuffled every epoch, this process's disjoint share of `files`.

  Its iterator's position is checkpointed with the model (`grain.checkpoint`).
  """
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  ds = grain.MapDataset.source(files)[shard_index::shard_count]
  ds = ds.seed(seed).shuffle().repeat()
  ds = ds.random_map(functools.partial(load_train_crop, image_size=image_size))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, num_workers) * 2, prefetch_buffer_size=64))
  ds = ds.batch(local_batch_size, drop_remainder=True)
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return ds


def eval_images(files: list[str], image_size: int, max_images: int) -> np.ndarray:
  """The first `max_images` eval photos as center crops, uint8 [N, S, S, 3]."""
  crops = []
  for path in files:
    if len(crops) == max_images:
      break
    try:
      crops.append(load_eval_crop(path, image_size))
    except BadImageError as e:
      logging.warning("skipping %s", e)
  return np.stack(crops)
