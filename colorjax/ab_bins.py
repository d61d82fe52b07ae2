"""The 16 x 16 grid of ab colour classes (seed 003) and the colour statistics of a training set.

Classes tile normalised ab in [-1, 1]^2 (= [-110, 110] in Lab units) with 16 bins per axis;
class = 16 * bin(a) + bin(b). Seed 003 binned OpenCV's 8-bit a, b (0..255, i.e. +-128 Lab units)
in steps of 16; these bins are 13.75 units wide, over the range the models predict. The same histogram serves the classifier's rebalanced
cross-entropy (seed 003) and the colour-weighted regression loss (seed 001).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

BINS = 16
NUM_CLASSES = BINS * BINS
DECODES = ("annealed_mean", "argmax")  # model.decode


def ab_to_class(ab: jax.Array, xp=jnp) -> jax.Array:
  """Normalised ab [..., 2] -> class index [...] in [0, 256)."""
  idx = xp.clip(xp.floor((ab + 1.0) * (BINS / 2.0)), 0, BINS - 1).astype(xp.int32)
  return idx[..., 0] * BINS + idx[..., 1]


def class_centers() -> np.ndarray:
  """[256, 2] normalised ab at each class's bin centre."""
  c = -1.0 + (np.arange(BINS) + 0.5) * (2.0 / BINS)
  return np.stack(np.meshgrid(c, c, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.float32)


def decode(logits: jax.Array, method: str = "annealed_mean", temperature: float = 0.38) -> jax.Array:
  """Class logits [..., 256] -> ab [..., 2].

  "argmax" takes the most likely bin (seed 003); "annealed_mean" is Zhang et al.'s
  softmax(logits / T) expectation, between the mode (T -> 0) and the mean (T = 1).
  With 16 bins ab = 0 lies on a bin corner, as on the paper's grid: argmax cannot give a
  neutral grey (the nearest centres have a chroma of 9.7 Lab units); the mean can.
  """
  centers = jnp.asarray(class_centers())
  if method == "argmax":
    return centers[jnp.argmax(logits, axis=-1)]
  if method == "annealed_mean":
    return jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1) @ centers
  raise ValueError(f"model.decode must be one of {', '.join(DECODES)}, got {method!r}")


def histogram(ab_batches) -> np.ndarray:
  """Pixel counts per class [256] over an iterable of normalised ab arrays [..., 2]."""
  counts = np.zeros(NUM_CLASSES, np.int64)
  for ab in ab_batches:
    counts += np.bincount(np.asarray(ab_to_class(np.asarray(ab), np)).ravel(), minlength=NUM_CLASSES)
  return counts


# Seed 003's +1e5 pixels, as a share of the pixels it counted (its 10k photos at 256 px).
SEED_OFFSET_SHARE = 1e5 / (10_000 * 256 ** 2)


def rebalance_weights(counts: np.ndarray, offset_share: float = SEED_OFFSET_SHARE) -> np.ndarray:
  """Seed 003's class weights w_c = 1 / sqrt(n_c + 1e5), scaled so a pixel's mean weight is 1.

  Written with class shares, 1 / sqrt(n_c / N + offset_share), so the weights do not depend on
  how many pixels N were counted: with the paper's absolute +1e5, counting 1000 crops of 64 px
  (4 M pixels, not its 655 M) flattens the rebalancing 12-fold.
  """
  w = 1.0 / np.sqrt(counts.astype(np.float64) / counts.sum() + offset_share)
  return (w / (counts @ w / counts.sum())).astype(np.float32)


def inverse_frequency_weights(counts: np.ndarray, mix: float = 0.5) -> np.ndarray:
  """Seed 001's colour weights: inverse of the class frequency smoothed with a uniform
  distribution (Zhang et al.'s rule, mix 0.5) so empty bins do not explode; mean weight 1."""
  p = counts / counts.sum()
  w = 1.0 / ((1 - mix) * p + mix / NUM_CLASSES)
  return (w / (p @ w)).astype(np.float32)
