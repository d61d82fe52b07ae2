"""Losses (pure functions of arrays; means over every element unless said otherwise)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def l1(pred: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(pred - target))


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(pred - target))


def smooth_l1(pred: jax.Array, target: jax.Array, beta: float = 1.0) -> jax.Array:
  """PyTorch's SmoothL1Loss (Huber scaled by 1/beta)."""
  return jnp.mean(optax.huber_loss(pred, target, delta=beta) / beta)


RECONSTRUCTION = {"l1": l1, "mse": mse, "smooth_l1": smooth_l1}


def bce_with_logits(logits: jax.Array, target_is_real: bool) -> jax.Array:
  """PyTorch's BCEWithLogitsLoss against an all-real or all-fake target."""
  labels = jnp.full_like(logits, 1.0 if target_is_real else 0.0)
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """pix2pix's D objective: the mean of the real and the fake BCE terms."""
  return 0.5 * (bce_with_logits(real_logits, True) + bce_with_logits(fake_logits, False))


def reconstruction(name: str):
  if name not in RECONSTRUCTION:
    raise ValueError(f"loss.reconstruction must be one of {sorted(RECONSTRUCTION)}, got {name!r}")
  return RECONSTRUCTION[name]
