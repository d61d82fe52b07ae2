"""sRGB <-> CIE Lab (D65, 2° observer) for NumPy and JAX, and the model's normalisation.

One implementation serves both array libraries (pass ``xp=np`` or ``xp=jnp``), so the input
pipeline, the jitted train step and the colorize tool compute exactly the same colour maths.
Formulas and constants follow scikit-image's ``rgb2lab`` / ``lab2rgb`` (tested against it).

Model space: ``L`` in [0, 100] is mapped to [-1, 1] by ``L / 50 - 1``; ``a``, ``b`` are divided by
``AB_SCALE = 110`` so the sRGB gamut (|a|, |b| <= ~108) lies inside [-1, 1] and a tanh output can
reach every displayable colour.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import jax.numpy as jnp
import numpy as np

Array = Any  # np.ndarray or jax.Array

AB_SCALE = 110.0
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_XYZ_FROM_RGB = np.array(
    [[0.412453, 0.357580, 0.180423],
     [0.212671, 0.715160, 0.072169],
     [0.019334, 0.119193, 0.950227]])
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_EPS = (6 / 29) ** 3
_KAPPA = 3 * (6 / 29) ** 2


def _pow(x: Array, p: float, xp: ModuleType) -> Array:
  # Guarded so that the unused branch of a `where` never produces NaN (or NaN gradients).
  return xp.power(xp.maximum(x, 1e-12), p)


def rgb_to_lab(rgb: Array, xp: ModuleType = jnp) -> Array:
  """sRGB in [0, 1], shape [..., 3] -> Lab (L in [0, 100], a/b roughly in [-110, 110])."""
  rgb = xp.asarray(rgb)
  if not xp.issubdtype(rgb.dtype, xp.floating):
    raise TypeError(f"rgb_to_lab takes sRGB floats in [0, 1], got {rgb.dtype} "
                    "(uint8 photos: rgb_uint8_to_model, or divide by 255)")
  lin = xp.where(rgb > 0.04045, _pow((rgb + 0.055) / 1.055, 2.4, xp), rgb / 12.92)
  xyz = lin @ xp.asarray(_XYZ_FROM_RGB.T, dtype=lin.dtype) / xp.asarray(_WHITE_D65, lin.dtype)
  f = xp.where(xyz > _EPS, _pow(xyz, 1 / 3, xp), xyz / _KAPPA + 4 / 29)
  fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
  return xp.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def lab_to_rgb(lab: Array, xp: ModuleType = jnp) -> Array:
  """Lab -> sRGB in [0, 1] (out-of-gamut colours clipped, as scikit-image does)."""
  lab = xp.asarray(lab)
  if not xp.issubdtype(lab.dtype, xp.floating):
    lab = lab.astype(xp.float32)  # the white point and the matrix take lab's dtype
  fy = (lab[..., 0] + 16) / 116
  f = xp.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
  f = xp.concatenate([f[..., :2], xp.maximum(f[..., 2:], 0)], axis=-1)  # skimage clips z < 0
  xyz = xp.where(f > 6 / 29, f ** 3, _KAPPA * (f - 4 / 29)) * xp.asarray(_WHITE_D65, lab.dtype)
  lin = xyz @ xp.asarray(_RGB_FROM_XYZ.T, dtype=lab.dtype)
  rgb = xp.where(lin > 0.0031308, 1.055 * _pow(lin, 1 / 2.4, xp) - 0.055, 12.92 * lin)
  return xp.clip(rgb, 0.0, 1.0)


def normalize_lab(lab: Array, xp: ModuleType = jnp) -> tuple[Array, Array]:
  """Lab -> (L in [-1, 1] as [..., 1], ab in about [-1, 1] as [..., 2])."""
  return lab[..., :1] / 50.0 - 1.0, lab[..., 1:] / AB_SCALE


def denormalize_lab(l_norm: Array, ab_norm: Array, xp: ModuleType = jnp) -> Array:
  """Inverse of `normalize_lab`: model-space L and ab -> Lab [..., 3]."""
  return xp.concatenate([(l_norm + 1.0) * 50.0, ab_norm * AB_SCALE], axis=-1)


def rgb_uint8_to_model(rgb: Array, xp: ModuleType = jnp) -> tuple[Array, Array]:
  """uint8 RGB [..., 3] -> model-space (L [..., 1], ab [..., 2]) in float32."""
  lab = rgb_to_lab(xp.asarray(rgb, dtype=xp.float32) / 255.0, xp)
  return normalize_lab(lab, xp)


def model_to_rgb(l_norm: Array, ab_norm: Array, xp: ModuleType = jnp) -> Array:
  """Model-space L and ab -> sRGB in [0, 1]."""
  return lab_to_rgb(denormalize_lab(l_norm, ab_norm, xp), xp)


def to_uint8(rgb01: Array, xp: ModuleType = jnp) -> Array:
  """[0, 1] floats -> uint8 with rounding (the seeds' PSNR/SSIM are on uint8 RGB)."""
  return xp.round(xp.clip(rgb01, 0.0, 1.0) * 255.0).astype(xp.uint8)
