"""Losses (pure functions of arrays).

Reconstruction losses take optional per-pixel weights [B, H, W] (the colour-weighted loss of
seed 001); without them they are plain means over every element, as PyTorch's defaults.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from colorjax import color


def _mean(x: jax.Array, weights: jax.Array | None) -> jax.Array:
  return jnp.mean(x if weights is None else x * weights[..., None])


def l1(pred: jax.Array, target: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  return _mean(jnp.abs(pred - target), weights)


def mse(pred: jax.Array, target: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  return _mean(jnp.square(pred - target), weights)


def smooth_l1(pred: jax.Array, target: jax.Array, weights: jax.Array | None = None,
              beta: float = 1.0) -> jax.Array:
  """PyTorch's SmoothL1Loss (Huber scaled by 1/beta)."""
  return _mean(optax.huber_loss(pred, target, delta=beta) / beta, weights)


RECONSTRUCTION = {"l1": l1, "mse": mse, "smooth_l1": smooth_l1}


def reconstruction(name: str, smooth_l1_beta: float = 1.0) -> Callable[..., jax.Array]:
  """The loss `name` on ab in model units (Lab / AB_SCALE).

  `smooth_l1_beta` is in Lab units: PyTorch's default beta of 1 on raw ab. Applied as 1 in
  model units it would be 110 Lab units, beyond every error, and the loss would be MSE / 2.
  """
  if name not in RECONSTRUCTION:
    raise ValueError(f"loss.reconstruction must be one of {sorted(RECONSTRUCTION)}, got {name!r}")
  if name == "smooth_l1":
    return functools.partial(smooth_l1, beta=smooth_l1_beta / color.AB_SCALE)
  return RECONSTRUCTION[name]


def total_variation(x: jax.Array) -> jax.Array:
  """Anisotropic TV of [B, H, W, C]: mean absolute difference of vertical and horizontal neighbours."""
  return jnp.mean(jnp.abs(x[:, 1:] - x[:, :-1])) + jnp.mean(jnp.abs(x[:, :, 1:] - x[:, :, :-1]))


def class_cross_entropy(logits: jax.Array, classes: jax.Array,
                        class_weights: jax.Array | None = None) -> jax.Array:
  """Per-pixel softmax cross-entropy, each pixel weighted by its true class's weight (seed 003)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), classes)
  return jnp.mean(ce if class_weights is None else ce * class_weights[classes])


def bce_with_logits(logits: jax.Array, target_is_real: bool) -> jax.Array:
  """PyTorch's BCEWithLogitsLoss against an all-real or all-fake target."""
  labels = jnp.full_like(logits, 1.0 if target_is_real else 0.0)
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """pix2pix's D objective: the mean of the real and the fake BCE terms."""
  return 0.5 * (bce_with_logits(real_logits, True) + bce_with_logits(fake_logits, False))
